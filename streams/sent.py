"""The record of what the sink accepted: alert ids, durable in a changelog-backed table.

The table ``sent-alerts`` has one row per alert batch (key: its batch id), holding every
alert id of that batch the sink accepted. One row per batch rather than per alert keeps
the changelog to one record per sink batch; an in-memory set of the ids answers the
per-alert question. Rows written by earlier versions, keyed by the alert id itself, are
read the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
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

    def record(self, batch_id: str, partition: int, alert_ids: Iterable[str], sink: str) -> None:
        """Add ``alert_ids`` to the row of ``batch_id`` on ``partition``'s changelog.

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
                "at": datetime.now(UTC).isoformat(),
                "alerts": [*known, *fresh],
            }
        self._ids.update(fresh)
        # (The tables of the unit tests are dicts: nothing to wait for there.)
        self._unacknowledged = getattr(self._table, "last_written", None)

    async def durable(self) -> None:
        """Wait until the broker has the rows recorded so far: their changelog is acknowledged.

        Raises:
            kafka.errors.KafkaError: the broker did not take the row (after the client's retries).

        """
        written, self._unacknowledged = self._unacknowledged, None
        if written is not None:
            await written


def _ids_of(key: str, row: Any) -> list[str]:
    if isinstance(row, dict) and isinstance(row.get("alerts"), list):
        return [a for a in row["alerts"] if isinstance(a, str)]
    return [key]  # a row of one alert, keyed by its id
