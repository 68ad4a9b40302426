from __future__ import annotations

from faust.streams import current_event

from streams.tables import on_partition


def test_outside_any_event_a_partitioned_write_has_a_current_event_naming_its_partition() -> None:
    # faust's RocksDB store picks its partition's database from the current event: a timer
    # releasing held alerts has none, so on_partition provides one for its block only.
    assert current_event() is None
    with on_partition(3):
        event = current_event()
        assert event is not None and event.message.partition == 3
        with on_partition(5):
            assert current_event().message.partition == 5  # type: ignore[union-attr]  # set above
        assert current_event().message.partition == 3  # type: ignore[union-attr]  # set above
    assert current_event() is None
