"""A partner's webhook endpoint on 127.0.0.1 that verifies mobilise's signature and keeps what it got.

It runs in a thread with its own event loop, so that worker subprocesses and the connector
runtime (in the test's own loop) can both reach it. :attr:`WebhookReceiver.answers` scripts
the next answers (status codes, taken in order; 200 when it runs out).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

from connectors.signing import verify

from .loopback import LoopbackServer

__all__ = ["Received", "WebhookReceiver"]


@dataclass(frozen=True)
class Received:
    """One request that passed the signature check, and what it was answered."""

    record_id: str
    record_type: str
    body: dict[str, Any]
    status: int


@dataclass
class WebhookReceiver(LoopbackServer):
    """Answers ``POST /hook``; 401 for a request whose signature does not verify."""

    secret: str
    script: dict[str, list[int]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    unsigned: int = 0
    url: str = ""
    name = "webhook receiver"

    def accepted(self) -> list[Received]:
        """The requests answered 2xx."""
        return [r for r in self.received if r.status < 300]

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(self.secret.encode(), body, dict(request.headers), now=time.time())
        except Exception:
            self.unsigned += 1
            return web.Response(status=401)
        record = json.loads(body)
        planned = self.script.get(str(record.get("case_id")), [])
        status = planned.pop(0) if planned else 200
        self.received.append(
            Received(
                record_id=request.headers["X-Mobilise-Record-Id"],
                record_type=request.headers["X-Mobilise-Record-Type"],
                body=record,
                status=status,
            )
        )
        return web.Response(status=status, text="refused: not a case we follow" if status == 400 else "ok")

    def application(self) -> web.Application:
        """``POST /hook``."""
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        return app

    async def start(self) -> Self:
        """Listen on a free loopback port; :attr:`url` is then the hook's URL."""
        await super().start()
        self.url += "/hook"
        return self
