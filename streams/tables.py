"""Changelog-backed tables whose writes name their partition explicitly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import faust

__all__ = ["PartitionedTable", "declare_table", "on_partition"]

_partition: ContextVar[int | None] = ContextVar("mobilise_table_partition", default=None)


@contextmanager
def on_partition(partition: int) -> Iterator[None]:
    """Make table writes inside the block go to ``partition``'s changelog.

    Faust takes the partition of the event being processed; inside a batch of events
    from several partitions that is the wrong one for all but the last. A record must
    land in the changelog partition of the data it describes, or it moves to the wrong
    worker on a rebalance.
    """
    token = _partition.set(partition)
    try:
        yield
    finally:
        _partition.reset(token)


class PartitionedTable(faust.Table[str, Any]):
    """A faust Table that honours :func:`on_partition`."""

    def partition_for_key(self, key: Any) -> int | None:
        """The partition set by :func:`on_partition`, else faust's choice."""
        explicit = _partition.get()
        if explicit is not None:
            return explicit
        return super().partition_for_key(key)


def declare_table(app: faust.App, name: str, partitions: int, help_text: str) -> PartitionedTable:
    """Declare a str → JSON table on ``app``."""
    table = PartitionedTable(
        app,
        name=name,
        default=None,
        beacon=app.tables.beacon,
        partitions=partitions,
        key_type=str,
        value_type=None,
        help=help_text,
    )
    app.tables.add(table)
    return table
