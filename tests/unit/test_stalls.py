"""The stall watch: which partitions are behind and not read, seen over time."""

from __future__ import annotations

import pytest

from streams.stalls import FetchState, StallWatch

STALL = 30.0


def state(
    position: int | None,
    end: int | None,
    *,
    held: bool = False,
    taken: bool = True,
    committed: int | None = None,
    pending: bool = False,
) -> FetchState:
    return FetchState(
        position=position, end=end, held=held, taken=taken, committed=committed, pending=pending
    )


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


def test_records_past_the_commit_in_nobodys_hands_for_a_whole_period_are_read_again_from_it() -> None:
    # Read to the end (nothing behind), committed at 1, nothing held, nothing with the streams.
    lost = state(12, 12, committed=1)
    assert lost.unaccounted
    watch: StallWatch[str] = StallWatch(STALL)
    assert watch.observe(0.0, {"p0": lost}) == {}
    assert watch.observe(STALL - 0.1, {"p0": lost}) == {}
    assert watch.observe(STALL, {"p0": lost}) == {"p0": 1}


def test_a_lost_partition_that_is_also_behind_is_read_again_from_the_commit_not_the_position() -> None:
    watch: StallWatch[str] = StallWatch(STALL)
    watch.observe(0.0, {"p0": state(8, 12, committed=3)})
    assert watch.observe(STALL, {"p0": state(8, 12, committed=3)}) == {"p0": 3}


@pytest.mark.parametrize(
    "busy",
    [
        state(12, 12, committed=1, pending=True),  # the streams are processing them, or wait to commit them
        state(12, 12, committed=1, held=True),  # the client holds some for the streams
        state(12, 12, committed=12),  # all committed
        state(12, 12),  # no commit known
        state(None, 12, committed=1),  # being reset
    ],
)
def test_records_past_the_commit_that_someone_has_are_not_lost(busy: FetchState) -> None:
    assert not busy.unaccounted
    watch: StallWatch[str] = StallWatch(STALL)
    watch.observe(0.0, {"p0": busy})
    assert watch.observe(STALL, {"p0": busy}) == {}
    assert watch.observe(10 * STALL, {"p0": busy}) == {}


def test_a_commit_that_moves_starts_the_period_again() -> None:
    watch: StallWatch[str] = StallWatch(STALL)
    watch.observe(0.0, {"p0": state(12, 12, committed=1)})
    watch.observe(20.0, {"p0": state(12, 12, committed=2)})  # the streams commit between two looks
    assert watch.observe(STALL, {"p0": state(12, 12, committed=2)}) == {}
    assert watch.observe(20.0 + STALL, {"p0": state(12, 12, committed=2)}) == {"p0": 2}


def test_a_lost_partition_that_comes_back_the_same_after_a_refetch_is_not_reported_again() -> None:
    watch: StallWatch[str] = StallWatch(STALL)
    watch.observe(0.0, {"p0": state(12, 12, committed=10)})
    assert watch.observe(STALL, {"p0": state(12, 12, committed=10)}) == {"p0": 10}
    # Read again from 10, the position is back at 12 and nothing was committed: offsets 10
    # and 11 hold no records (compacted away, say), so reading them again would find nothing.
    for now in (2 * STALL, 3 * STALL, 10 * STALL):
        assert watch.observe(now, {"p0": state(12, 12, committed=10)}) == {}
    # Later records that get lost are reported as before.
    watch.observe(11 * STALL, {"p0": state(20, 20, committed=12)})
    assert watch.observe(12 * STALL, {"p0": state(20, 20, committed=12)}) == {"p0": 12}


def test_the_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stall_seconds must be positive"):
        StallWatch(0)
