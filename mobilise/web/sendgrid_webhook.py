"""``POST /webhooks/sendgrid``: SendGrid's Event Webhook; ``GET /webhooks/sendgrid/stats``: its counters.

For each request, in order (a request refused at any step publishes nothing):

1. the signature and the freshness of the signed timestamp (401 with a JSON error saying
   which check failed; 503 when ``MOBILISE_SENDGRID_WEBHOOK_PUBLIC_KEY`` is not set);
2. the body: a JSON array of event objects (400 otherwise; a single unusable element is
   skipped and counted, since SendGrid would only send it again);
3. events whose ``sg_event_id`` this process already published are skipped (SendGrid
   retries for 24 hours, so events repeat);
4. the others become records (:func:`connectors.sendgrid_feedback.translate`):
   Suppressions on ``subscriptions`` (key: subscriber id) and DeliveryEvents on
   ``deliveries`` (key: subscriber id);
5. 200 only once Kafka acknowledged every record; 503 otherwise, and SendGrid retries.

Duplicates are also harmless beyond this process's memory (a restart, several replicas):
every record is a function of its event, ids included, so a repeat is the same record.

Addresses are never logged above debug and never published.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from connectors.sendgrid_feedback import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Feedback,
    SendGridEvent,
    WebhookRejected,
    WebhookVerifier,
    kind_of,
    parse_events,
    translate,
)
from mobilise.errors import RetryableError

from .publisher import Record
from .state import STATE

__all__ = ["FeedbackLedger", "RecentIds", "add_routes"]

log = structlog.get_logger(__name__)


class RecentIds:
    """The last ``capacity`` ids added, oldest forgotten first."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, item: str) -> None:
        """Remember ``item``, forgetting the oldest beyond the capacity."""
        self._ids[item] = None
        self._ids.move_to_end(item)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)


@dataclass
class FeedbackLedger:
    """The webhook's in-process memory: the event ids published, and counters since start."""

    seen: RecentIds = field(default_factory=RecentIds)
    requests: Counter[str] = field(default_factory=Counter)
    """accepted, and each rejection code."""
    events: Counter[str] = field(default_factory=Counter)
    """Published events by SendGrid event type (delivered, open, click, bounce, …)."""
    totals: Counter[str] = field(default_factory=Counter)
    """duplicates, invalid, unattributed, suppressions, deliveries."""

    def as_json(self) -> dict[str, Any]:
        """The counters, for ``GET /webhooks/sendgrid/stats``."""
        return {
            "requests": dict(self.requests),
            "events": dict(self.events),
            "duplicates": self.totals["duplicates"],
            "invalid": self.totals["invalid"],
            "unattributed": self.totals["unattributed"],
            "published": {
                "suppressions": self.totals["suppressions"],
                "deliveries": self.totals["deliveries"],
            },
        }


_LEDGER = web.AppKey("mobilise_sendgrid_ledger", FeedbackLedger)
_VERIFIER = web.AppKey("mobilise_sendgrid_verifier", WebhookVerifier)


def _error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status)


async def _receive(request: web.Request) -> web.Response:
    ledger = request.app[_LEDGER]
    verifier = request.app.get(_VERIFIER)
    if verifier is None:
        ledger.requests["not_configured"] += 1
        log.error(
            "sendgrid_webhook.unconfigured",
            fix="set MOBILISE_SENDGRID_WEBHOOK_PUBLIC_KEY to the Signed Event Webhook's verification key",
        )
        return _error(
            503,
            "not_configured",
            "this endpoint accepts only signed webhooks and has no verification key; set "
            "MOBILISE_SENDGRID_WEBHOOK_PUBLIC_KEY",
        )
    body = await request.read()
    try:
        verifier.verify(body, request.headers.get(SIGNATURE_HEADER), request.headers.get(TIMESTAMP_HEADER))
        events, problems = parse_events(body)
    except WebhookRejected as exc:
        ledger.requests[exc.code] += 1
        log.warning("sendgrid_webhook.rejected", code=exc.code, status=exc.status, detail=str(exc))
        return _error(exc.status, exc.code, str(exc))
    for problem in problems:
        log.warning("sendgrid_webhook.event_invalid", detail=problem)

    fresh: dict[str, SendGridEvent] = {}
    duplicates = 0
    for event in events:
        if event.sg_event_id in ledger.seen or event.sg_event_id in fresh:
            duplicates += 1
        else:
            fresh[event.sg_event_id] = event
    state = request.app[STATE]
    topics = state.topics
    records: list[Record] = []
    suppressions = deliveries = unattributed = 0
    translated: list[tuple[SendGridEvent, Feedback]] = [(event, translate(event)) for event in fresh.values()]
    for event, feedback in translated:
        records.extend(
            (topics.subscriptions, s.subscriber_id, s.model_dump_json().encode())
            for s in feedback.suppressions
        )
        records.extend(
            (topics.deliveries, d.subscriber_id, d.model_dump_json().encode()) for d in feedback.deliveries
        )
        suppressions += len(feedback.suppressions)
        deliveries += len(feedback.deliveries)
        unattributed += kind_of(event) != "count" and not feedback.deliveries
    try:
        await state.publisher.publish(records)
    except RetryableError as exc:
        ledger.requests["kafka_unavailable"] += 1
        log.error("sendgrid_webhook.not_published", events=len(fresh), error=str(exc))
        return _error(503, "kafka_unavailable", "the events could not be recorded; SendGrid will retry")

    # Only now, once Kafka has them: a failed request must be processed again when retried.
    for event, feedback in translated:
        ledger.seen.add(event.sg_event_id)
        ledger.events[event.event] += 1
        for suppression in feedback.suppressions:
            log.info(
                "sendgrid_webhook.suppression_published",
                subscriber_id=suppression.subscriber_id,
                reason=suppression.reason.value,
                source=suppression.source,
                suppression_id=suppression.event_id,
                alert_id=event.alert_id,
            )
    ledger.requests["accepted"] += 1
    ledger.totals.update(
        duplicates=duplicates,
        invalid=len(problems),
        unattributed=unattributed,
        suppressions=suppressions,
        deliveries=deliveries,
    )
    summary = {
        "events": len(events),
        "duplicates": duplicates,
        "invalid": len(problems),
        "suppressions": suppressions,
        "deliveries": deliveries,
    }
    log.info("sendgrid_webhook.accepted", **summary)
    return web.json_response(summary)


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[_LEDGER].as_json())


def add_routes(app: web.Application) -> None:
    """Add the webhook and its stats to ``app`` (after :data:`STATE` is set).

    Raises:
        ConfigurationError: the verification key cannot be loaded.

    """
    settings = app[STATE].settings
    app[_LEDGER] = FeedbackLedger()
    if settings.sendgrid_webhook_public_key is not None:
        app[_VERIFIER] = WebhookVerifier(
            settings.sendgrid_webhook_public_key,
            max_age=settings.sendgrid_webhook_max_age,
            clock=app[STATE].clock,
        )
    app.router.add_post("/webhooks/sendgrid", _receive)
    app.router.add_get("/webhooks/sendgrid/stats", _stats)
