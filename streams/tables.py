"""Changelog-backed tables whose writes name their partition explicitly."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import faust
from faust.streams import _current_event, current_event
from faust.types import CodecArg, FutureMessage

__all__ = ["PartitionedTable", "declare_table", "on_partition"]

_partition: ContextVar[int | None] = ContextVar("mobilise_table_partition", default=None)


@dataclass(frozen=True)
class _Message:
    partition: int


@dataclass(frozen=True)
class _StandInEvent:
    """What faust's on-disk store reads of the current event: its message's partition."""

    message: _Message


@contextmanager
def on_partition(partition: int) -> Iterator[None]:
    """Make table writes inside the block go to ``partition``'s changelog (and store).

    Faust takes the partition of the event being processed; inside a batch of events
    from several partitions that is the wrong one for all but the last. A record must
    land in the changelog partition of the data it describes, or it moves to the wrong
    worker on a rebalance. Outside any event (a timer releasing held alerts) there is no
    event at all, and faust's RocksDB store asserts one to choose its partition's
    database: a stand-in naming ``partition`` is current for the block then.
    """
    token = _partition.set(partition)
    outer = current_event()
    stand_in = (
        _StandInEvent(_Message(partition)) if outer is None or isinstance(outer, _StandInEvent) else None
    )
    # faust reads only .message.partition of it, and this event lives as long as the block.
    reference: Any = weakref.ref(stand_in) if stand_in is not None else None
    event_token = _current_event.set(reference) if reference is not None else None
    try:
        yield
    finally:
        if event_token is not None:
            _current_event.reset(event_token)
        _partition.reset(token)


class PartitionedTable(faust.Table[str, Any]):
    """A faust Table that honours :func:`on_partition`, and tells when its last write is durable."""

    last_written: asyncio.Future[Any] | None = None
    """The changelog record of the latest write: done once the broker acknowledged it."""

    def send_changelog(
        self,
        partition: int | None,
        key: Any,
        value: Any,
        key_serializer: CodecArg | None = None,
        value_serializer: CodecArg | None = None,
    ) -> FutureMessage:
        """Faust's, remembering the record's future in :attr:`last_written`."""
        written = super().send_changelog(partition, key, value, key_serializer, value_serializer)
        self.last_written = written
        return written

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
