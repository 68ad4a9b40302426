"""``GET /healthz``: the process is up, and what it can do."""

from __future__ import annotations

from aiohttp import web

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


def add_routes(app: web.Application) -> None:
    """Add ``GET /healthz`` to ``app``."""
    app.router.add_get("/healthz", _healthz)
