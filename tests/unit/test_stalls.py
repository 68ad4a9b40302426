"""The stall watch: which partitions are behind and not read, seen over time."""

from __future__ import annotations

import pytest

from streams.stalls import FetchState, StallWatch

STALL = 30.0


def state(position: int | None, end: int | None, *, held: bool = False, taken: bool = True) -> FetchState:
    return FetchState(position=position, end=end, held=held, taken=taken)


def test_a_partition_behind_at_the_same_position_for_the_whole_period_is_stalled() -> None:
    watch: StallWatch[str] = StallWatch(STALL)
    assert watch.observe(0.0, {"p0": state(5, 9)}) == {}
    assert watch.observe(STALL - 0.1, {"p0": state(5, 9)}) == {}
    assert watch.observe(STALL, {"p0": state(5, 9)}) == {"p0": 5}


def test_a_stalled_partition_is_reported_again_only_after_another_period() -> None:
    watch: StallWatch[str] = StallWatch(STALL)
    watch.observe(0.0, {"p0": state(5, 9)})
    assert watch.observe(STALL, {"p0": state(5, 9)}) == {"p0": 5}
    assert watch.observe(STALL + 10, {"p0": state(5, 9)}) == {}
    assert watch.observe(2 * STALL, {"p0": state(5, 9)}) == {"p0": 5}


def test_a_position_that_moves_starts_the_period_again() -> None:
    watch: StallWatch[str] = StallWatch(STALL)
    watch.observe(0.0, {"p0": state(5, 90)})
    watch.observe(20.0, {"p0": state(6, 90)})  # slow, but reading
    assert watch.observe(STALL, {"p0": state(6, 90)}) == {}
    assert watch.observe(20.0 + STALL, {"p0": state(6, 90)}) == {"p0": 6}


@pytest.mark.parametrize(
    "still",
    [
        state(9, 9),  # caught up: nothing to read
        state(9, 5),  # past the end the broker reports (it may report less than the true end)
        state(None, 9),  # being reset: faust or aiokafka is choosing the position
        state(5, None),  # the broker did not say
        state(5, 9, held=True, taken=True),  # records wait for a slow stage: not the consumer's fault
    ],
)
def test_a_partition_with_nothing_to_read_or_waiting_for_the_streams_is_never_stalled(
    still: FetchState,
) -> None:
    watch: StallWatch[str] = StallWatch(STALL)
    assert watch.observe(0.0, {"p0": still}) == {}
    assert watch.observe(STALL, {"p0": still}) == {}
    assert watch.observe(10 * STALL, {"p0": still}) == {}


def test_records_held_for_a_partition_the_streams_do_not_ask_for_are_a_stall() -> None:
    watch: StallWatch[str] = StallWatch(STALL)
    watch.observe(0.0, {"p0": state(5, 9, held=True, taken=False)})
    assert watch.observe(STALL, {"p0": state(5, 9, held=True, taken=False)}) == {"p0": 5}


def test_partitions_are_watched_each_on_its_own_and_forgotten_when_no_longer_assigned() -> None:
    watch: StallWatch[str] = StallWatch(STALL)
    watch.observe(0.0, {"p0": state(5, 9), "p1": state(3, 4)})
    assert watch.observe(STALL, {"p0": state(5, 9), "p1": state(4, 4)}) == {"p0": 5}
    # p0 moves to another worker and comes back: its period starts again.
    watch.observe(STALL + 1, {"p1": state(4, 4)})
    assert watch.observe(2 * STALL, {"p0": state(5, 9)}) == {}
    assert watch.observe(3 * STALL, {"p0": state(5, 9)}) == {"p0": 5}


def test_the_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stall_seconds must be positive"):
        StallWatch(0)
