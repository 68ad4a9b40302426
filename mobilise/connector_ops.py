"""What ``mobilise connectors list|check|run|reset`` do, apart from the command line itself."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors.base import Sink, SinkConfig, describe_config
from connectors.declarations import LoadedConnector, load_connectors
from connectors.metrics import ConnectorMetrics
from connectors.records import SINK_TOPICS
from connectors.registry import available_connectors, load_connector
from connectors.runtime import ConnectorRuntime, ConnectorStatus
from connectors.source import Source
from streams.topics import TopicNames

from .errors import ConfigurationError, MobiliseError
from .kafka_security import kafka_security
from .settings import Settings

__all__ = ["describe_installed", "reset_checkpoint", "run_connectors", "runtime_for"]

log = structlog.get_logger(__name__)


def describe_installed() -> list[str]:
    """Lines describing every installed connector type and its settings."""
    lines: list[str] = []
    for name, target in sorted(available_connectors().items()):
        try:
            cls = load_connector(name)
        except ConfigurationError as exc:
            lines += [f"{name}  ({target})", f"    unavailable: {exc}", ""]
            continue
        if issubclass(cls, Source):
            role = f"source → {' | '.join(cls.produces)}"
        elif issubclass(cls, Sink):
            topics = [k for k, kind in SINK_TOPICS.items() if issubclass(kind.model, cls.accepts)]
            role = f"sink ← {' | '.join(topics)}"
        else:
            role = "connector"
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines.append(f"{name}  {role}  ({target})")
        if summary:
            lines.append(f"    {summary}")
        if issubclass(cls.Config, SinkConfig):
            lines.append(
                "    settings from MOBILISE_<SETTING> environment variables (the pipeline's MOBILISE_SINK)"
            )
        for row in describe_config(cls.Config):
            need = "required" if row["required"] else f"default {row['default']!r}"
            description = f"  {row['description'].splitlines()[0]}" if row["description"] else ""
            lines.append(f"    {row['name']}: {row['type']}, {need}{description}")
        lines.append("")
    return lines


def runtime_for(
    settings: Settings, connectors: list[LoadedConnector], metrics: ConnectorMetrics | None = None
) -> ConnectorRuntime:
    """The runtime of ``connectors`` on the deployment of ``settings``."""
    return ConnectorRuntime(
        connectors,
        bootstrap=settings.bootstrap_servers,
        names=TopicNames(prefix=settings.topic_prefix),
        metrics=metrics,
        client_options=kafka_security().client_options(),
    )


async def _serve_metrics(metrics: ConnectorMetrics, port: int) -> web.AppRunner:
    async def show(_request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def alive(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", show)
    app.router.add_get("/health", alive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def run_connectors(
    settings: Settings, path: Path, *, metrics_port: int | None = None
) -> dict[str, ConnectorStatus]:
    """Run the connectors of ``path`` until SIGINT/SIGTERM, or until all of them have ended.

    Raises:
        ConnectorsFileError: the file is wrong (nothing runs then).

    """
    connectors = load_connectors(path)
    metrics = ConnectorMetrics()
    runtime = runtime_for(settings, connectors, metrics)

    async def main() -> dict[str, ConnectorStatus]:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stopping.set)
        runner = await _serve_metrics(metrics, metrics_port) if metrics_port is not None else None
        try:
            return await runtime.run(stopping)
        finally:
            if runner is not None:
                await runner.cleanup()

    return asyncio.run(main())


def reset_checkpoint(settings: Settings, name: str) -> None:
    """Forget where source ``name`` is up to: its next run starts from the beginning."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from connectors.checkpoints import CheckpointStore

    names = TopicNames(prefix=settings.topic_prefix)
    options: dict[str, Any] = kafka_security().client_options()

    async def main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", **options)
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise MobiliseError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from exc
        try:
            store = CheckpointStore(settings.bootstrap_servers, names.connector_checkpoints, options)
            await store.write(producer, name, None)
        finally:
            await producer.stop()

    asyncio.run(main())
