"""Finds input partitions the consumer has stopped reading, or read and lost, so that it reads them again.

faust and aiokafka sometimes leave one assigned partition unread after a rebalance or a
restart (faust's tracker: consumers that stall, partitions with no fetch since start). The
records wait on the broker, the worker says it is ready, and nothing fails, so nothing
retries: alerts are late forever. The watch compares, for each input partition the worker
owns, the consumer's position with the broker's end offset. A partition that is behind and
whose position has not moved for ``stall_seconds`` is stalled, unless the consumer holds
records for it that the streams are still to take (a slow stage, not a stall).

A partition can also be read and lost: handed on by the client, and then dropped before any
stream processed it. That is what faust did with the records fetched while it sought a new
assignment (streams/consumer.py now holds the flow during that seek): the position was at the
end, nothing was behind, and the records after the commit were in nobody's hands, never
processed and never committed. So a partition whose position is past its committed offset,
with no record held by the client and none with the streams (queued for one, unacknowledged,
or acknowledged and waiting for the commit), its position and commit unchanged for
``stall_seconds``, is lost, and is read again from the commit. Every effect is idempotent, so
reading again is safe. Records committed without being processed cannot be seen here.

:class:`StallWatch` only decides; the worker's timer (streams/app.py) reads the states from
the consumer and, for each partition it returns, logs it with what the consumer knew of it and
sends the consumer back to the offset returned: the position it already has for a stalled
partition (which drops what it held for the partition and fetches it again, skipping and
repeating nothing), the committed offset for a lost one.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["FetchState", "StallWatch"]

K = TypeVar("K", bound=Hashable)
"""A partition's key: faust's TP in the worker."""


@dataclass(frozen=True)
class FetchState:
    """What the consumer and the broker say of one assigned partition at one moment."""

    position: int | None
    """The next offset the consumer will hand to the streams; None while it is being reset."""
    end: int | None
    """The broker's end offset (the offset the next record will get); None if unknown."""
    held: bool
    """The consumer holds fetched records for the partition that the streams have not taken."""
    taken: bool
    """The streams ask the consumer for this partition's records (faust has it active)."""
    committed: int | None = None
    """The group's committed offset, where a worker that takes over starts; None if unknown."""
    pending: bool = False
    """The streams have records of the partition not yet committed: queued, being processed, or acked."""

    @property
    def behind(self) -> bool:
        """Records on the broker that the consumer has not handed on."""
        return self.position is not None and self.end is not None and self.position < self.end

    @property
    def waiting_for_streams(self) -> bool:
        """Held records the streams will take: the stages are slow, the consumer is not stuck."""
        return self.held and self.taken

    @property
    def unaccounted(self) -> bool:
        """Records past the commit that the consumer handed on and nobody has any more."""
        return (
            self.position is not None
            and self.committed is not None
            and self.position > self.committed
            and not self.held
            and not self.pending
        )


@dataclass
class _Still:
    at: tuple[int, int | None]
    """The position, and the committed offset for a lost partition (None for a stalled one)."""
    since: float


class StallWatch(Generic[K]):
    """Decides which partitions are stalled or lost, from their states seen over time.

    A partition is stalled once it has been behind, at the same position, for
    ``stall_seconds`` of observations; it is lost once its records past the commit have been
    unaccounted for (:attr:`FetchState.unaccounted`), with the same position and commit, that
    long. After it is reported, another full period has to pass before it is reported again,
    so a partition that stays stuck is fetched again once a period, not at every check. A
    lost partition read again from its commit that comes back to the very same position and
    commit had nothing there to read (offsets without records, such as compacted ones), and
    is not reported again for them.
    """

    def __init__(self, stall_seconds: float) -> None:
        if stall_seconds <= 0:
            raise ValueError("stall_seconds must be positive")
        self.stall_seconds = stall_seconds
        self._still: dict[K, _Still] = {}
        self._read_again: dict[K, tuple[int, int | None]] = {}

    def observe(self, now: float, states: Mapping[K, FetchState]) -> dict[K, int]:
        """Record the states seen at ``now`` (monotonic seconds); return the partitions to read again.

        Each comes with the offset to fetch it from: the position a stalled partition is stuck
        at, or the committed offset of a lost one (see :attr:`FetchState.unaccounted`).
        """
        found: dict[K, int] = {}
        for tp, state in states.items():
            at = _stuck_at(state)
            if at is None or self._read_again.get(tp) == at:
                self._still.pop(tp, None)
                continue
            still = self._still.get(tp)
            if still is None or still.at != at:
                self._still[tp] = _Still(at, now)
            elif now - still.since >= self.stall_seconds:
                position, committed = at
                found[tp] = committed if committed is not None else position
                self._still[tp] = _Still(at, now)
                if committed is not None:
                    self._read_again[tp] = at
        for tp in self._still.keys() - states.keys():  # no longer assigned
            del self._still[tp]
        for tp in self._read_again.keys() - states.keys():
            del self._read_again[tp]
        return found


def _stuck_at(state: FetchState) -> tuple[int, int | None] | None:
    """What must stay the same for the whole period for ``state`` to be stuck; None if it is not."""
    if state.position is None:
        return None
    if state.unaccounted:
        assert state.committed is not None
        return (state.position, state.committed)
    if state.behind and not state.waiting_for_streams:
        return (state.position, None)
    return None
