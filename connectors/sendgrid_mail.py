"""SendGridSink: alerts through SendGrid's v3 Mail Send API, up to 1,000 people per request.

Alerts of one case update in one language, for people asked the same variant of its
action call and getting the same kind of email (alert or follow-up), share everything but
a few slots (greeting, "why you got this", subscriber id, and the signed unsubscribe,
preferences and "I did this" links when ``MOBILISE_PUBLIC_URL`` is set), so each such
group is rendered once and sent as requests of up to 1,000 personalizations; SendGrid
fills each person's slots from their ``substitutions``. Planning the requests
(:func:`plan_requests`), judging SendGrid's answers (:func:`judge_response`) and pacing
(:class:`TokenBucket`) are pure; the sink only sends.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import re
import time
import urllib.error
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any, ClassVar, Literal

import jinja2
import pydantic_core
import sendgrid
import structlog
from pydantic import Field, SecretStr, field_validator
from python_http_client import exceptions as http_errors

from schemas import Alert, PublicCase

from .addresses import needs_smtputf8, transport_address
from .base import Sink, SinkOutcome
from .email_config import EmailSinkConfig
from .lookahead import Lookahead, alert_ids
from .rendering import (
    ONE_CLICK,
    EmailIdentity,
    SharedEmail,
    body_key,
    fill,
    personal_substitutions,
    render_shared_for,
    unsubscribe_headers,
)
from .retry_after import retry_after

__all__ = [
    "MAX_PERSONALIZATIONS",
    "MAX_SUBSTITUTION_BYTES",
    "MailRequest",
    "SendGridConfig",
    "SendGridSink",
    "TokenBucket",
    "Verdict",
    "judge_response",
    "plan_requests",
]

log = structlog.get_logger(__name__)

MAX_PERSONALIZATIONS = 1000
"""SendGrid's ceiling on personalizations (and on recipients) in one request."""
MAX_SUBSTITUTION_BYTES = 10_000
"""SendGrid's ceiling on one personalization's substitutions (keys and values, UTF-8)."""
_MAX_ERROR_CHARS = 1000
_ADDRESS = re.compile(r"[^\s@<>()\[\]\"',;:]+@[^\s@<>()\[\]\"',;:]+")
_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)\b")


class SendGridConfig(EmailSinkConfig):
    """Settings of the SendGrid sink (environment: ``MOBILISE_SENDGRID_API_KEY`` and so on).

    The sender, the unsubscribe mailbox and signed links (``MOBILISE_FROM_EMAIL`` — a
    sender SendGrid has verified for the key's account —, ``MOBILISE_UNSUBSCRIBE_EMAIL``,
    ``MOBILISE_PUBLIC_URL``, ``MOBILISE_SECRET_KEY``) are :class:`EmailSinkConfig`'s.

    Raises:
        ConfigurationError: a setting is missing or invalid; the message names the variable.

    """

    sendgrid_api_key: SecretStr = Field(min_length=1)
    """API key with the Mail Send permission (required; masked when printed)."""
    sendgrid_host: str = "https://api.sendgrid.com"
    """Scheme and host of the API (``https://api.eu.sendgrid.com`` for EU regional subusers)."""
    sendgrid_sandbox: bool = False
    """Sandbox mode: SendGrid validates each request, answers 200 and delivers nothing."""
    sendgrid_max_requests_per_second: float = Field(default=10.0, gt=0, le=10_000)
    """Ceiling on requests per second from one worker (bursts up to one second's worth)."""
    sendgrid_timeout: float = Field(default=30.0, gt=0, le=600)
    """Seconds to wait for SendGrid's answer to one request before calling it retryable."""
    sendgrid_concurrency: int = Field(default=4, ge=1, le=32)
    """Requests of one delivery batch in flight at once (a batch of more than 1,000 people,
    or in several variants, is several requests): SendGrid's round trip is paid once per
    round of requests instead of once per request."""

    settings_name: ClassVar[str] = "SendGrid"
    secret_fields: ClassVar[frozenset[str]] = frozenset({"sendgrid_api_key", "secret_key"})

    @field_validator("sendgrid_host")
    @classmethod
    def _is_a_base_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/]+/?", value):
            raise ValueError(
                "must be the API's scheme and host only, e.g. 'https://api.sendgrid.com' "
                "(or 'https://api.eu.sendgrid.com')"
            )
        return value.rstrip("/")


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, and ``burst`` at once.

    Pure: the caller passes the time, so tests drive it with a fake clock. A reservation
    that has to wait still takes its token (the bucket goes into debt), so callers that
    reserve one after another are spaced ``1 / rate`` apart.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate!r}")
        self.rate = rate
        self.burst = max(1.0, rate if burst is None else burst)
        self._tokens = self.burst
        self._updated: float | None = None

    def reserve(self, now: float) -> float:
        """Take one token at time ``now`` (seconds); return how long to wait before using it."""
        if self._updated is None:
            self._updated = now
        elif now > self._updated:  # a clock that steps back refills nothing
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


@dataclass(frozen=True)
class MailRequest:
    """One Mail Send request: the JSON body, and the alert of each personalization in order."""

    alert_ids: tuple[str, ...]
    body: dict[str, Any]
    event_id: str
    case_id: str


@dataclass(frozen=True)
class Verdict:
    """What an answer from SendGrid means for the alerts of the request."""

    kind: Literal["accepted", "retryable", "permanent"]
    status: int | None = None
    """The HTTP status; None when no answer came."""
    message_id: str | None = None
    """X-Message-Id, when accepted."""
    retry_after: float | None = None
    """Seconds to wait before trying again, when SendGrid said."""
    error: str | None = None
    """What went wrong, for failures."""
    culprits: frozenset[int] = field(default_factory=frozenset)
    """Personalizations a 400 named; when set only those are permanent failures."""
    halt: bool = False
    """Send nothing more in this batch (rate limited, or SendGrid unreachable)."""


def _fits_substitutions(values: Mapping[str, str]) -> bool:
    """Whether ``values`` stay under SendGrid's limit on one personalization's substitutions."""
    characters = sum(len(key) + len(value) for key, value in values.items())
    if characters * 4 < MAX_SUBSTITUTION_BYTES:  # UTF-8 has at most 4 bytes per character
        return True
    return (
        sum(len(key.encode()) + len(value.encode()) for key, value in values.items()) < MAX_SUBSTITUTION_BYTES
    )


def _address(email: str, name: str | None) -> dict[str, str]:
    email = transport_address(email)  # an internationalised domain in ASCII (cached)
    if not name:
        return {"email": email}
    if "," in name or ";" in name:
        # SendGrid reads an unquoted comma or semicolon in a name as an address separator;
        # its own client libraries quote such names.
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return {"email": email, "name": name}


def _groups(alerts: Sequence[Alert]) -> Iterator[list[Alert]]:
    """Alerts that get the same email body.

    Same :func:`connectors.rendering.body_key` (event, language, variant of the action call,
    kind of email, a digest's cases) and case content.
    """
    by_key: dict[tuple[object, ...], list[tuple[PublicCase, list[Alert]]]] = {}
    seen: set[str] = set()
    for alert in alerts:
        if alert.alert_id in seen:
            continue
        seen.add(alert.alert_id)
        key = body_key(alert)
        groups = by_key.setdefault(key, [])
        for case, members in groups:
            if alert.case is case or alert.case == case:
                members.append(alert)
                break
        else:
            groups.append((alert.case, [alert]))
    for groups in by_key.values():
        for _, members in groups:
            yield members


def _chunks(people: list[tuple[Alert, dict[str, str]]]) -> Iterator[list[tuple[Alert, dict[str, str]]]]:
    """Requests of at most 1,000 people in which no address appears twice.

    The n-th alert to one address goes into the n-th layer; each layer is cut into
    chunks of 1,000. Usually there is one layer.
    """
    layers: list[list[tuple[Alert, dict[str, str]]]] = []
    count: dict[str, int] = {}
    for person in people:
        address = str(person[0].email).casefold()
        depth = count.get(address, 0)
        count[address] = depth + 1
        if depth == len(layers):
            layers.append([])
        layers[depth].append(person)
    for layer in layers:
        for start in range(0, len(layer), MAX_PERSONALIZATIONS):
            yield layer[start : start + MAX_PERSONALIZATIONS]


def _request(
    shared: SharedEmail,
    people: Sequence[tuple[Alert, dict[str, str] | None]],
    identity: EmailIdentity,
    *,
    sandbox: bool,
) -> MailRequest:
    first = people[0][0]
    sender_name, sender_email = parseaddr(identity.from_email)
    headers = {"X-Mobilise-Case-Id": first.case.case_id, "X-Mobilise-Event-Id": first.event_id}
    if identity.links is not None:
        headers.update(ONE_CLICK)
    personalizations = []
    for alert, values in people:
        # Each person's List-Unsubscribe names their own signed URL.
        unsubscribe = unsubscribe_headers(identity, alert.subscriber_id)["List-Unsubscribe"]
        personalization: dict[str, Any] = {
            "to": [_address(str(alert.email), alert.name)],
            # Ids only: SendGrid keeps custom_args and categories, and treats them as not
            # personal. Its event webhook sends them back with every event of the message,
            # which is how feedback names the alert (connectors/sendgrid_feedback.py).
            "custom_args": {
                "alert_id": alert.alert_id,
                "event_id": alert.event_id,
                "case_id": alert.case.case_id,
                "subscriber_id": alert.subscriber_id,
            },
            "headers": {"List-Unsubscribe": unsubscribe, "X-Mobilise-Alert-Id": alert.alert_id},
        }
        if values is not None:
            personalization["substitutions"] = values
        personalizations.append(personalization)
    body: dict[str, Any] = {
        "personalizations": personalizations,
        "from": _address(sender_email, sender_name),
        "subject": shared.subject,
        # SendGrid wants text/plain first, then text/html.
        "content": [
            {"type": "text/plain", "value": shared.text},
            {"type": "text/html", "value": shared.html},
        ],
        "headers": headers,
        "categories": ["mobilise", f"case:{first.case.case_id}"],
    }
    if sandbox:
        body["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return MailRequest(
        alert_ids=tuple(alert.alert_id for alert, _ in people),
        body=body,
        event_id=first.event_id,
        case_id=first.case.case_id,
    )


def plan_requests(
    alerts: Sequence[Alert],
    identity: EmailIdentity,
    *,
    sandbox: bool = False,
) -> tuple[list[MailRequest], list[SinkOutcome]]:
    """Plan the Mail Send requests that deliver ``alerts``. Pure.

    Alerts with the same event, language, variant of the action call
    (:func:`connectors.rendering.action_variant`), kind (alert or follow-up) and case
    content share one rendered body with placeholders; each person's slot values go in
    their personalization's ``substitutions`` (separate keys for text and escaped HTML),
    their signed unsubscribe, preferences and "I did this" URLs among them when
    ``identity`` has links (then each personalization's ``List-Unsubscribe`` names the
    unsubscribe URL too, and the request carries the RFC 8058 ``List-Unsubscribe-Post``
    header). Requests hold at most
    1,000 personalizations and never one address twice. A person whose substitutions
    would exceed SendGrid's 10,000 bytes gets a request of their own with the body
    filled in. An alert id given twice is planned once.

    Returns:
        The requests, and permanent-failure outcomes for alerts that cannot be rendered.

    """
    requests: list[MailRequest] = []
    failed: list[SinkOutcome] = []

    def request(shared: SharedEmail, people: Sequence[tuple[Alert, dict[str, str] | None]]) -> MailRequest:
        return _request(shared, people, identity, sandbox=sandbox)

    for group in _groups(alerts):
        try:
            first = group[0]
            shared = render_shared_for(first, identity)
        except (jinja2.TemplateError, ValueError) as exc:
            failed.extend(_cannot_render(alert, exc) for alert in group)
            continue
        people: list[tuple[Alert, dict[str, str]]] = []
        for alert in group:
            try:
                values = personal_substitutions(alert, identity)
                address = transport_address(alert.email)  # an address no transport takes fails here, alone
            except (jinja2.TemplateError, ValueError) as exc:
                failed.append(_cannot_render(alert, exc))
                continue
            if needs_smtputf8(address):
                failed.append(_cannot_reach(alert))
                continue
            if _fits_substitutions(values):
                people.append((alert, values))
            else:
                alone = shared.model_copy(
                    update={"text": fill(shared.text, values), "html": fill(shared.html, values)}
                )
                requests.append(request(alone, [(alert, None)]))
        requests.extend(request(shared, chunk) for chunk in _chunks(people))
    return requests, failed


def _cannot_render(alert: Alert, exc: Exception) -> SinkOutcome:
    # The same alert fails the same way every time: a permanent failure.
    return SinkOutcome(record_id=alert.alert_id, accepted=False, error=f"cannot render: {exc!r}")


def _cannot_reach(alert: Alert) -> SinkOutcome:
    # Said before anything is sent, rather than learnt later from a "dropped" event.
    return SinkOutcome(
        record_id=alert.alert_id,
        accepted=False,
        error="SendGrid does not deliver to an address with letters beyond ASCII before its @: it accepts "
        "the request and then drops the message as invalid. Reach this person through MOBILISE_SINK=smtp "
        "with a server that offers SMTPUTF8",
    )


def _describe_errors(body: str) -> tuple[str, frozenset[int]]:
    """SendGrid's error body in one line, and the personalizations its errors name."""
    parts: list[str] = []
    named: set[int] = set()
    whole_request = False
    try:
        for error in json.loads(body)["errors"]:
            where = error.get("field")
            parts.append(f"{where}: {error.get('message')}" if where else str(error.get("message")))
            index = _PERSONALIZATION_FIELD.match(where or "")
            if index:
                named.add(int(index.group(1)))
            else:
                whole_request = True
    except (ValueError, KeyError, TypeError, AttributeError):
        parts, whole_request = [" ".join(body.split())], True
    text = "; ".join(parts) or "(no body)"
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 1] + "…"
    return text, frozenset() if whole_request else frozenset(named)


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    reset = headers.get("X-RateLimit-Reset")
    if reset is not None:
        try:
            return max(1.0, float(reset) - now)
        except ValueError:
            pass
    seconds = retry_after(headers, now)
    return None if seconds is None else max(1.0, seconds)


def judge_response(status: int, headers: Mapping[str, str], body: str, *, now: float) -> Verdict:
    """What SendGrid's answer means. Pure.

    Args:
        status: The HTTP status.
        headers: The response headers (case-insensitive mapping for real responses).
        body: The response body.
        now: The current Unix time, to turn X-RateLimit-Reset into seconds.

    Returns:
        202 (and 200, sandbox mode): accepted. 429: retryable after X-RateLimit-Reset,
        halting the batch. 5xx and other unexpected statuses: retryable. 4xx: permanent,
        with SendGrid's errors; a 400 whose errors all name personalizations has
        those as ``culprits``.

    """
    message_id = headers.get("X-Message-Id")
    if status in (200, 202):
        return Verdict(kind="accepted", status=status, message_id=message_id)
    error, culprits = _describe_errors(body)
    if status == 429:
        retry_after = _retry_after(headers, now)
        return Verdict(
            kind="retryable",
            status=status,
            retry_after=retry_after,
            error=f"SendGrid rate limit (429): {error}",
            halt=True,
        )
    if 400 <= status < 500:
        return Verdict(
            kind="permanent",
            status=status,
            error=f"SendGrid refused the request ({status}): {error}",
            culprits=culprits if status == 400 else frozenset(),
        )
    return Verdict(kind="retryable", status=status, error=f"SendGrid answered {status}: {error}")


def _redact(text: str | None) -> str | None:
    return _ADDRESS.sub("[address]", text) if text else text


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class SendGridSink(Sink[SendGridConfig, Alert]):
    """Sends alerts through SendGrid's v3 Mail Send API.

    Delivery guarantee: at least once, with duplicates bounded by one delivery batch. The
    framework records an alert as sent only after SendGrid answered 202 for the request
    that carried it, and never hands a recorded alert to the sink again. SendGrid's Mail
    Send has no idempotency key, so the window for a duplicate is the delivery batch in
    flight (``MOBILISE_DELIVERY_BATCH_SIZE``; a batch in several languages is several
    requests, and their outcomes are recorded when the whole batch returns) whose 202s were
    received but not yet recorded when the worker died — or a request whose answer was lost
    (a timeout or dropped connection after SendGrid had accepted it), which is reported as
    retryable and sent again.

    Outcomes per request: 202 accepted (provider id: X-Message-Id); 200 in sandbox mode
    accepted, nothing sent (logged as ``sendgrid.sandboxed``); 429 retryable after
    X-RateLimit-Reset, and the rest of the batch is not sent either; 5xx, timeouts and
    connection errors retryable; 4xx permanent with SendGrid's errors (a 400 naming
    particular personalizations fails only those, and the rest are tried again). Other
    requests of the batch proceed. A batch's requests go out in order, up to
    ``MOBILISE_SENDGRID_CONCURRENCY`` at once; after a 429, a lost connection or an interrupt
    (the worker stops) the ones not yet started are not sent, and those already in flight keep
    their own answers. The request rate of one worker is capped by
    ``MOBILISE_SENDGRID_MAX_REQUESTS_PER_SECOND``.
    """

    name = "sendgrid"
    accepts = Alert
    Config = SendGridConfig

    def __init__(
        self,
        config: SendGridConfig,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(config)
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._bucket = TokenBucket(config.sendgrid_max_requests_per_second)
        self._identity = config.identity()
        self._client: sendgrid.SendGridAPIClient | None = None
        # One thread per request in flight: the default executor has as few as five.
        self._requests: ThreadPoolExecutor | None = None
        self._ahead: Lookahead[_Plan] = Lookahead()

    async def setup(self) -> None:
        """Create the ``sendgrid`` library's client, pointed at ``MOBILISE_SENDGRID_HOST``."""
        if self._client is not None:
            return
        # The library logs each request's payload (every address in it) at debug level.
        logging.getLogger("python_http_client").setLevel(logging.INFO)
        self._client = sendgrid.SendGridAPIClient(
            api_key=self.config.sendgrid_api_key.get_secret_value(), host=self.config.sendgrid_host
        )
        self._requests = ThreadPoolExecutor(self.config.sendgrid_concurrency, thread_name_prefix="sendgrid")
        log.info(
            "sendgrid.ready",
            host=self.config.sendgrid_host,
            sandbox=self.config.sendgrid_sandbox,
            max_requests_per_second=self.config.sendgrid_max_requests_per_second,
            concurrency=self.config.sendgrid_concurrency,
            one_click_unsubscribe=self.config.public_url is not None,
        )
        if self.config.sendgrid_sandbox:
            log.warning(
                "sendgrid.sandbox_mode",
                detail="MOBILISE_SENDGRID_SANDBOX is on: SendGrid validates every request and delivers "
                "nothing, yet the alerts are recorded as sent",
            )

    async def close(self) -> None:
        """Forget the client (the library opens a connection per request; none stays open)."""
        self._client = None
        if self._requests is not None:
            self._requests.shutdown(wait=False)
            self._requests = None
        self._ahead.discard()

    async def prepare(self, alerts: Sequence[Alert]) -> None:
        """Plan the next batch's requests in a thread while the current one is being sent."""
        self._ahead.start(alert_ids(alerts), lambda: self._plan(alerts))

    async def deliver(self, alerts: Sequence[Alert]) -> Sequence[SinkOutcome]:
        """Send the batch as few requests as the limits allow, several at once; one outcome per alert."""
        if not alerts:
            return []
        requests, outcomes = await self._ahead.take(alert_ids(alerts), lambda: self._plan(alerts))
        # FIFO: the requests start in the batch's order, at most `slots` of them at a time.
        slots = asyncio.Semaphore(self.config.sendgrid_concurrency)
        halted: Verdict | None = None

        async def send(request: MailRequest, encoded: _Body) -> list[SinkOutcome]:
            nonlocal halted
            async with slots:
                # Read once a slot is free: a request that halted the batch has its verdict by then.
                if halted is not None:
                    return _not_sent(request, halted)
                wait = self._bucket.reserve(self._clock())
                if wait > 0:
                    await self._sleep(wait)
                if self.interrupted:  # the worker is stopping: this request waits for the next one
                    return [SinkOutcome.interrupted(alert_id) for alert_id in request.alert_ids]
                verdict = await self._send(request, encoded)
                if verdict.halt and halted is None:
                    halted = verdict
                return _outcomes(request, verdict)

        # Every request finishes before an unexpected error is raised, so none is still
        # being sent when the batch is handed back for a retry.
        answers = await asyncio.gather(*(send(r, e) for r, e in requests), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
            outcomes.extend(answer)
        return outcomes

    async def _plan(self, alerts: Sequence[Alert]) -> _Plan:
        return await asyncio.to_thread(self._planned, alerts)

    def _planned(self, alerts: Sequence[Alert]) -> _Plan:
        """The requests of ``alerts``, each with its body already JSON, so that encoding is prepared too."""
        requests, outcomes = plan_requests(alerts, self._identity, sandbox=self.config.sendgrid_sandbox)
        # pydantic's encoder: a third of the standard library's time on a 1,000-person body.
        encoded = [_Body(pydantic_core.to_json(request.body)) for request in requests]
        return list(zip(requests, encoded, strict=True)), outcomes

    async def _send(self, request: MailRequest, encoded: _Body) -> Verdict:
        if self._client is None or self._requests is None:
            raise RuntimeError("SendGridSink.deliver() was called before setup()")
        try:
            # The library is synchronous (urllib): the request runs in a thread so the
            # worker's event loop keeps serving Kafka meanwhile.
            status, headers, body = await asyncio.get_running_loop().run_in_executor(
                self._requests, self._post, self._client, encoded
            )
            verdict = judge_response(status, headers, body, now=self._wall_clock())
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            verdict = Verdict(kind="retryable", error=f"no answer from SendGrid: {exc!r}", halt=True)
        _log(request, verdict)
        return verdict

    def _post(self, client: sendgrid.SendGridAPIClient, body: _Body) -> tuple[int, Mapping[str, str], str]:
        """POST /v3/mail/send with a JSON ``body``; the status, headers and body of the answer."""
        try:
            # When the content type is not exactly "application/json" (which would make it
            # encode the body again), the library sends what the body's encode() gives: the
            # JSON encoded while the batch before was being sent.
            response = client.client.mail.send.post(
                request_body=body, request_headers=_JSON_CONTENT, timeout=self.config.sendgrid_timeout
            )
        except http_errors.HTTPError as exc:  # every non-2xx answer
            return exc.status_code, exc.headers, _text(exc.body)
        return response.status_code, response.headers, _text(response.body)


_JSON_CONTENT = {"Content-Type": "application/json; charset=utf-8"}

_Plan = tuple[list[tuple[MailRequest, "_Body"]], list[SinkOutcome]]
"""A batch's requests, each with its encoded body, and the alerts that could not be rendered."""


class _Payload(bytes):
    """A request body that formats as its size only.

    The HTTP library formats every body it sends into a debug line, logged or not: that
    took over a millisecond for a 1,000-person body, and at debug level it would have
    written every recipient's address into the logs.
    """

    def __format__(self, spec: str) -> str:
        return f"<{len(self):,} bytes of JSON>"


class _Body:
    """A JSON body, encoded ahead: the library asks a body it does not encode itself for ``encode()``."""

    def __init__(self, encoded: bytes) -> None:
        self.payload = _Payload(encoded)

    def encode(self, encoding: str = "utf-8") -> _Payload:
        return self.payload


def _text(body: bytes | str | None) -> str:
    if isinstance(body, bytes):
        return body.decode("utf-8", errors="replace")
    return body or ""


def _not_sent(request: MailRequest, halted: Verdict) -> list[SinkOutcome]:
    return [
        SinkOutcome(
            record_id=alert_id,
            accepted=False,
            retryable=True,
            retry_after=halted.retry_after,
            error=f"not sent, an earlier request of the batch failed: {halted.error}",
        )
        for alert_id in request.alert_ids
    ]


def _outcomes(request: MailRequest, verdict: Verdict) -> list[SinkOutcome]:
    if verdict.kind == "accepted":
        return [
            SinkOutcome.accept(alert_id, provider_message_id=verdict.message_id)
            for alert_id in request.alert_ids
        ]
    if verdict.kind == "retryable":
        return [
            SinkOutcome(
                record_id=alert_id,
                accepted=False,
                retryable=True,
                retry_after=verdict.retry_after,
                error=verdict.error,
            )
            for alert_id in request.alert_ids
        ]
    if verdict.culprits and max(verdict.culprits) < len(request.alert_ids):
        # SendGrid refuses a request as a whole, so the others were not sent: try them again.
        return [
            SinkOutcome(record_id=alert_id, accepted=False, error=verdict.error)
            if index in verdict.culprits
            else SinkOutcome(
                record_id=alert_id,
                accepted=False,
                retryable=True,
                error=f"not sent, SendGrid refused another personalization of the request: {verdict.error}",
            )
            for index, alert_id in enumerate(request.alert_ids)
        ]
    return [
        SinkOutcome(record_id=alert_id, accepted=False, error=verdict.error) for alert_id in request.alert_ids
    ]


def _log(request: MailRequest, verdict: Verdict) -> None:
    context = {
        "alerts": len(request.alert_ids),
        "event_id": request.event_id,
        "case_id": request.case_id,
        "status": verdict.status,
    }
    if verdict.status == 202:
        log.info("sendgrid.accepted", message_id=verdict.message_id, **context)
    elif verdict.status == 200:
        log.warning(
            "sendgrid.sandboxed",
            message_id=verdict.message_id,
            detail="sandbox mode: SendGrid validated the request and sent nothing",
            **context,
        )
    elif verdict.status == 429:
        log.warning("sendgrid.rate_limited", retry_after=verdict.retry_after, **context)
    elif verdict.status in (401, 403):
        log.error(
            "sendgrid.unauthorized",
            error=_redact(verdict.error),
            fix="check MOBILISE_SENDGRID_API_KEY: the key is wrong, revoked, or lacks the Mail Send "
            "permission (or the From address is not a verified sender)",
            **context,
        )
    elif verdict.kind == "permanent":
        log.warning(
            "sendgrid.rejected", error=_redact(verdict.error), culprits=len(verdict.culprits), **context
        )
    else:
        log.warning("sendgrid.unavailable", error=_redact(verdict.error), **context)
