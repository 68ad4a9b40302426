"""The start-up every fake HTTP server shares: a free port of 127.0.0.1, in this loop or a thread.

A fake subclasses :class:`LoopbackServer` and says what it answers (:meth:`application`).
Tests in the same loop use ``async with``; when worker subprocesses or a loop of another
thread must reach it too, :meth:`in_thread` serves it from a thread with a loop of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

from aiohttp import web

__all__ = ["LoopbackServer"]


class LoopbackServer:
    """An aiohttp application on a free loopback port; :attr:`url` is its base once started."""

    name = "fake server"
    """Named in the error of a server that did not start, and on its thread."""
    url: str = ""
    _runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        """The routes and middlewares of the fake."""
        raise NotImplementedError

    async def start(self) -> Self:
        """Listen on a free port of 127.0.0.1 in the running loop."""
        self._runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextmanager
    def in_thread(self, timeout: float = 30.0) -> Iterator[Self]:
        """Serve from a thread with its own event loop until the block ends."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        thread = threading.Thread(target=serve, name=self.name, daemon=True)
        thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"the {self.name} did not start")
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
