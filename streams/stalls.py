"""Finds input partitions the consumer has stopped reading, so that it reads them again.

faust and aiokafka sometimes leave one assigned partition unread after a rebalance or a
restart (faust's tracker: consumers that stall, partitions with no fetch since start). The
records wait on the broker, the worker says it is ready, and nothing fails, so nothing
retries: alerts are late forever. The watch compares, for each input partition the worker
owns, the consumer's position with the broker's end offset. A partition that is behind and
whose position has not moved for ``stall_seconds`` is stalled, unless the consumer holds
records for it that the streams are still to take (a slow stage, not a stall).

:class:`StallWatch` only decides; the worker's timer (streams/app.py) reads the states from
the consumer and, for each stalled partition, logs it with what the consumer knew of it and
sends the consumer back to the position it already has (``RewindingConsumer.refetch``),
which drops what it held for the partition and fetches it again: no record is skipped and
none is read twice.
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

    @property
    def behind(self) -> bool:
        """Records on the broker that the consumer has not handed on."""
        return self.position is not None and self.end is not None and self.position < self.end

    @property
    def waiting_for_streams(self) -> bool:
        """Held records the streams will take: the stages are slow, the consumer is not stuck."""
        return self.held and self.taken


@dataclass
class _Still:
    position: int
    since: float


class StallWatch(Generic[K]):
    """Decides which partitions are stalled, from their states seen over time.

    A partition is stalled once it has been behind, at the same position, for
    ``stall_seconds`` of observations. After it is reported, another full period has to
    pass before it is reported again, so a partition that stays stuck is refetched once a
    period, not at every check.
    """

    def __init__(self, stall_seconds: float) -> None:
        if stall_seconds <= 0:
            raise ValueError("stall_seconds must be positive")
        self.stall_seconds = stall_seconds
        self._still: dict[K, _Still] = {}

    def observe(self, now: float, states: Mapping[K, FetchState]) -> dict[K, int]:
        """Record the states seen at ``now`` (monotonic seconds); return the stalled partitions.

        Each stalled partition comes with the position it is stuck at, where to fetch it again.
        """
        stalled: dict[K, int] = {}
        for tp, state in states.items():
            if not state.behind or state.waiting_for_streams or state.position is None:
                self._still.pop(tp, None)
                continue
            still = self._still.get(tp)
            if still is None or still.position != state.position:
                self._still[tp] = _Still(state.position, now)
            elif now - still.since >= self.stall_seconds:
                stalled[tp] = state.position
                self._still[tp] = _Still(state.position, now)
        for tp in self._still.keys() - states.keys():  # no longer assigned
            del self._still[tp]
        return stalled
