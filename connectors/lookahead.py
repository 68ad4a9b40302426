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
    """The prepared work of one batch (the most recent :meth:`start`), keyed by its records."""

    def __init__(self) -> None:
        self._key: Hashable | None = None
        self._task: asyncio.Future[T] | None = None

    def start(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> None:
        """Begin ``work`` for the batch ``key`` (its record ids), replacing any batch prepared before."""
        self.discard()
        self._key = key
        self._task = asyncio.ensure_future(work())
        self._task.add_done_callback(_forget)

    async def take(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        """The prepared result if ``key`` was prepared, else ``work``'s; nothing is prepared after."""
        task, prepared = self._task, self._key == key
        self._task = self._key = None
        if task is not None and prepared:
            return await task
        if task is not None:
            task.cancel()
        return await work()

    def discard(self) -> None:
        """Forget the prepared batch, if any (a sink being closed)."""
        task, self._task, self._key = self._task, None, None
        if task is not None:
            with contextlib.suppress(Exception):
                task.cancel()


def alert_ids(alerts: Sequence[Alert]) -> tuple[str, ...]:
    """The key of a batch of alerts in a :class:`Lookahead`."""
    return tuple(alert.alert_id for alert in alerts)
