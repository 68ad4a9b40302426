"""Rate limits of the web process: token buckets per key, in memory, on the injected clock.

A :class:`RateLimiter` gives each key (a client address, a subscriber id) a bucket of
``capacity`` tokens that refills continuously at ``capacity`` per ``period`` seconds: a key
may do ``capacity`` things at once, then one more each ``period / capacity`` seconds.
Nothing is shared between web replicas, and a restart forgets every bucket: the limits
stop floods from one client, they are not quotas.

Memory stays bounded: a bucket that has refilled is the same as no bucket, so full buckets
are dropped whenever the limiter holds more than :data:`PRUNE_ABOVE` keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PRUNE_ABOVE", "RateLimiter"]

PRUNE_ABOVE = 10_000
"""Keys held before full buckets are dropped."""


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """At most ``capacity`` acquisitions per ``period`` seconds for each key.

    Args:
        capacity: Tokens of a full bucket (the burst), at least 1.
        period: Seconds in which an empty bucket refills completely.
        clock: Current time in seconds (the web process's injected clock).

    Raises:
        ValueError: a capacity below 1 or a period that is not positive.

    """

    def __init__(self, capacity: int, period: float, *, clock: Callable[[], float]) -> None:
        if capacity < 1 or period <= 0:
            raise ValueError(f"a rate limit needs capacity >= 1 and period > 0, not {capacity}/{period}s")
        self.capacity = capacity
        self.period = period
        self._rate = capacity / period
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str) -> float | None:
        """Take a token for ``key``: None if it had one, else the seconds until it will.

        A refused acquisition takes nothing, so a client that keeps trying while limited
        is let through as soon as a token is back.
        """
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= PRUNE_ABOVE:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(tokens=float(self.capacity), updated=now)
        elif now > bucket.updated:  # a clock that steps back refills nothing
            bucket.tokens = min(float(self.capacity), bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self._rate

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        full = [
            key
            for key, bucket in self._buckets.items()
            if bucket.tokens + max(0.0, now - bucket.updated) * self._rate >= self.capacity
        ]
        for key in full:
            del self._buckets[key]
