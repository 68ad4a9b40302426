"""The record of what the sink accepted: alert ids, durable in a changelog-backed table.

The table ``sent-alerts`` has one row per alert batch (key: its batch id), holding every
alert id of that batch the sink accepted. One row per batch rather than per alert keeps
the changelog to one record per sink batch; an in-memory set of the ids answers the
per-alert question. Rows written by earlier versions, keyed by the alert id itself, are
read the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import Any

from .tables import PartitionedTable, on_partition

__all__ = ["SentAlerts"]


class SentAlerts:
    """Alert ids accepted by the sink, on the partitions this worker has loaded."""

    def __init__(self, table: PartitionedTable) -> None:
        self._table = table
        self._ids: set[str] = set()
        self._unacknowledged: asyncio.Future[Any] | None = None

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._ids

    def load(self, rows: Iterable[tuple[str, Any]]) -> int:
        """Learn the ids of ``rows`` (the table after a recovery); return how many are known.

        Ids of partitions that moved away stay known: they were sent, wherever they are.
        """
        for key, row in rows:
            self._ids.update(_ids_of(key, row))
        return len(self._ids)

    def record(
        self, batch_id: str, partition: int, alert_ids: Iterable[str], sink: str, event_id: str
    ) -> None:
        """Add ``alert_ids``, alerts of ``event_id``, to the row of ``batch_id`` on its partition's changelog.

        The row is merged, never replaced: a batch delivered in parts (a retry, a replay
        after a crash, a re-match that put other people under the same id) keeps every id
        any part accepted.
        """
        fresh = [a for a in alert_ids if a not in self._ids]
        if not fresh:
            return
        old = self._table.get(batch_id)
        known = _ids_of(batch_id, old) if old is not None else []
        with on_partition(partition):
            self._table[batch_id] = {
                "partition": partition,
                "sink": sink,
                "event_id": event_id,
                "at": datetime.now(UTC).isoformat(),
                "alerts": [*known, *fresh],
            }
        self._ids.update(fresh)
        # (The tables of the unit tests are dicts: nothing to wait for there.)
        self._unacknowledged = getattr(self._table, "last_written", None)

    def expire(self, before: datetime, partitions: Collection[int], keep_events: Collection[str]) -> int:
        """Forget the rows of ``partitions`` recorded before ``before``; return how many ids went.

        Without this the set and the changelog grow with every alert ever sent. An id is
        needed only while its alert can be read again (the alerts topic keeps a week, Kafka
        up to a segment's age longer) and while a reminder of its update may still ask whether
        the call reached the person: rows of the updates in ``keep_events`` stay.
        """
        forgotten = 0
        for batch_id, row in list(self._table.items()):
            if not isinstance(row, dict) or row.get("partition") not in partitions:
                continue
            if row.get("event_id") in keep_events or not _recorded_before(row, before):
                continue
            ids = _ids_of(batch_id, row)
            with on_partition(row["partition"]):
                self._table.pop(batch_id, None)
            self._ids.difference_update(ids)
            forgotten += len(ids)
        return forgotten

    async def durable(self) -> None:
        """Wait until the broker has the rows recorded so far: their changelog is acknowledged.

        Raises:
            kafka.errors.KafkaError: the broker did not take the row (after the client's retries).

        """
        written, self._unacknowledged = self._unacknowledged, None
        if written is not None:
            await written


def _recorded_before(row: dict[str, Any], before: datetime) -> bool:
    try:
        return datetime.fromisoformat(row["at"]) < before
    except (KeyError, TypeError, ValueError):
        return False  # no readable time (a hand-made row): kept rather than guessed at


def _ids_of(key: str, row: Any) -> list[str]:
    if isinstance(row, dict) and isinstance(row.get("alerts"), list):
        return [a for a in row["alerts"] if isinstance(a, str)]
    return [key]  # a row of one alert, keyed by its id
