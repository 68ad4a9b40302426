"""Hand a batch to a sink until each record is accepted or given up on: the one retry loop.

The pipeline's delivery stage (email sinks) and the connector runtime (every other sink)
both deliver through :func:`deliver_with_retries`, so every sink gets the same error model:
a retryable failure is tried again with exponential backoff and jitter, as long as the
destination asks (``retry_after``) and up to ``max_attempts``; a permanent failure, or a
retryable one out of attempts, comes back as given up, for the caller to dead-letter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from pydantic import BaseModel

from mobilise.errors import RetryableError
from streams.retry import backoff_delay

from .base import Sink, SinkOutcome

__all__ = ["Attempted", "deliver_with_retries"]

log = structlog.get_logger(__name__)

R = TypeVar("R", bound=BaseModel)
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Attempted(Generic[R]):
    """What finally became of one record."""

    record: R
    accepted: bool
    """The sink took it (or already had it: ``duplicate``)."""
    attempts: int
    """How many times it was handed to the sink."""
    duplicate: bool = False
    provider_message_id: str | None = None
    error: str | None = None
    """Why it was given up on, when not accepted."""


async def deliver_with_retries(
    sink: Sink[Any, R],
    records: Sequence[R],
    *,
    max_attempts: int,
    max_delay: float = 60.0,
    sleep: Sleep = asyncio.sleep,
    on_retry: Callable[[int], None] | None = None,
    stopping: Callable[[], bool] | None = None,
) -> list[Attempted[R]]:
    """Deliver ``records`` through ``sink``, retrying what failed for a temporary reason.

    Args:
        sink: An open sink.
        records: The batch, each with a distinct :meth:`Sink.record_id`.
        max_attempts: Attempts per record before a retryable failure is given up on.
        max_delay: Ceiling of the backoff between attempts, in seconds.
        sleep: Waits between attempts (injected in tests).
        on_retry: Called with the number of records about to be tried again.
        stopping: Whether to give up waiting for the next attempt (the worker stops); the
            records still to try are then left out of the result, settled neither way.

    Returns:
        One :class:`Attempted` per record, in the order they were settled; without those left
        to try when ``stopping`` said so.

    """
    pending = {sink.record_id(r): r for r in records}
    settled: list[Attempted[R]] = []
    attempt = 0
    while pending:
        attempt += 1
        outcomes, retry_after = await _attempt(sink, list(pending.values()))
        retry: dict[str, R] = {}
        for record_id, record in pending.items():
            outcome = outcomes.get(record_id)
            if outcome is not None and outcome.accepted:
                settled.append(
                    Attempted(record, True, attempt, outcome.duplicate, outcome.provider_message_id)
                )
            elif outcome is not None and not outcome.retryable:
                settled.append(
                    Attempted(record, False, attempt, error=outcome.error or "rejected by the sink")
                )
            elif attempt >= max_attempts:
                why = outcome.error if outcome is not None and outcome.error else "no outcome"
                settled.append(
                    Attempted(record, False, attempt, error=f"gave up after {attempt} attempts: {why}")
                )
            else:
                retry[record_id] = record
                if outcome is not None and outcome.retry_after is not None:
                    retry_after = max(retry_after or 0.0, outcome.retry_after)
        pending = retry
        if pending:
            if on_retry is not None:
                on_retry(len(pending))
            delay = backoff_delay(attempt, cap=max_delay, retry_after=retry_after)
            log.warning(
                "delivery.retrying",
                sink=sink.name,
                records=len(pending),
                attempt=attempt,
                delay=round(delay, 3),
            )
            await sleep(delay)
            if stopping is not None and stopping():
                break
    return settled


async def _attempt(sink: Sink[Any, R], records: list[R]) -> tuple[dict[str, SinkOutcome], float | None]:
    try:
        outcomes = await sink.deliver(records)
    except RetryableError as exc:
        log.warning("delivery.batch_failed", sink=sink.name, records=len(records), error=str(exc))
        return {}, exc.retry_after
    return {o.record_id: o for o in outcomes}, None
