"""Token buckets per key on an injected clock: bursts, refills, separate keys, bounded memory."""

from __future__ import annotations

import pytest

from mobilise.web import rate_limit
from mobilise.web.rate_limit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_may_burst_to_the_capacity_then_waits_for_a_token() -> None:
    clock = Clock()
    limiter = RateLimiter(5, 600.0, clock=clock)
    assert [limiter.acquire("client") for _ in range(5)] == [None] * 5
    assert limiter.acquire("client") == pytest.approx(120.0)
    clock.now += 60
    assert limiter.acquire("client") == pytest.approx(60.0)  # refused tries take nothing
    clock.now += 60
    assert limiter.acquire("client") is None
    assert limiter.acquire("client") == pytest.approx(120.0)
    assert limiter.acquire("another") is None  # keys are counted apart


def test_an_idle_key_refills_to_the_capacity_and_no_more() -> None:
    clock = Clock()
    limiter = RateLimiter(3, 3600.0, clock=clock)
    for _ in range(3):
        limiter.acquire("a")
    clock.now += 10 * 3600
    assert [limiter.acquire("a") for _ in range(4)] == [None, None, None, pytest.approx(1200.0)]


def test_a_clock_stepping_back_refills_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 60.0, clock=clock)
    assert limiter.acquire("a") is None
    clock.now -= 3600
    assert limiter.acquire("a") is not None


def test_full_buckets_are_dropped_when_there_are_too_many_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rate_limit, "PRUNE_ABOVE", 10)
    clock = Clock()
    limiter = RateLimiter(2, 10.0, clock=clock)
    for i in range(10):
        limiter.acquire(f"k{i}")
    clock.now += 10  # every bucket is full again: forgetting them changes nothing
    limiter.acquire("busy")
    limiter.acquire("busy")
    assert len(limiter) == 1
    assert limiter.acquire("busy") is not None  # a bucket in use is kept


def test_a_limit_must_allow_something() -> None:
    with pytest.raises(ValueError, match="capacity"):
        RateLimiter(0, 10.0, clock=Clock())
    with pytest.raises(ValueError, match="period"):
        RateLimiter(1, 0.0, clock=Clock())
