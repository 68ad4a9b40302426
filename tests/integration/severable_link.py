"""A TCP link between clients and a broker that a test can cut and restore: a real network fault.

The embedded broker keeps its data in memory, so stopping it would lose every topic. To take
the broker away and bring it back with its data, the broker advertises this link's address
and clients reach it only through here; :meth:`SeverableLink.cut` closes every connection and
refuses new ones (as an unreachable host does), :meth:`SeverableLink.restore` accepts again,
and :meth:`SeverableLink.silence` carries nothing more while connections stay open.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

__all__ = ["SeverableLink"]


class SeverableLink:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``upstream_port`` until cut."""

    def __init__(self, port: int, upstream_port: int) -> None:
        self.port = port
        self._upstream_port = upstream_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="severable-link", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._silent = False

    def __enter__(self) -> SeverableLink:
        self._thread.start()
        self.restore()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def restore(self) -> None:
        """Accept connections again, and carry what new ones say."""
        self._silent = False
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)

    def silence(self) -> None:
        """Keep every connection open and accept new ones, but carry nothing: a hung broker host."""
        self._silent = True

    def cut(self) -> None:
        """Close every open connection and stop listening: clients get resets, then refusals."""
        asyncio.run_coroutine_threadsafe(self._sever(), self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )

    async def _sever(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, broker_writer}
        await asyncio.gather(
            self._pipe(client_reader, broker_writer), self._pipe(broker_reader, client_writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self._silent:
                    continue  # swallowed: neither side hears from the other
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()
