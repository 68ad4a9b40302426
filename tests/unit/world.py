"""One partition of the pipeline in one process: the real stages on dict tables, a clock the test moves.

The matcher, the intakes, the digest sender and the delivery stage are the product's own
classes; only what faust and Kafka would give them is replaced: tables by dicts (they use
``get``, item assignment and ``pop``), topics by :class:`RecordingTopic`, the delivery
records producer by :class:`MemoryBulk`, the sink by :class:`MemorySink`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, ClassVar

from pydantic import BaseModel

from connectors.base import Sink, SinkOutcome
from schemas import (
    ActionTaken,
    Alert,
    AlertBatch,
    CaseUpdate,
    DeadLetter,
    DeliveryEvent,
    MatchReason,
    Subscription,
    Suppression,
    WaveCancellation,
)
from streams.acted import ActedCases, ActionIntake
from streams.alerting import Matcher, alert_batches, encode_batch
from streams.delivery import Delivery
from streams.digests import DigestBook, DigestSender
from streams.metrics import PipelineMetrics
from streams.records import DeadLetters
from streams.reminders import CaseStatuses, ReminderScreen
from streams.sent import SentAlerts
from streams.shards import SubscriberShards, SubscriptionIntake
from streams.waves import CancelledWaves, HeldAlerts

__all__ = ["MemoryBulk", "MemorySink", "Partition", "RecordingTopic", "batch_of", "raw_event"]


URGENT = CaseUpdate.model_validate_json(
    json.dumps(
        {
            "case_id": "bd-1",
            "status": "urgent_action",
            "title": {"en": "Fired"},
            "summary": {"en": "Twelve leaders dismissed."},
            "country": "BD",
            "issues": ["union_busting"],
            "occurred_at": "2026-03-01T00:00:00Z",
            "published_by": "p",
        }
    )
).public()
"""A public case for alert batches made by :func:`batch_of`."""


def batch_of(event_id: str, *emails: str) -> AlertBatch:
    """The alert batch of :data:`URGENT` under ``event_id`` for people at ``emails`` (in English)."""
    people = [
        (
            Subscription.model_validate_json(
                json.dumps(
                    {
                        "email": email,
                        "countries": ["BD"],
                        "interests": ["union_busting"],
                        "confirmed": True,
                        "created_at": "2026-01-01T00:00:00Z",
                    }
                )
            ),
            MatchReason(country="BD"),
        )
        for email in emails
    ]
    (batch,) = alert_batches(
        event_id=event_id,
        partition=0,
        case=URGENT,
        created_at=datetime(2026, 3, 1, tzinfo=UTC),
        people=people,
        batch_size=max(1, len(emails)),
    )
    return batch


class RecordingTopic:
    """A stand-in for a faust topic: remembers what was sent."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes, int | None]] = []

    async def send(
        self, *, key: bytes | None, value: bytes, partition: int | None = None
    ) -> asyncio.Future[None]:
        self.records.append((key, value, partition))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def raw_event(topic: str, key: str | None, value: bytes | None, partition: int = 0, offset: int = 0) -> Any:
    """What a faust agent's ``stream.events()`` yields, as far as the stages read it."""
    message = SimpleNamespace(
        key=key.encode() if key is not None else None,
        value=value,
        partition=partition,
        topic=topic,
        offset=offset,
    )
    return SimpleNamespace(message=message)


class _NoConfig(BaseModel):
    pass


class MemorySink(Sink[_NoConfig, Alert]):
    """Accepts everything and remembers the alerts handed to it."""

    name: ClassVar[str] = "memory"
    accepts = Alert
    Config = _NoConfig

    def __init__(self) -> None:
        super().__init__(_NoConfig())
        self.delivered: list[str] = []
        self.alerts: list[Alert] = []

    async def deliver(self, records: Sequence[Alert]) -> Sequence[SinkOutcome]:
        self.delivered.extend(r.alert_id for r in records)
        self.alerts.extend(records)
        return [SinkOutcome(record_id=r.alert_id, accepted=True) for r in records]


class MemoryBulk:
    """The delivery records producer: keeps the delivery events."""

    def __init__(self) -> None:
        self.events: list[DeliveryEvent] = []

    async def send(self, topic: str, partition: int, records: Any) -> int:
        self.events.extend(DeliveryEvent.model_validate_json(v) for _, v in records)
        return len(records)


class Partition:
    """Partition 0 of the pipeline: subscriptions, acted state, matcher, digests and delivery.

    Every table is a dict that outlives :meth:`restart`, which rebuilds the stages from them
    as a restarted worker would. ``now`` is the clock of the matcher, the digest sender and
    the delivery stage.
    """

    def __init__(self, *people: Subscription, now: datetime | None = None) -> None:
        self.now = (now or datetime(2026, 3, 1, 12, 0, tzinfo=UTC)).timestamp()
        self.subscribers: dict[str, Any] = {}
        self.table: dict[str, Any] = {}  # acted-cases
        self.digests_table: dict[str, Any] = {}
        self.statuses_table: dict[str, Any] = {}
        self.held_table: dict[str, Any] = {}
        self.sent_table: dict[str, Any] = {}
        self.cancelled_table: dict[str, Any] = {}
        self.letters = RecordingTopic()
        self.alerts = RecordingTopic()
        self.sink = MemorySink()
        self.bulk = MemoryBulk()
        self.metrics = PipelineMetrics()
        self._delivered_upto = 0
        self.restart()
        for person in people:
            self.subscribe(person.subscriber_id, person)

    def clock(self) -> float:
        return self.now

    def restart(self) -> None:
        """Build every stage again from the tables (what is in memory is lost)."""
        self.shards = SubscriberShards()
        self.shards.assign([0], list(self.subscribers.items()))
        self.acted = ActedCases(self.table)  # type: ignore[arg-type]  # uses get, set and pop
        self.acted.assign([0], list(self.table.items()))
        self.digests = DigestBook(self.digests_table)  # type: ignore[arg-type]  # as above
        self.digests.assign([0], list(self.digests_table.items()))
        statuses = CaseStatuses(self.statuses_table)  # type: ignore[arg-type]  # as above
        dead_letters = DeadLetters(self.letters)  # type: ignore[arg-type]  # only send()
        self.subscriptions = SubscriptionIntake(
            shards=self.shards,
            table=self.subscribers,  # type: ignore[arg-type]  # as above
            dead_letters=dead_letters,
            on_erased=[self.acted.forget, self.digests.forget],
        )
        self.actions = ActionIntake(
            acted=self.acted,
            subscribers=self.subscribers,  # type: ignore[arg-type]  # uses get
            dead_letters=dead_letters,
        )
        self.matcher = Matcher(
            shards=self.shards,
            acted=self.acted,
            alerts_topic=self.alerts,  # type: ignore[arg-type]  # only send()
            dead_letters=dead_letters,
            metrics=self.metrics,
            batch_size=1000,
            digests=self.digests,
            statuses=statuses,
            clock=self.clock,
        )
        self.digest_sender = DigestSender(
            book=self.digests,
            shards=self.shards,
            alerts_topic=self.alerts,  # type: ignore[arg-type]  # only send()
            batch_size=1000,
            clock=self.clock,
            encode=encode_batch,
        )
        self.held = HeldAlerts(self.held_table)  # type: ignore[arg-type]  # as above
        self.held.assign([0], list(self.held_table.items()))
        self.cancelled = CancelledWaves(self.cancelled_table)  # type: ignore[arg-type]  # as above
        self.cancelled.load(list(self.cancelled_table.items()))
        self.sent = SentAlerts(self.sent_table)  # type: ignore[arg-type]  # as above
        self.sent.load(list(self.sent_table.items()))
        self.delivery = Delivery(
            sink=self.sink,
            sent=self.sent,
            deliveries_topic="deliveries",
            bulk=self.bulk,  # type: ignore[arg-type]  # only send()
            dead_letters=dead_letters,
            max_attempts=3,
            metrics=self.metrics,
            held=self.held,
            cancelled=self.cancelled,
            alerts_topic="alerts",
            screen=ReminderScreen(
                shards=self.shards,
                acted=self.table,  # type: ignore[arg-type]  # uses get
                statuses=statuses,
                was_sent=self.sent.__contains__,
            ),
            clock=self.clock,
        )

    def subscribe(self, key: str, record: Subscription | Suppression | None) -> None:
        value = record.model_dump_json().encode() if record is not None else None
        asyncio.run(self.subscriptions.process(raw_event("subscriptions", key, value)))

    def act(self, record: ActionTaken, key: str | None = None, value: bytes | None = None) -> None:
        raw = value if value is not None else record.model_dump_json().encode()
        asyncio.run(self.actions.process(raw_event("actions-taken", key or record.subscriber_id, raw)))

    def match(self, update: CaseUpdate) -> list[AlertBatch]:
        """Match ``update``; the alert batches it produced (not delivered: see :meth:`deliver`)."""
        before = len(self.alerts.records)
        asyncio.run(
            self.matcher.process(raw_event("case-fanout", update.case_id, update.model_dump_json().encode()))
        )
        return [AlertBatch.model_validate_json(value) for _, value, _ in self.alerts.records[before:]]

    def send_digests(self) -> list[AlertBatch]:
        """Run the digest timer once; the digest batches it produced."""
        before = len(self.alerts.records)
        asyncio.run(self.digest_sender.send_due())
        return [AlertBatch.model_validate_json(value) for _, value, _ in self.alerts.records[before:]]

    def deliver(self) -> None:
        """Hand every alert record not yet read to the delivery stage, in order, then run its timer."""

        async def run() -> None:
            for _, value, _ in self.alerts.records[self._delivered_upto :]:
                await self.delivery.process(raw_event("alerts", None, value))
            self._delivered_upto = len(self.alerts.records)
            await self.delivery.release_due()

        asyncio.run(run())

    def cancel(self, cancellation: WaveCancellation) -> None:
        self.cancelled.record(cancellation, 0)

    def received(self) -> list[Alert]:
        """Every alert the sink accepted, in order."""
        return list(self.sink.alerts)

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.model_validate_json(value) for _, value, _ in self.letters.records]
