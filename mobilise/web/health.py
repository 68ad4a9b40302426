"""``GET /healthz`` (the process is up, and what it can do) and ``GET /readyz`` (it can serve now)."""

from __future__ import annotations

from aiohttp import web

from streams.health import broker_reachable

from .state import STATE

__all__ = ["add_routes"]


async def _healthz(request: web.Request) -> web.Response:
    """Always 200 while the process serves; the body says which parts are ready."""
    state = request.app[STATE]
    settings = state.settings
    return web.json_response(
        {
            "status": "ok",
            "kafka": "connected" if state.publisher.connected else "not connected",
            "sendgrid_webhook": settings.sendgrid_webhook_public_key is not None,
            "unsubscribe_links": settings.secret_key is not None,
        }
    )


async def _readyz(request: web.Request) -> web.Response:
    """200 when a Kafka broker is reachable, else 503 with the reason: take it out of rotation.

    Pages that write to Kafka answer 503 themselves while it is away; this tells a load
    balancer or orchestrator before anyone tries.
    """
    settings = request.app[STATE].settings
    problems = []
    if not await broker_reachable(settings.bootstrap_servers):
        problems.append("no Kafka broker reachable at KAFKA_BOOTSTRAP_SERVERS")
    return web.json_response({"ready": not problems, "problems": problems}, status=503 if problems else 200)


def add_routes(app: web.Application) -> None:
    """Add ``GET /healthz`` and ``GET /readyz`` to ``app``."""
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
