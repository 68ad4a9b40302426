"""WebhookSink: each record of a topic is POSTed as JSON to a URL, signed with a shared secret.

One request per record, several at once (``concurrency``). The receiver checks the
signature as :mod:`connectors.signing` describes and drops repeats by the
``X-Mobilise-Record-Id`` header. Judging the receiver's answers (:func:`judge_response`) is
pure; the sink only sends.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated

import aiohttp
import structlog
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator

from .base import ConnectorConfig, Sink, SinkOutcome
from .retry_after import retry_after
from .signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, check_secret, sign

__all__ = ["RECORD_ID_HEADER", "RECORD_TYPE_HEADER", "WebhookSink", "WebhookSinkConfig", "judge_response"]

log = structlog.get_logger(__name__)

RECORD_ID_HEADER = "X-Mobilise-Record-Id"
"""The record's deterministic id: the receiver's idempotency key."""
RECORD_TYPE_HEADER = "X-Mobilise-Record-Type"
"""The record's model name, e.g. ``CaseUpdate`` or ``Alert``."""

_MAX_ERROR_CHARS = 500
_RETRYABLE_STATUSES = frozenset({408, 425, 429})
_RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "Content-Type",
        "Content-Length",
        RECORD_ID_HEADER,
        RECORD_TYPE_HEADER,
        TIMESTAMP_HEADER,
        SIGNATURE_HEADER,
    )
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

Clock = Callable[[], float]


class WebhookSinkConfig(ConnectorConfig):
    """Settings of the webhook sink (in a connectors file, under ``settings``)."""

    # A rejected value is not repeated in the error: it may be the secret or a header's token.
    model_config = ConfigDict(hide_input_in_errors=True)  # merged with ConnectorConfig's

    url: AnyHttpUrl
    """Where each record is POSTed (``https://…``; plain ``http://`` only on a trusted network)."""
    secret: SecretStr
    """Shared secret the requests are signed with (at least 16 characters; ``openssl rand -hex 32``)."""
    timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Seconds to wait for the receiver's answer to one request before calling it retryable."""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Extra request headers, e.g. ``Authorization``; their values are never logged."""
    concurrency: Annotated[int, Field(ge=1, le=100)] = 8
    """Requests in flight at once."""

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        return check_secret(value)

    @field_validator("headers")
    @classmethod
    def _headers_are_extra(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, header_value in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name (letters, digits and dashes)")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"{name!r} is set by the sink itself; remove it from headers")
            if any(c in header_value.get_secret_value() for c in "\r\n\0"):
                raise ValueError(f"the value of header {name!r} contains a line break or NUL; remove it")
        return value


def judge_response(
    record_id: str, status: int, headers: Mapping[str, str], body: str, *, now: float
) -> SinkOutcome:
    """What the receiver's answer means for the record. Pure.

    Args:
        record_id: The record the request carried.
        status: The HTTP status.
        headers: The response headers (case-insensitive mapping for real responses).
        body: The start of the response body.
        now: The current Unix time, to read a Retry-After given as a date.

    Returns:
        2xx: accepted, with X-Request-Id as the provider's id. 408, 425, 429 and 5xx:
        retryable (429 and 503 with Retry-After as ``retry_after``). Other statuses (3xx,
        the other 4xx): permanent, with the status and the first 500 characters of the body.

    """
    if 200 <= status < 300:
        return SinkOutcome(
            record_id=record_id, accepted=True, provider_message_id=headers.get("X-Request-Id")
        )
    text = " ".join(body.split())[:_MAX_ERROR_CHARS] or "(no body)"
    if status in _RETRYABLE_STATUSES or status >= 500:
        return SinkOutcome(
            record_id=record_id,
            accepted=False,
            retryable=True,
            retry_after=retry_after(headers, now) if status in (429, 503) else None,
            error=f"the receiver answered {status}: {text}",
        )
    if 300 <= status < 400:
        where = headers.get("Location", "(no Location)")
        return SinkOutcome(
            record_id=record_id,
            accepted=False,
            error=f"the receiver answered {status}, a redirect to {where[:200]}: "
            "set url to the final address",
        )
    fix = " (check that secret and headers agree with the receiver's)" if status in (401, 403) else ""
    return SinkOutcome(
        record_id=record_id, accepted=False, error=f"the receiver refused it ({status}){fix}: {text}"
    )


def _safe_url(url: AnyHttpUrl) -> str:
    # The query string or user info may hold a token: logs get scheme, host, port and path.
    port = f":{url.port}" if url.port not in (None, _DEFAULT_PORTS.get(url.scheme)) else ""
    return f"{url.scheme}://{url.host}{port}{url.path or ''}"


class WebhookSink(Sink[WebhookSinkConfig, BaseModel]):
    """POSTs each record as JSON to ``url``, signed, one request per record.

    Delivery guarantee: at least once, with the record id for deduplication. A record
    counts as delivered only when the receiver answered 2xx. A request whose answer was
    lost (a timeout, a dropped connection after the receiver took it) is reported
    retryable and sent again, and after a crash the framework hands records again whose
    outcome it had not recorded; each repeat carries the same ``X-Mobilise-Record-Id``
    (:meth:`Sink.record_id`: an alert's alert_id, a case update's event_id, else a hash of
    the content) and the same body, so a receiver that keeps the ids it has seen drops it.

    Each request: ``Content-Type: application/json``, the body the record's
    ``model_dump_json()``, ``X-Mobilise-Record-Id``, ``X-Mobilise-Record-Type`` (the model's
    class name), the signature headers of :mod:`connectors.signing` (signed when sent, so
    a retry has a fresh timestamp) and the configured extra ``headers``. Outcomes: see
    :func:`judge_response`; connection errors and timeouts are retryable.
    """

    name = "webhook-sink"
    accepts = BaseModel
    Config = WebhookSinkConfig

    def __init__(self, config: WebhookSinkConfig, *, clock: Clock = time.time) -> None:
        super().__init__(config)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._secret = config.secret.get_secret_value().encode("utf-8")
        self._url = str(config.url)
        self._where = _safe_url(config.url)

    async def setup(self) -> None:
        """Open the HTTP client session (connections are kept alive between requests)."""
        if self._session is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            connector=aiohttp.TCPConnector(limit=self.config.concurrency),
            headers={"User-Agent": "mobilise-webhook-sink"},
        )
        log.info("webhook_sink.ready", url=self._where, concurrency=self.config.concurrency)
        if self.config.url.scheme == "http" and self.config.url.host not in _LOOPBACK_HOSTS:
            log.warning(
                "webhook_sink.plain_http",
                url=self._where,
                detail="records cross the network unencrypted (case updates carry their internal "
                "fields); use an https:// url unless the network is trusted",
            )

    async def close(self) -> None:
        """Close the HTTP client session."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def deliver(self, records: Sequence[BaseModel]) -> Sequence[SinkOutcome]:
        """POST every record, ``concurrency`` at a time; one outcome per distinct record id."""
        if self._session is None:
            raise RuntimeError("WebhookSink.deliver() was called before setup()")
        if not records:
            return []
        session = self._session
        # One request per id: two records with one id are the same record.
        distinct: dict[str, BaseModel] = {}
        for record in records:
            distinct.setdefault(self.record_id(record), record)
        limit = asyncio.Semaphore(self.config.concurrency)

        async def post(record_id: str, record: BaseModel) -> SinkOutcome:
            async with limit:
                return await self._post(session, record_id, record)

        outcomes = await asyncio.gather(*(post(rid, record) for rid, record in distinct.items()))
        log.info(
            "webhook_sink.delivered",
            url=self._where,
            records=len(outcomes),
            accepted=sum(o.accepted for o in outcomes),
            retryable=sum(o.retryable for o in outcomes),
            refused=sum(not o.accepted and not o.retryable for o in outcomes),
        )
        return outcomes

    async def _post(self, session: aiohttp.ClientSession, record_id: str, record: BaseModel) -> SinkOutcome:
        body = record.model_dump_json().encode("utf-8")
        headers = {name: value.get_secret_value() for name, value in self.config.headers.items()}
        headers.update(
            {
                "Content-Type": "application/json",
                RECORD_ID_HEADER: record_id,
                RECORD_TYPE_HEADER: type(record).__name__,
                **sign(self._secret, body, int(self._clock())),
            }
        )
        try:
            async with session.post(self._url, data=body, headers=headers, allow_redirects=False) as response:
                text = ""
                if not 200 <= response.status < 300:
                    start = await response.content.read(4 * _MAX_ERROR_CHARS)
                    text = _decode(start, response.charset)
                outcome = judge_response(
                    record_id, response.status, response.headers, text, now=self._clock()
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            outcome = SinkOutcome(
                record_id=record_id,
                accepted=False,
                retryable=True,
                error=f"no answer from {self._where}: {_describe(exc)}",
            )
        _log(record_id, type(record).__name__, outcome)
        return outcome


def _decode(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", "replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", "replace")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out (raise timeout if the receiver is slow)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _log(record_id: str, record_type: str, outcome: SinkOutcome) -> None:
    if outcome.accepted:
        log.debug("webhook_sink.accepted", record_id=record_id, record_type=record_type)
    elif outcome.retryable:
        log.warning(
            "webhook_sink.unavailable",
            record_id=record_id,
            record_type=record_type,
            retry_after=outcome.retry_after,
            error=outcome.error,
        )
    else:
        log.warning("webhook_sink.refused", record_id=record_id, record_type=record_type, error=outcome.error)
