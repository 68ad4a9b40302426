"""Serving the web app: in the foreground (``mobilise web``) or on a thread (``mobilise dev``, tests)."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

import structlog
from aiohttp import web

from mobilise.errors import FatalError
from mobilise.settings import Settings

from .app import create_app

__all__ = ["BackgroundWebServer", "run_web"]

log = structlog.get_logger(__name__)


def run_web(settings: Settings, *, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM.

    No access log: the unsubscribe URLs carry tokens that act for a person, and an access
    log would keep them. Requests are logged by the routes, with subscriber ids.
    """
    app = create_app(settings)

    async def ready(_app: web.Application) -> None:
        log.info("web.ready", url=f"http://{host}:{port}", app_id=settings.app_id)

    app.on_startup.append(ready)
    web.run_app(app, host=host, port=port, print=None, access_log=None, handle_signals=True)


class BackgroundWebServer:
    """The web app on its own event loop in a daemon thread; :attr:`url` once started.

    Args:
        settings: The settings of the app.
        host: Interface to listen on.
        port: Port; 0 for any free one.

    """

    def __init__(self, settings: Settings, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._settings = settings
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.port = port

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self._host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundWebServer:
        """Start serving and wait until the socket listens.

        Raises:
            FatalError: the server did not start (the cause is chained).

        """
        self._thread = threading.Thread(target=self._serve, name="mobilise-web", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise FatalError(f"the web server did not start within {timeout}s")
        if self._error is not None:
            raise FatalError(f"the web server could not start: {self._error}") from self._error
        log.info("web.ready", url=self.url, app_id=self._settings.app_id)
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.close()

    async def _open(self) -> None:
        runner = web.AppRunner(create_app(self._settings), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving and close the app (and its Kafka producer)."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> BackgroundWebServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
