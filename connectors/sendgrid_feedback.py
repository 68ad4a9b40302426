"""SendGrid's Event Webhook: check that a request is SendGrid's, and turn its events into records.

Pure functions and models; the web process (``mobilise/web/sendgrid_webhook.py``) serves
the endpoint and publishes what :func:`translate` returns.

* :class:`WebhookVerifier` checks the Signed Event Webhook: an ECDSA P-256 signature over
  the ``X-Twilio-Email-Event-Webhook-Timestamp`` header followed by the raw body, made
  with SendGrid's key and checked with the ``sendgrid`` library's :class:`EventWebhook`
  against ``MOBILISE_SENDGRID_WEBHOOK_PUBLIC_KEY``; and that the signed timestamp is
  recent, so a captured request cannot be replayed later.
* :func:`parse_events` reads the body: a JSON array of event objects.
* :func:`translate` maps one event to a :class:`~schemas.Suppression` per subscriber id
  (bounce, dropped, spamreport, unsubscribe, group_unsubscribe) and a
  :class:`~schemas.DeliveryEvent` when the event names our alert (through the
  ``custom_args`` the SendGrid sink sets: alert_id, event_id, case_id, subscriber_id).

Every record is a function of the event alone (its ids derive from ``sg_event_id``, its
time is the event's), so SendGrid retrying a request yields the very same records.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from cryptography.exceptions import InvalidSignature
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader

from mobilise.errors import ConfigurationError, MobiliseError
from schemas import (
    DeliveryEvent,
    DeliveryOutcome,
    Suppression,
    SuppressionReason,
    subscriber_id_for,
)

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Feedback",
    "SendGridEvent",
    "WebhookRejected",
    "WebhookVerifier",
    "kind_of",
    "parse_events",
    "translate",
]

SIGNATURE_HEADER: str = EventWebhookHeader.SIGNATURE
"""``X-Twilio-Email-Event-Webhook-Signature``: base64 DER ECDSA signature."""
TIMESTAMP_HEADER: str = EventWebhookHeader.TIMESTAMP
"""``X-Twilio-Email-Event-Webhook-Timestamp``: Unix seconds, signed with the body."""

_MAX_FUTURE = 300.0
"""Seconds a signed timestamp may be ahead of our clock (clock skew), no more."""
_MAX_DETAIL = 300
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_ADDRESS = re.compile(r"[^\s@<>()\[\]\"',;:]+@[^\s@<>()\[\]\"',;:]+")

_SUPPRESSING: dict[str, tuple[SuppressionReason, DeliveryOutcome]] = {
    "bounce": (SuppressionReason.BOUNCE, DeliveryOutcome.BOUNCED),
    "dropped": (SuppressionReason.DROPPED, DeliveryOutcome.DROPPED),
    "spamreport": (SuppressionReason.SPAM_REPORT, DeliveryOutcome.SPAM_REPORTED),
    "unsubscribe": (SuppressionReason.UNSUBSCRIBE, DeliveryOutcome.UNSUBSCRIBED),
    "group_unsubscribe": (SuppressionReason.GROUP_UNSUBSCRIBE, DeliveryOutcome.UNSUBSCRIBED),
}
_RECORDED: dict[str, DeliveryOutcome] = {
    "delivered": DeliveryOutcome.DELIVERED,
    "deferred": DeliveryOutcome.DEFERRED,
    "open": DeliveryOutcome.OPENED,
    "click": DeliveryOutcome.CLICKED,
    "blocked": DeliveryOutcome.BLOCKED,
}


class WebhookRejected(MobiliseError):
    """A webhook request that is not processed; nothing of it is published.

    Attributes:
        status: The HTTP status to answer (401 unauthenticated, 400 unreadable).
        code: A short machine-readable name of the problem.

    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


Clock = Callable[[], float]


class WebhookVerifier:
    """Checks SendGrid's signature and the freshness of its timestamp.

    Args:
        public_key: The verification key (base64 DER, as SendGrid shows it).
        max_age: Oldest accepted timestamp, in seconds.
        clock: Current Unix time (tests inject one).

    Raises:
        ConfigurationError: the key cannot be loaded.

    """

    def __init__(self, public_key: str, *, max_age: float, clock: Clock = time.time) -> None:
        try:
            self._webhook = EventWebhook(public_key)
        except ValueError as exc:
            raise ConfigurationError(
                f"MOBILISE_SENDGRID_WEBHOOK_PUBLIC_KEY cannot be loaded as a public key ({exc}); paste the "
                "verification key shown under SendGrid's Mail Settings → Signed Event Webhook"
            ) from exc
        self.max_age = max_age
        self._clock = clock

    def verify(self, body: bytes, signature: str | None, timestamp: str | None) -> None:
        """Accept the request, or say why not.

        The signature is checked first, so only a request signed by SendGrid learns
        anything about its timestamp.

        Raises:
            WebhookRejected: 401 with ``missing_signature``, ``missing_timestamp``,
                ``bad_signature``, ``stale_timestamp`` or ``future_timestamp``.

        """
        if not signature:
            raise WebhookRejected(
                401, "missing_signature", f"the {SIGNATURE_HEADER} header is missing: is the webhook signed?"
            )
        if not timestamp:
            raise WebhookRejected(401, "missing_timestamp", f"the {TIMESTAMP_HEADER} header is missing")
        try:
            payload = body.decode("utf-8")
            valid = bool(self._webhook.verify_signature(payload, signature, timestamp))
        except (ValueError, TypeError, InvalidSignature):  # undecodable body, or not base64 / DER
            valid = False
        if not valid:
            raise WebhookRejected(
                401,
                "bad_signature",
                "the signature does not match the body and timestamp for the key in "
                "MOBILISE_SENDGRID_WEBHOOK_PUBLIC_KEY",
            )
        try:
            signed_at = int(timestamp)
        except ValueError:
            message = f"the {TIMESTAMP_HEADER} header is not a Unix time"
            raise WebhookRejected(401, "bad_timestamp", message) from None
        age = self._clock() - signed_at
        if age > self.max_age:
            raise WebhookRejected(
                401,
                "stale_timestamp",
                f"the signed timestamp is {age:.0f} s old, older than the {self.max_age:.0f} s allowed "
                "(MOBILISE_SENDGRID_WEBHOOK_MAX_AGE): refused as a possible replay",
            )
        if -age > _MAX_FUTURE:
            raise WebhookRejected(
                401,
                "future_timestamp",
                f"the signed timestamp is {-age:.0f} s in the future (at most {_MAX_FUTURE:.0f} s of clock "
                "skew is allowed): check the server's clock",
            )


_Text = Annotated[str, Field(min_length=1, max_length=1000)]


class SendGridEvent(BaseModel):
    """One event of SendGrid's Event Webhook, as far as mobilise reads it.

    Lenient where SendGrid is loose (unknown fields are kept and ignored; ``category``
    may be a string or a list), strict where the records need it.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    email: Annotated[str, Field(min_length=3, max_length=320, pattern=r"@")]
    """The recipient. Never logged above debug, never published."""
    event: Annotated[str, Field(min_length=1, max_length=64)]
    """processed, dropped, deferred, delivered, bounce, open, click, spamreport, unsubscribe, …"""
    sg_event_id: Annotated[str, Field(min_length=1, max_length=200)]
    """SendGrid's id of this event; the same on every retry of the request."""
    timestamp: int
    """When the event happened, Unix seconds."""
    sg_message_id: _Text | None = None
    """SendGrid's id of the message."""
    type: _Text | None = None
    """For bounces: ``bounce`` (the address is refused) or ``blocked`` (this message is)."""
    reason: str | None = None
    """The receiving server's or SendGrid's explanation; may quote the address."""
    status: _Text | None = None
    """SMTP status code of a bounce, e.g. ``5.1.1``."""
    bounce_classification: _Text | None = None
    """SendGrid's classification of a bounce."""
    response: str | None = None
    """The receiving server's answer, for deferrals."""
    attempt: str | int | None = None
    """Delivery attempt number, for deferrals."""
    category: str | list[str] | None = None
    """Categories of the message (``case:<case_id>`` among them)."""
    alert_id: _Text | None = None
    """custom_args set by the SendGrid sink: the alert."""
    event_id: _Text | None = None
    """custom_args: the case update."""
    case_id: _Text | None = None
    """custom_args: the case."""
    subscriber_id: _Text | None = None
    """custom_args: the subscriber."""


@dataclass(frozen=True)
class Feedback:
    """The records one event yields (either list may be empty)."""

    suppressions: list[Suppression] = field(default_factory=list)
    deliveries: list[DeliveryEvent] = field(default_factory=list)


def parse_events(body: bytes) -> tuple[list[SendGridEvent], list[str]]:
    """Read a webhook body: the events, and one line per element that is not a usable event.

    Elements that fail are reported, not fatal: SendGrid sends the same body again on any
    non-2xx answer, so refusing the whole request for one bad element would only repeat it.

    Raises:
        WebhookRejected: 400 ``not_an_event_array``: the body is not a JSON array of objects.

    """
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookRejected(400, "not_an_event_array", f"the body is not JSON: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise WebhookRejected(
            400, "not_an_event_array", "the body must be a JSON array of event objects, as SendGrid sends"
        )
    events: list[SendGridEvent] = []
    problems: list[str] = []
    for index, item in enumerate(data):
        try:
            events.append(SendGridEvent.model_validate(item))
        except ValidationError as exc:
            # Field names only: the values may be addresses.
            fields = ", ".join(".".join(map(str, e["loc"])) or "(event)" for e in exc.errors())
            problems.append(f"event {index}: invalid {fields}")
    return events, problems


def _redact(text: str | None) -> str | None:
    if not text:
        return None
    flat = _ADDRESS.sub("[address]", " ".join(text.split()))
    return flat if len(flat) <= _MAX_DETAIL else flat[: _MAX_DETAIL - 1] + "…"


def _detail(event: SendGridEvent) -> str | None:
    parts = [event.type, event.status, event.bounce_classification, _redact(event.reason or event.response)]
    return " · ".join(p for p in parts if p) or None


def _case_id(event: SendGridEvent) -> str | None:
    if event.case_id:
        return event.case_id
    categories = [event.category] if isinstance(event.category, str) else event.category or []
    return next((c.removeprefix("case:") for c in categories if c.startswith("case:")), None)


def _attempts(event: SendGridEvent) -> int:
    try:
        return max(1, int(event.attempt or 1))
    except ValueError:
        return 1


def kind_of(event: SendGridEvent) -> Literal["suppress", "record", "count"]:
    """What mobilise does with an event type: suppress (and record), record, or only count."""
    if event.event == "bounce" and event.type == "blocked":
        return "record"
    if event.event in _SUPPRESSING:
        return "suppress"
    return "record" if event.event in _RECORDED else "count"


def translate(event: SendGridEvent) -> Feedback:
    """The records ``event`` yields. Pure and deterministic.

    * bounce (but not a ``blocked`` one: the recipient's server refused that message, not
      the address), dropped, spamreport, unsubscribe and group_unsubscribe: a Suppression
      for the address's subscriber id (:func:`~schemas.subscriber_id_for`) and, when the
      custom_args name another subscriber id, one for it too;
    * those and delivered, deferred, blocked, open and click: a DeliveryEvent, when the
      custom_args name the alert (events of messages mobilise did not send name none);
    * anything else (processed, group_resubscribe, …): nothing.
    """
    kind = kind_of(event)
    if kind == "count":
        return Feedback()
    at = datetime.fromtimestamp(event.timestamp, UTC)
    suppressions: list[Suppression] = []
    if kind == "suppress":
        reason, outcome = _SUPPRESSING[event.event]
        ids = [subscriber_id_for(event.email)]
        if event.subscriber_id and _ID.fullmatch(event.subscriber_id) and event.subscriber_id not in ids:
            ids.insert(0, event.subscriber_id)
        suppressions = [
            Suppression(
                subscriber_id=subscriber_id,
                reason=reason,
                source="sendgrid",
                occurred_at=at,
                provider_event_id=event.sg_event_id,
            )
            for subscriber_id in ids
        ]
    else:
        outcome = DeliveryOutcome.BLOCKED if event.event == "bounce" else _RECORDED[event.event]
    deliveries: list[DeliveryEvent] = []
    case_id = _case_id(event)
    if event.alert_id and event.event_id and case_id:
        deliveries.append(
            DeliveryEvent(
                alert_id=event.alert_id,
                event_id=event.event_id,
                case_id=case_id,
                subscriber_id=event.subscriber_id or subscriber_id_for(event.email),
                sink="sendgrid",
                outcome=outcome,
                provider_message_id=event.sg_message_id,
                attempts=_attempts(event),
                detail=_detail(event),
                provider_event_id=event.sg_event_id,
                at=at,
            )
        )
    return Feedback(suppressions=suppressions, deliveries=deliveries)
