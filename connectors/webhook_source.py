"""WebhookSource: an HTTP endpoint where a case-management system pushes case updates.

The system POSTs one case update (a JSON object, as ``schemas.CaseUpdate`` spells it) or a
JSON array of up to 1,000 of them, signed as :mod:`connectors.signing` describes. Answers,
each a JSON object (and an ``X-Request-Id`` header naming the request in our logs):

- 202 ``{"accepted": [event_id, …]}``: every update is on the ``case-updates`` topic.
- 422 ``{"rejected": [{"item": i, "reason": …, "errors": [{"loc", "msg", "type"}, …]}, …],
  "accepted": [event_id, …]}``: the listed items (0-based positions in the array; 0 for a
  single object) are invalid and were dead-lettered; **the valid items of the same request
  were emitted and are on the topic** (their event ids under ``accepted``). Fix the
  rejected ones and send them again; re-sending the accepted ones too is harmless.
- 401 ``{"error": …}``: signature missing, malformed, stale (older than ``tolerance``) or
  wrong; the message says which. 413: body over ``max_body_bytes``, or more than 1,000
  updates. 415: the content type is not JSON. 400: the body is not valid JSON, or not an
  object or a non-empty array. 405 (with ``Allow: POST``) for any method but POST.
- 503 with ``Retry-After: 5``: the broker cannot be reached; nothing of the request was
  accepted; send it again later.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import structlog
from aiohttp import web
from pydantic import ConfigDict, Field, SecretStr, field_validator

from mobilise.errors import ConfigurationError, RetryableError
from schemas import CaseUpdate

from .base import ConnectorConfig
from .signing import DEFAULT_TOLERANCE, SignatureError, check_secret, verify
from .source import EmitReport, Source, SourceContext, SourceRecord

__all__ = ["MAX_ITEMS", "WebhookSource", "WebhookSourceConfig"]

log = structlog.get_logger(__name__)

MAX_ITEMS = 1000
"""Case updates in one request, at most."""
RETRY_AFTER_SECONDS = 5
"""What a 503 (broker unreachable) tells the sender to wait."""

_SHUTDOWN_TIMEOUT = 10.0  # seconds in-flight requests get to finish when the source stops
_BACKLOG = 128

Clock = Callable[[], float]


class WebhookSourceConfig(ConnectorConfig):
    """Settings of the webhook source (in a connectors file, under ``settings``)."""

    # A rejected value is not repeated in the error: it may be the secret.
    model_config = ConfigDict(hide_input_in_errors=True)  # merged with ConnectorConfig's

    host: str = "127.0.0.1"
    """Address to listen on (``0.0.0.0`` for every interface; put TLS in front, e.g. a reverse proxy)."""
    port: Annotated[int, Field(ge=0, le=65535)]
    """TCP port to listen on (0: any free port, for tests)."""
    path: Annotated[str, Field(pattern=r"^/[^\s?#]*$")] = "/case-updates"
    """URL path that takes the POSTs."""
    secret: SecretStr
    """Shared secret the requests must be signed with (at least 16 characters; ``openssl rand -hex 32``)."""
    tolerance: Annotated[float, Field(gt=0, le=3600)] = DEFAULT_TOLERANCE
    """Seconds a request's signature timestamp may be from our clock, either way."""
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    """Largest request body taken, in bytes."""

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        return check_secret(value)

    @field_validator("host")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be an address to listen on, e.g. '127.0.0.1' or '0.0.0.0'")
        return value.strip()


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def _answer(
    status: int, payload: Mapping[str, Any], request_id: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        dict(payload), status=status, headers={"X-Request-Id": request_id, **(headers or {})}
    )


class WebhookSource(Source[WebhookSourceConfig]):
    """Serves ``POST {path}`` and emits the case updates pushed to it onto ``case-updates``.

    Delivery guarantee: a 202 means the updates are on the topic (the broker acknowledged
    them before the answer was sent); anything else but a 422 means none of the request
    was accepted, and a 422 lists exactly which items were and were not (the valid ones
    of a partly bad batch are emitted). A sender retries on a 503 or no answer at all, so
    an update can arrive twice (an answer lost after the emit, a sender's own retry):
    pushes are not replayed by us and there is no checkpoint; the case update's
    ``event_id`` is the idempotency key downstream, so a repeat alerts nobody twice.
    (A sender that leaves ``event_id`` out gets one derived from the content, which is
    as good for repeats of the same content.)

    The port is bound in :meth:`setup` (so a port in use fails there) and exposed as
    :attr:`port`; :meth:`run` serves until ``context.stopping`` is set, then lets
    requests in flight finish (up to 10 seconds) and returns.
    """

    name = "webhook-source"
    produces = ("case-updates",)
    Config = WebhookSourceConfig

    def __init__(self, config: WebhookSourceConfig, *, clock: Clock = time.time) -> None:
        super().__init__(config)
        self._clock = clock
        self._secret = config.secret.get_secret_value().encode("utf-8")
        self._socket: socket.socket | None = None
        # Requests take turns to emit, as sources' batches do: never two batches at once.
        self._emitting = asyncio.Lock()
        self.port: int | None = None
        """The TCP port listened on, once bound (the actual one when ``port`` is 0)."""

    async def setup(self) -> None:
        """Bind the listening socket; connections queue until :meth:`run` serves them.

        Raises:
            ConfigurationError: ``host`` is not an address of this machine, or the port
                needs privileges.
            RetryableError: the port is in use.

        """
        if self._socket is not None:
            return
        # A later run reuses the port first bound, so that senders keep reaching it.
        port = self.port if self.port is not None else self.config.port
        where = f"{self.config.host}:{port}"
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                self.config.host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp's TCPSite does
                sock.bind(address)
                sock.listen(_BACKLOG)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise RetryableError(
                    f"webhook-source cannot listen on {where}: the port is in use (by another process, "
                    "or a previous run still stopping); free it or set another port"
                ) from exc
            raise ConfigurationError(
                f"webhook-source cannot listen on {where}: {exc.strerror or exc}; set host to an "
                "address of this machine (e.g. 127.0.0.1 or 0.0.0.0) and port to a free one above 1023"
            ) from exc
        self._socket = sock
        self.port = int(sock.getsockname()[1])

    async def close(self) -> None:
        """Close the listening socket if :meth:`run` did not take it."""
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    async def run(self, context: SourceContext) -> None:
        """Serve until ``context.stopping`` is set (binding first if :meth:`setup` has not)."""
        await self.setup()
        sock, self._socket = self._socket, None
        assert sock is not None  # setup() bound it or raised

        async def handle(request: web.Request) -> web.Response:
            return await self._handle(context, request)

        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_route("*", self.config.path, handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            log.info("webhook_source.listening", host=self.config.host, port=self.port, path=self.config.path)
            await context.stopping.wait()
        finally:
            await runner.cleanup()
            sock.close()  # the site closes it once started; this covers a failed start
        log.info("webhook_source.stopped", port=self.port)

    async def _handle(self, context: SourceContext, request: web.Request) -> web.Response:
        request_id = uuid.uuid4().hex[:16]
        if request.method != "POST":
            return _answer(
                405,
                {"error": f"{request.method} is not allowed here: POST case updates to {self.config.path}"},
                request_id,
                {"Allow": "POST"},
            )
        limit = self.config.max_body_bytes
        too_large = {"error": f"the body is larger than {limit} bytes; send fewer case updates per request"}
        if request.content_length is not None and request.content_length > limit:
            return _answer(413, too_large, request_id)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _answer(413, too_large, request_id)

        try:
            verify(self._secret, body, request.headers, self._clock(), self.config.tolerance)
        except SignatureError as exc:
            log.warning(
                "webhook_source.unauthorized", request_id=request_id, remote=request.remote, error=str(exc)
            )
            return _answer(401, {"error": str(exc)}, request_id)

        if not _is_json(request.content_type):
            return _answer(
                415,
                {"error": f"content type {request.content_type!r} is not JSON: send application/json"},
                request_id,
            )
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            return _answer(400, {"error": f"the body is not valid JSON: {exc}"}, request_id)
        items = [data] if isinstance(data, dict) else data
        if not isinstance(items, list) or not items:
            return _answer(
                400,
                {"error": "the body must be a case update (a JSON object) or a non-empty JSON array of them"},
                request_id,
            )
        if len(items) > MAX_ITEMS:
            return _answer(
                413,
                {"error": f"{len(items)} case updates in one request; send at most {MAX_ITEMS} per request"},
                request_id,
            )
        return await self._emit(context, request_id, items)

    async def _emit(self, context: SourceContext, request_id: str, items: list[Any]) -> web.Response:
        rejected: list[dict[str, Any]] = []
        records: list[SourceRecord] = []
        position: dict[str, int] = {}
        for i, item in enumerate(items):
            origin = f"request {request_id} item {i}"
            if isinstance(item, dict):
                records.append(SourceRecord(value=item, origin=origin))
                position[origin] = i
            else:
                kind = type(item).__name__ if item is not None else "null"
                rejected.append(
                    {"item": i, "reason": f"not a case update: a JSON {kind}, not an object", "errors": []}
                )
        try:
            async with self._emitting:
                report = await context.emit(records) if records else EmitReport()
        except RetryableError as exc:
            log.warning("webhook_source.unavailable", request_id=request_id, items=len(items), error=str(exc))
            return _answer(
                503,
                {
                    "error": "the pipeline cannot store case updates right now (its broker is unreachable); "
                    f"nothing of this request was accepted: send it again in {RETRY_AFTER_SECONDS} seconds"
                },
                request_id,
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        accepted = [r.event_id for r in report.accepted if isinstance(r, CaseUpdate)]
        for rejection in report.rejected:
            rejected.append(
                {
                    "item": position.get(rejection.origin),
                    "reason": rejection.reason,
                    "errors": [error.model_dump(mode="json") for error in rejection.errors],
                }
            )
        log.info(
            "webhook_source.received",
            request_id=request_id,
            accepted=len(accepted),
            rejected=len(rejected),
        )
        if not rejected:
            return _answer(202, {"accepted": accepted}, request_id)
        rejected.sort(key=lambda r: r["item"] if r["item"] is not None else -1)
        return _answer(
            422,
            {
                "error": f"{len(rejected)} of {len(items)} case updates are invalid and were not accepted; "
                f"the other {len(accepted)} were accepted (listed under 'accepted'): fix the rejected "
                "ones and send them again",
                "rejected": rejected,
                "accepted": accepted,
            },
            request_id,
        )
