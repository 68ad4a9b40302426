"""Scheduled waves: which people an update reaches when, the held batches, the cancelled waves.

A waved update's alerts are cut into batches per release time (:func:`release_groups`);
the delivery stage holds a batch whose time has not come in the changelog-backed table
``held-alerts`` (key: batch id; value ``{"partition": p, "batch": <AlertBatch JSON>}``) and
releases it when the clock reaches its ``release_at``. Cancellations arrive on every
partition and are kept in ``cancelled-waves`` (key ``<wave_id>@<partition>``, so each
partition's copy is its own row); the in-memory indexes of both are rebuilt from the tables
after every rebalance, like the acted and sent state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from schemas import (
    AlertBatch,
    MatchReason,
    PublicCase,
    Subscription,
    WaveCancellation,
    release_at,
    reminded_event_id,
    zone_for,
)

from .records import DeadLetters, RawEvent
from .tables import PartitionedTable, on_partition

__all__ = ["CancellationIntake", "CancelledWaves", "Clock", "HeldAlerts", "file_clock", "release_groups"]

log = structlog.get_logger(__name__)

Clock = Callable[[], float]
"""Seconds since the epoch, like :func:`time.time`; injected so tests drive time."""


def file_clock(path: Path) -> Clock:
    """A clock that reads the epoch seconds written in ``path`` (``MOBILISE_CLOCK_FILE``).

    For rehearsals and tests that run a day of action through a real worker without
    waiting: whoever drives time rewrites the file (atomically, by a rename). A read that
    fails keeps the last time read, so time never jumps back to the system clock.
    """
    last = [time.time()]

    def now() -> float:
        try:
            last[0] = float(path.read_text("ascii").strip())
        except (OSError, ValueError):
            log.warning("clock_file.unreadable", path=str(path))
        return last[0]

    return now


def release_groups(
    case: PublicCase, people: Iterable[tuple[Subscription, MatchReason]]
) -> list[tuple[datetime | None, list[tuple[Subscription, MatchReason]]]]:
    """``people`` grouped by when the case's wave releases their alert, earliest first.

    Without a wave everyone is in one group released at once (``None``). The order of
    people within a group is kept, so a re-match builds the same batches.
    """
    wave = case.action_call.wave if case.action_call is not None else None
    listed = list(people)
    if wave is None:
        return [(None, listed)] if listed else []
    groups: dict[datetime, list[tuple[Subscription, MatchReason]]] = {}
    for subscription, reason in listed:
        when = release_at(wave, zone_for(subscription.time_zone, subscription.home_country))
        groups.setdefault(when, []).append((subscription, reason))
    return [(when, groups[when]) for when in sorted(groups)]


def _batch_of(row: Any) -> tuple[int, AlertBatch] | None:
    if not isinstance(row, dict) or not isinstance(row.get("partition"), int):
        return None
    try:
        return row["partition"], AlertBatch.model_validate_json(row["batch"])
    except (KeyError, TypeError, ValidationError):
        return None


class HeldAlerts:
    """Alert batches held for a wave, on the partitions this worker owns.

    The table is the durable copy (a restart or a rebalance loses nothing held); the
    in-memory map of owned partitions is rebuilt from it by :meth:`assign`. A row is
    deleted (:meth:`release`) only after what became of its alerts was recorded.
    """

    def __init__(self, table: PartitionedTable) -> None:
        self._table = table
        self._held: dict[str, tuple[int, AlertBatch]] = {}
        self._owned: frozenset[int] = frozenset()

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, batch_id: object) -> bool:
        return batch_id in self._held

    @property
    def people(self) -> int:
        """Alerts in the held batches."""
        return sum(len(batch.recipients) for _, batch in self._held.values())

    def assign(self, partitions: Iterable[int], rows: Iterable[tuple[str, Any]]) -> int:
        """Hold exactly the rows of ``partitions`` found in ``rows`` (the table); return how many."""
        self._owned = frozenset(partitions)
        self._held = {}
        for batch_id, row in rows:
            found = _batch_of(row)
            if found is None:
                if row is not None:
                    log.warning("held_alerts.unreadable", batch_id=batch_id)
                continue
            if found[0] in self._owned:
                self._held[batch_id] = found
        return len(self._held)

    def reminded_events(self) -> set[str]:
        """The updates that the held reminders remind of."""
        return {reminded_event_id(batch.event_id) for _, batch in self._held.values() if batch.reminder}

    def hold(self, batch: AlertBatch, partition: int) -> bool:
        """Keep ``batch`` of ``partition`` until its release; False if it was held already."""
        if batch.batch_id in self._held:
            return False
        with on_partition(partition):
            self._table[batch.batch_id] = {"partition": partition, "batch": batch.model_dump_json()}
        self._held[batch.batch_id] = (partition, batch)
        return True

    def due(self, now: float, cancelled: CancelledWaves) -> list[tuple[int, AlertBatch]]:
        """Held batches to settle at ``now``: those of a cancelled wave, and those whose time came.

        Never early: a batch is due only when ``now >= release_at``. Earliest first.
        """
        found = [
            (partition, batch)
            for partition, batch in self._held.values()
            if (batch.wave_id is not None and batch.wave_id in cancelled)
            or batch.release_at is None
            or now >= batch.release_at.timestamp()
        ]
        return sorted(found, key=lambda pb: pb[1].release_at.timestamp() if pb[1].release_at else 0.0)

    def release(self, batch_id: str) -> None:
        """Forget a settled batch, on its partition's changelog too."""
        held = self._held.pop(batch_id, None)
        if held is not None:
            with on_partition(held[0]):
                self._table.pop(batch_id, None)


class CancelledWaves:
    """Wave ids called off, as learnt from the copies on this worker's partitions.

    A cancellation is a fact wherever it was read, so ids stay known when a partition
    moves away (as with :class:`~streams.sent.SentAlerts`).
    """

    def __init__(self, table: PartitionedTable) -> None:
        self._table = table
        self._ids: set[str] = set()

    def __contains__(self, wave_id: object) -> bool:
        return wave_id in self._ids

    def load(self, rows: Iterable[tuple[str, Any]]) -> int:
        """Learn the wave ids of ``rows`` (the table after a recovery); return how many are known."""
        for _, row in rows:
            if isinstance(row, dict) and isinstance(row.get("wave_id"), str):
                self._ids.add(row["wave_id"])
        return len(self._ids)

    def record(self, cancellation: WaveCancellation, partition: int) -> bool:
        """Remember ``cancellation`` read on ``partition``; False if that copy was known already."""
        key = f"{cancellation.wave_id}@{partition}"
        fresh = cancellation.wave_id not in self._ids
        with on_partition(partition):
            if self._table.get(key) is None:
                self._table[key] = {"partition": partition, **cancellation.model_dump(mode="json")}
            else:
                fresh = False
        self._ids.add(cancellation.wave_id)
        return fresh


class CancellationIntake:
    """Applies records of the wave-cancellations topic: each copy is kept on its partition.

    An invalid record goes to dead-letters with the reason. The same copy twice changes nothing.
    """

    stage = "wave-cancellations"

    def __init__(self, *, cancelled: CancelledWaves, dead_letters: DeadLetters) -> None:
        self._cancelled = cancelled
        self._dead_letters = dead_letters

    async def process(self, event: RawEvent) -> None:
        """Record one cancellation copy."""
        partition = event.message.partition
        cancellation = await self._dead_letters.read(WaveCancellation, event, stage=self.stage)
        if cancellation is None:
            return
        fresh = self._cancelled.record(cancellation, partition)
        log.info(
            "wave.cancelled" if fresh else "wave.cancelled_already",
            wave_id=cancellation.wave_id,
            case_id=cancellation.case_id,
            cancelled_by=cancellation.cancelled_by,
            partition=partition,
        )
