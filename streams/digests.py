"""Digests: what people who chose a daily or weekly digest have not had yet, and their emails.

The table ``digests`` has one row per such person, keyed by subscriber_id like the
``subscribers`` table (so it moves with their shard and an erasure drops it):
``{"partition": p, "pending": {event_id: entry}, "sent": {event_id: due}}``. An entry holds
the update's public case and ``due``, the digest it belongs to: the first local morning
after the update was matched (every day, or Mondays) in the person's zone. Which digest an
update joins is fixed when it is matched, so the digest due at one instant always holds the
same updates, however often it is built: after a crash it is built again with the same
alert ids, which the delivery stage's sent state never lets through twice. ``sent`` keeps
the event ids that went out in a digest for :data:`SENT_KEPT`, so that a replayed update
(its fan-out record read again after a restart) does not join the next digest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import faust
import structlog
from pydantic import ValidationError

from schemas import (
    AlertBatch,
    DigestEntry,
    MatchReason,
    PublicCase,
    Recipient,
    Subscription,
    alert_id_for,
    digest_event_id_for,
    local_instant,
    zone_for,
)
from schemas._base import stable_id

from .shards import SubscriberShards
from .tables import PartitionedTable, on_partition
from .waves import Clock

__all__ = [
    "DIGEST_FREQUENCIES",
    "SENT_KEPT",
    "DigestBook",
    "DigestSender",
    "digest_due_at",
    "digest_entries",
    "wants_digest",
]

log = structlog.get_logger(__name__)

DigestFrequency = Literal["daily", "weekly"]
DIGEST_FREQUENCIES: frozenset[str] = frozenset({"daily", "weekly"})

SENT_KEPT = timedelta(days=15)
"""How long an update that went out in a digest is remembered, against replays."""

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def wants_digest(subscription: Subscription, case: PublicCase) -> bool:
    """Whether ``case`` waits for the person's digest instead of going at once."""
    return subscription.frequency in DIGEST_FREQUENCIES and not case.bypass_digests


def digest_due_at(
    frequency: str, zone: str, after: datetime, *, local_time: str = "08:00", weekday: str = "monday"
) -> datetime:
    """The first digest time strictly after ``after``, as an aware UTC datetime.

    That is ``local_time`` in ``zone``, every day (``daily``) or on ``weekday`` (``weekly``).
    """
    local_day = after.astimezone(ZoneInfo(zone)).date()
    wanted = _WEEKDAYS.index(weekday)
    for offset in range(9):
        day = local_day + timedelta(days=offset)
        if frequency == "weekly" and day.weekday() != wanted:
            continue
        candidate = local_instant(day, local_time, zone)
        if candidate > after:
            return candidate
    raise AssertionError("a week always has the weekday")  # pragma: no cover


def digest_entries(pending: Iterable[tuple[str, PublicCase]]) -> tuple[DigestEntry, ...]:
    """The entries of a digest from ``(event_id, case)`` pairs: the latest update per case.

    Latest by ``occurred_at`` (then event id, so the choice is the same every time); the
    statuses of the earlier ones are listed, oldest first. Cases with an open action call
    come first, then the others; each group with the latest change first.
    """
    by_case: dict[str, list[tuple[str, PublicCase]]] = {}
    for event_id, case in pending:
        by_case.setdefault(case.case_id, []).append((event_id, case))
    entries = []
    for updates in by_case.values():
        updates.sort(key=lambda u: (u[1].occurred_at, u[0]))
        event_id, latest = updates[-1]
        earlier = tuple(case.status.value for _, case in updates[:-1])
        entries.append(DigestEntry(event_id=event_id, case=latest, earlier=earlier))
    entries.sort(key=lambda e: (e.case.action_call is None, -e.case.occurred_at.timestamp(), e.event_id))
    return tuple(entries)


def _row(value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and isinstance(value.get("pending"), dict):
        return value
    return {"partition": None, "pending": {}, "sent": {}}


def _due_of(entry: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(entry["due"])
    except (KeyError, TypeError, ValueError):
        return None


class DigestBook:
    """The digests waiting on the partitions this worker owns.

    The table is the durable copy; the in-memory index (partition → subscriber id → the
    earliest due time of their pending updates) is rebuilt from it by :meth:`assign`.
    """

    def __init__(
        self, table: PartitionedTable, *, local_time: str = "08:00", weekday: str = "monday"
    ) -> None:
        self._table = table
        self._local_time = local_time
        self._weekday = weekday
        self._due: dict[int, dict[str, datetime]] = {}

    def __len__(self) -> int:
        """People with a digest waiting, on the owned partitions."""
        return sum(len(people) for people in self._due.values())

    def assign(self, partitions: Iterable[int], rows: Iterable[tuple[str, Any]]) -> int:
        """Keep exactly ``partitions``, indexed from ``rows`` (the table); return people waiting."""
        owned = set(partitions)
        self._due = {p: {} for p in owned}
        for subscriber_id, value in rows:
            row = _row(value)
            people = self._due.get(row["partition"]) if isinstance(row["partition"], int) else None
            if people is None:
                continue
            dues = [d for d in map(_due_of, row["pending"].values()) if d is not None]
            if dues:
                people[subscriber_id] = min(dues)
        return len(self)

    def add(
        self, subscription: Subscription, case: PublicCase, event_id: str, partition: int, now: datetime
    ) -> bool:
        """Put ``case`` (update ``event_id``) in the person's next digest.

        False if it was there already, or went out in one.
        """
        assert subscription.frequency in DIGEST_FREQUENCIES
        subscriber_id = subscription.subscriber_id
        with on_partition(partition):
            row = _row(self._table.get(subscriber_id))
            if event_id in row["pending"] or event_id in row["sent"]:
                return False
            zone = zone_for(subscription.time_zone, subscription.home_country)
            due = digest_due_at(
                subscription.frequency, zone, now, local_time=self._local_time, weekday=self._weekday
            )
            pending = {
                **row["pending"],
                event_id: {"due": due.isoformat(), "case": case.model_dump(mode="json")},
            }
            self._table[subscriber_id] = {"partition": partition, "pending": pending, "sent": row["sent"]}
        people = self._due.get(partition)
        if people is not None:
            people[subscriber_id] = min(people.get(subscriber_id, due), due)
        return True

    def due(self, now: datetime) -> list[tuple[int, str, datetime]]:
        """``(partition, subscriber_id, due)`` of every digest whose time has come, earliest first."""
        found = [
            (partition, subscriber_id, due)
            for partition, people in self._due.items()
            for subscriber_id, due in people.items()
            if due <= now
        ]
        return sorted(found, key=lambda f: (f[2], f[0], f[1]))

    def pending(self, partition: int, subscriber_id: str, due: datetime) -> list[tuple[str, PublicCase]]:
        """The updates of the person's digest due at ``due``: ``(event_id, case)``."""
        with on_partition(partition):
            row = _row(self._table.get(subscriber_id))
        found = []
        for event_id, entry in row["pending"].items():
            if _due_of(entry) != due:
                continue
            try:
                found.append((event_id, PublicCase.model_validate(entry["case"], strict=False)))
            except (KeyError, ValidationError):
                log.warning("digest.unreadable_entry", subscriber_id=subscriber_id, event_id=event_id)
        return found

    def settle(self, partition: int, subscriber_id: str, due: datetime, event_ids: Iterable[str]) -> None:
        """The digest due at ``due`` went out (or was dropped): forget its updates, remember their ids."""
        with on_partition(partition):
            row = _row(self._table.get(subscriber_id))
            pending = {k: v for k, v in row["pending"].items() if _due_of(v) != due}
            horizon = due - SENT_KEPT
            sent = {k: v for k, v in row["sent"].items() if datetime.fromisoformat(v) > horizon}
            sent.update(dict.fromkeys(event_ids, due.isoformat()))
            if pending or sent:
                self._table[subscriber_id] = {"partition": partition, "pending": pending, "sent": sent}
            else:
                self._table.pop(subscriber_id, None)
        people = self._due.get(partition)
        if people is None:
            return
        dues = [d for d in map(_due_of, pending.values()) if d is not None]
        if dues:
            people[subscriber_id] = min(dues)
        else:
            people.pop(subscriber_id, None)

    def forget(self, subscriber_id: str, partition: int) -> bool:
        """Erase what is kept of ``subscriber_id``; False if nothing was."""
        with on_partition(partition):
            found = self._table.get(subscriber_id) is not None
            if found:
                self._table.pop(subscriber_id, None)
        self._due.get(partition, {}).pop(subscriber_id, None)
        return found


def _digest_batch_id(
    digest_event_id: str, partition: int, language: str, key: tuple[Any, ...], index: int
) -> str:
    return "alb-" + stable_id(digest_event_id, partition, language, list(key), index, length=32)


class DigestSender:
    """Builds the digests that are due and hands them to the alerts topic.

    People of one partition with the same digest (due time, frequency, language and the same
    updates) share alert batches of at most ``batch_size``; each person's alert id is
    ``alert_id_for(digest_event_id_for(frequency, due), subscriber_id)``. A person no longer
    subscribed, not confirmed, or erased gets nothing: their pending updates are dropped.
    A digest's updates are forgotten only after its batches were acknowledged by the broker.
    """

    def __init__(
        self,
        *,
        book: DigestBook,
        shards: SubscriberShards,
        alerts_topic: faust.TopicT,
        batch_size: int,
        clock: Clock,
        encode: Callable[[AlertBatch], list[tuple[bytes, bytes]]],
        on_sent: Callable[[int], None] = lambda people: None,
    ) -> None:
        self._book = book
        self._shards = shards
        self._alerts = alerts_topic
        self._batch_size = batch_size
        self._clock = clock
        self._encode = encode
        self._on_sent = on_sent

    async def send_due(self) -> int:
        """Send every digest due now; return how many people got one."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        due = self._book.due(now)
        groups: dict[tuple[Any, ...], list[tuple[Subscription, list[str]]]] = {}
        entries_of: dict[tuple[Any, ...], tuple[DigestEntry, ...]] = {}
        dropped = 0
        for partition, subscriber_id, when in due:
            pending = self._book.pending(partition, subscriber_id, when)
            shard = self._shards.shard(partition)
            subscription = shard.get(subscriber_id) if shard is not None else None
            if subscription is None or not subscription.confirmed or not pending:
                self._book.settle(partition, subscriber_id, when, [])
                dropped += 1
                continue
            entries = digest_entries(pending)
            # Someone who went back to immediate alerts still gets what was waiting, in one digest.
            frequency: DigestFrequency = "weekly" if subscription.frequency == "weekly" else "daily"
            key = (partition, when, frequency, subscription.language, tuple(e.event_id for e in entries))
            entries_of[key] = entries
            groups.setdefault(key, []).append((subscription, [event_id for event_id, _ in pending]))
        if dropped:
            log.info("digests.dropped", people=dropped, detail="unsubscribed, unconfirmed or nothing pending")
        sent = 0
        for key, people in groups.items():
            partition, when, frequency, language, event_ids = key
            entries = entries_of[key]
            digest_event_id = digest_event_id_for(frequency, when)
            pending_sends = []
            for index, start in enumerate(range(0, len(people), self._batch_size)):
                chunk = people[start : start + self._batch_size]
                batch = AlertBatch(
                    batch_id=_digest_batch_id(digest_event_id, partition, language, event_ids, index),
                    event_id=digest_event_id,
                    language=language,
                    case=entries[0].case,
                    digest=entries,
                    digest_frequency=frequency,
                    created_at=now,
                    recipients=tuple(
                        Recipient(
                            alert_id=alert_id_for(digest_event_id, s.subscriber_id),
                            subscriber_id=s.subscriber_id,
                            email=str(s.email),
                            name=s.name,
                            reason=MatchReason(),
                            home_country=s.home_country,
                        )
                        for s, _ in chunk
                    ),
                )
                for record_key, value in self._encode(batch):
                    pending_sends.append(
                        await self._alerts.send(key=record_key, value=value, partition=partition)
                    )
            await asyncio.gather(*pending_sends)
            for subscription, ids in people:
                self._book.settle(partition, subscription.subscriber_id, when, ids)
            sent += len(people)
            log.info(
                "digests.sent",
                digest_event_id=digest_event_id,
                partition=partition,
                frequency=frequency,
                language=language,
                due=when.isoformat(),
                cases=len(entries),
                people=len(people),
            )
        self._on_sent(sent)
        return sent
