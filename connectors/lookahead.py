"""Work a sink prepares for its next batch while the batch before is still being delivered.

The delivery stage hands a sink one batch at a time (that is what keeps the duplicate
window at one batch), but it knows the next batch before the current one is done. A sink
that renders or encodes before it sends does that part for the next batch in
:meth:`connectors.base.Sink.prepare`, through a :class:`Lookahead`; :meth:`~Lookahead.take`
in ``deliver`` then finds it done. Only work without effects outside may be prepared.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from schemas import Alert

__all__ = ["Lookahead", "alert_ids"]

T = TypeVar("T")


def _forget(task: asyncio.Future[Any]) -> None:
    # Read so that a prepared batch nobody took does not report an unretrieved exception:
    # deliver() does the work again, and raises there.
    if not task.cancelled():
        task.exception()


class Lookahead(Generic[T]):
    """The prepared work of the next batches (the ``depth`` most recent), keyed by their records.

    Two by default: the delivery stage may read and prepare the batch after next while the
    next one waits for the current one to be recorded.
    """

    def __init__(self, depth: int = 2) -> None:
        self._depth = depth
        self._tasks: OrderedDict[Hashable, asyncio.Future[T]] = OrderedDict()

    def start(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> None:
        """Begin ``work`` for the batch ``key`` (its record ids), unless it is being prepared already."""
        if key in self._tasks:
            return
        task = asyncio.ensure_future(work())
        task.add_done_callback(_forget)
        self._tasks[key] = task
        while len(self._tasks) > self._depth:
            _, oldest = self._tasks.popitem(last=False)
            oldest.cancel()

    async def take(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        """The prepared result of ``key`` if it was prepared, else ``work``'s.

        Batches prepared before ``key`` are dropped with it: batches are delivered in the
        order they were prepared, so those will not come any more (or are retries, which
        are worked out afresh).
        """
        if key not in self._tasks:
            return await work()
        while True:
            earlier, task = self._tasks.popitem(last=False)
            if earlier == key:
                return await task
            task.cancel()

    def discard(self) -> None:
        """Forget every prepared batch (a sink being closed)."""
        while self._tasks:
            _, task = self._tasks.popitem(last=False)
            with contextlib.suppress(Exception):
                task.cancel()


def alert_ids(alerts: Sequence[Alert]) -> tuple[str, ...]:
    """The key of a batch of alerts in a :class:`Lookahead`."""
    return tuple(alert.alert_id for alert in alerts)
