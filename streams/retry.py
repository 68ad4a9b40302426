"""How long to wait before trying a failed delivery again. A pure function."""

from __future__ import annotations

import random

__all__ = ["backoff_delay"]


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.5,
    cap: float = 60.0,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Exponential backoff with full jitter (uniform in [0, min(cap, base·2^(attempt-1))]),
    so that workers that failed together do not retry together. When the peer said how
    long to wait (``retry_after``), that is the floor.
    """
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    delay = (rng or random).uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap * 10))
    return delay
