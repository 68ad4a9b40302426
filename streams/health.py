"""The worker's own HTTP endpoints: /health, /ready and /metrics, for orchestrators.

Served by aiohttp inside the worker's event loop (Faust's own web server stays off: the
pipeline needs no table views, and this keeps the endpoints independent of it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import PipelineMetrics

__all__ = ["Readiness", "broker_reachable", "health_app"]

log = structlog.get_logger(__name__)

_BROKER_CHECK_SECONDS = 2.0


@dataclass
class Readiness:
    """What /ready reports; the app's rebalance hooks keep it current."""

    shards_loaded: bool = False
    """Set once the subscriber shards of the current assignment are built."""
    partitions: frozenset[int] = field(default_factory=frozenset)
    """Partitions of the subscriptions topic this worker owns."""


async def broker_reachable(servers: Sequence[str], timeout: float = _BROKER_CHECK_SECONDS) -> bool:
    """True when a TCP connection to one of the bootstrap ``host:port`` servers opens in time."""
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]"), int(port)), timeout
            )
        except (OSError, TimeoutError, ValueError):
            continue
        writer.close()
        return True
    return False


def health_app(
    *,
    metrics: PipelineMetrics,
    readiness: Readiness,
    bootstrap_servers: Sequence[str],
    refresh_lag: Callable[[], Awaitable[None]],
) -> web.Application:
    """The aiohttp application of the worker's endpoints.

    * ``GET /health``: 200 while the worker's event loop answers (liveness).
    * ``GET /ready``: 200 when a broker is reachable, partitions are assigned and the
      subscriber shards are rebuilt; else 503 with the reasons (readiness).
    * ``GET /metrics``: Prometheus text format; consumer lag is refreshed on each scrape.
    """

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def ready(_request: web.Request) -> web.Response:
        problems = []
        if not await broker_reachable(bootstrap_servers):
            problems.append("no Kafka broker reachable at KAFKA_BOOTSTRAP_SERVERS")
        if not readiness.partitions:
            problems.append("no partitions assigned yet")
        if not readiness.shards_loaded:
            problems.append("subscriber shards not rebuilt yet (rebalance or recovery in progress)")
        body = {
            "ready": not problems,
            "problems": problems,
            "partitions": sorted(readiness.partitions),
        }
        return web.json_response(body, status=200 if not problems else 503)

    async def scrape(_request: web.Request) -> web.Response:
        try:
            await refresh_lag()
        except Exception as exc:  # the other metrics are still worth serving
            log.warning("metrics.lag_unavailable", error=repr(exc))
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", scrape)
    return app
