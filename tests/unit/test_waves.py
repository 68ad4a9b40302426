"""Scheduled waves: release times across zones, holding, releasing once, cancelling (injected clock)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    ActionCall,
    AlertBatch,
    CaseUpdate,
    DeliveryOutcome,
    MatchReason,
    Subscription,
    Wave,
    WaveCancellation,
    release_at,
    wave_id_for,
    zone_for,
)
from streams.alerting import alert_batches
from streams.delivery import Delivery
from streams.metrics import PipelineMetrics
from streams.records import DeadLetters
from streams.sent import SentAlerts
from streams.topics import TopicNames, topic_specs
from streams.waves import CancelledWaves, HeldAlerts, release_groups

from .world import MemoryBulk, MemorySink


def _wave(**fields: Any) -> Wave:
    return Wave.model_validate_json(json.dumps(fields))


NINE_LOCAL = _wave(local_time="09:00", local_date="2026-03-29")


@pytest.mark.parametrize(
    ("zone", "day", "expected"),
    [
        ("Asia/Dhaka", "2026-03-29", datetime(2026, 3, 29, 3, 0, tzinfo=UTC)),  # +06, no DST
        ("Europe/Amsterdam", "2026-03-28", datetime(2026, 3, 28, 8, 0, tzinfo=UTC)),  # CET +01
        ("Europe/Amsterdam", "2026-03-29", datetime(2026, 3, 29, 7, 0, tzinfo=UTC)),  # CEST from today
        ("America/New_York", "2026-03-07", datetime(2026, 3, 7, 14, 0, tzinfo=UTC)),  # EST -05
        ("America/New_York", "2026-03-08", datetime(2026, 3, 8, 13, 0, tzinfo=UTC)),  # EDT from today
        ("Pacific/Auckland", "2026-04-04", datetime(2026, 4, 3, 20, 0, tzinfo=UTC)),  # NZDT +13
        ("Pacific/Auckland", "2026-04-05", datetime(2026, 4, 4, 21, 0, tzinfo=UTC)),  # NZST +12 from today
        (None, "2026-03-29", datetime(2026, 3, 29, 9, 0, tzinfo=UTC)),
    ],
)
def test_a_local_time_wave_lands_at_that_time_in_each_zone_across_dst(
    zone: str | None, day: str, expected: datetime
) -> None:
    wave = _wave(local_time="09:00", local_date=day)
    got = release_at(wave, zone)
    assert got == expected and got.utcoffset() is not None and got.tzinfo is UTC


def test_a_local_time_in_the_spring_gap_is_taken_after_it_never_before() -> None:
    # 02:30 does not exist in New York on 8 March 2026: it lands at 03:30 EDT (07:30 UTC).
    wave = _wave(local_time="02:30", local_date="2026-03-08")
    assert release_at(wave, "America/New_York") == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)


def test_send_at_is_the_same_instant_everywhere() -> None:
    wave = _wave(send_at="2026-03-29T10:00:00+02:00")
    for zone in ("Asia/Dhaka", "Pacific/Auckland", None):
        assert release_at(wave, zone) == datetime(2026, 3, 29, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"local_time": "09:00"},
        {"local_date": "2026-03-29"},
        {"send_at": "2026-03-29T10:00:00Z", "local_time": "09:00", "local_date": "2026-03-29"},
        {"local_time": "25:00", "local_date": "2026-03-29"},
        {"send_at": "2026-03-29T10:00:00"},  # no offset: ambiguous
    ],
)
def test_an_incomplete_or_ambiguous_wave_is_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        _wave(**fields)


def test_the_wave_id_is_given_or_derived_stably_per_case() -> None:
    assert (
        wave_id_for("bd-1", _wave(wave_id="day-of-action", send_at="2026-03-29T10:00:00Z")) == "day-of-action"
    )
    derived = wave_id_for("bd-1", NINE_LOCAL)
    assert derived.startswith("wav-") and derived == wave_id_for("bd-1", NINE_LOCAL)
    assert derived != wave_id_for("bd-2", NINE_LOCAL)


def _subscription(email: str, **fields: Any) -> Subscription:
    data = {
        "email": email,
        "countries": ["BD"],
        "interests": ["union_busting"],
        "confirmed": True,
        "created_at": "2026-01-01T00:00:00Z",
        **fields,
    }
    return Subscription.model_validate_json(json.dumps(data))


def test_a_subscription_time_zone_must_be_an_iana_name_and_the_error_names_the_field() -> None:
    assert _subscription("a@example.org", time_zone="Asia/Dhaka").time_zone == "Asia/Dhaka"
    with pytest.raises(ValidationError) as caught:
        _subscription("a@example.org", time_zone="Mars/Olympus")
    (error,) = caught.value.errors()
    assert error["loc"] == ("time_zone",) and "Mars/Olympus" in error["msg"]


def test_without_a_time_zone_a_single_zone_country_gives_its_zone_else_utc() -> None:
    assert zone_for("Europe/Paris", "BD") == "Europe/Paris"
    assert zone_for(None, "BD") == "Asia/Dhaka"
    assert zone_for(None, "NL") == "Europe/Amsterdam"
    assert zone_for(None, "US") == "UTC"  # several zones: no guess
    assert zone_for(None, None) == "UTC"


CASE = CaseUpdate.model_validate_json(
    json.dumps(
        {
            "case_id": "bd-1",
            "status": "urgent_action",
            "title": {"en": "Fired for organising"},
            "summary": {"en": "Twelve leaders dismissed."},
            "country": "BD",
            "issues": ["union_busting"],
            "occurred_at": "2026-01-01T00:00:00Z",
            "published_by": "p",
            "action_call": {
                "kind": "email_brand",
                "instructions": {"en": "Email the CEO."},
                "target": {"name": "H&M"},
                "wave": {"local_time": "09:00", "local_date": "2026-03-29"},
            },
        }
    )
)


def test_the_matcher_cuts_a_waved_update_by_release_time_with_distinct_stable_ids() -> None:
    people = [
        (_subscription("dhaka@example.org", home_country="BD"), MatchReason()),
        (_subscription("ams@example.org", time_zone="Europe/Amsterdam"), MatchReason()),
        (_subscription("dhaka2@example.org", time_zone="Asia/Dhaka"), MatchReason()),
        (_subscription("nowhere@example.org"), MatchReason()),
    ]
    public = CASE.public()
    groups = release_groups(public, people)
    assert [when for when, _ in groups] == [
        datetime(2026, 3, 29, 3, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 7, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 9, 0, tzinfo=UTC),
    ]
    assert [len(group) for _, group in groups] == [2, 1, 1]

    def build() -> list[AlertBatch]:
        return [
            b
            for when, group in release_groups(public, people)
            for b in alert_batches(
                event_id=CASE.event_id,
                partition=0,
                case=public,
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
                people=group,
                batch_size=10,
                release_at=when,
                wave_id="w",
            )
        ]

    batches = build()
    assert len({b.batch_id for b in batches}) == 3
    assert [b.batch_id for b in build()] == [b.batch_id for b in batches]
    assert all(b.wave_id == "w" and b.release_at is not None for b in batches)
    # On the wire and back, unchanged.
    assert AlertBatch.model_validate_json(batches[0].model_dump_json()) == batches[0]
    unwaved = public.model_copy(update={"action_call": None})
    assert release_groups(unwaved, people) == [(None, people)]


def test_the_cancellations_topic_has_as_many_partitions_as_the_alerts() -> None:
    specs = {s.name: s for s in topic_specs(TopicNames(prefix="x-"), 6)}
    assert specs["x-wave-cancellations"].partitions == specs["x-alerts"].partitions == 6


# -- the delivery stage, with an injected clock ---------------------------------------------


class _RefusingTopic:
    """The dead-letters topic of a stage that must dead-letter nothing."""

    async def send(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"nothing should be dead-lettered: {kwargs.get('value')!r}")


class _Message:
    def __init__(self, partition: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.key, self.value = "alerts", partition, 0, b"k", value


class _Event:
    def __init__(self, partition: int, value: bytes) -> None:
        self.message = _Message(partition, value)


class _Stage:
    """A Delivery on dict tables and a clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.sink = MemorySink()
        self.bulk = MemoryBulk()
        self.held_table: dict[str, Any] = {}
        self.sent_table: dict[str, Any] = {}
        self.cancelled_table: dict[str, Any] = {}
        self.build()

    def build(self) -> None:
        """(Re)build the stage from its tables, as a restarted worker would."""
        self.held = HeldAlerts(self.held_table)  # type: ignore[arg-type]
        self.held.assign([0, 1], list(self.held_table.items()))
        self.cancelled = CancelledWaves(self.cancelled_table)  # type: ignore[arg-type]
        self.cancelled.load(list(self.cancelled_table.items()))
        sent = SentAlerts(self.sent_table)  # type: ignore[arg-type]
        sent.load(list(self.sent_table.items()))
        self.delivery = Delivery(
            sink=self.sink,
            sent=sent,
            deliveries_topic="deliveries",
            bulk=self.bulk,  # type: ignore[arg-type]
            dead_letters=self._dead_letters(),
            max_attempts=3,
            metrics=PipelineMetrics(),
            held=self.held,
            cancelled=self.cancelled,
            alerts_topic="alerts",
            clock=lambda: self.now,
        )

    @staticmethod
    def _dead_letters() -> Any:
        return DeadLetters(_RefusingTopic())  # type: ignore[arg-type]  # only send()

    def process(self, batch: AlertBatch, partition: int = 0) -> None:
        asyncio.run(self.delivery.process(_Event(partition, batch.model_dump_json().encode())))  # type: ignore[arg-type]

    def tick(self) -> int:
        return asyncio.run(self.delivery.release_due())

    def outcomes(self) -> list[tuple[str, str]]:
        return sorted((e.subscriber_id, e.outcome.value) for e in self.bulk.events)


RELEASE = datetime(2026, 3, 29, 3, 0, tzinfo=UTC)


def _batches(wave_id: str = "w", event_id: str = CASE.event_id) -> list[AlertBatch]:
    people = [(_subscription(f"p{i}@example.org", time_zone="Asia/Dhaka"), MatchReason()) for i in range(3)]
    return alert_batches(
        event_id=event_id,
        partition=0,
        case=CASE.public(),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        people=people,
        batch_size=2,
        release_at=RELEASE,
        wave_id=wave_id,
    )


def test_a_batch_before_its_time_is_held_and_released_once_when_due_never_early() -> None:
    stage = _Stage(now=RELEASE.timestamp() - 3600)
    for batch in _batches():
        stage.process(batch)
    assert stage.sink.delivered == [] and stage.bulk.events == []
    assert len(stage.held_table) == 2  # durable, one row per batch

    stage.now = RELEASE.timestamp() - 0.001
    assert stage.tick() == 0 and stage.sink.delivered == []  # a millisecond early is early

    stage.now = RELEASE.timestamp()
    assert stage.tick() == 2
    assert len(stage.sink.delivered) == 3 and {o for _, o in stage.outcomes()} == {"accepted"}
    assert stage.held_table == {} and len(stage.held) == 0

    stage.now += 60
    assert stage.tick() == 0
    for batch in _batches():  # a replay of the alerts topic
        stage.process(batch)
    assert len(stage.sink.delivered) == 3  # never twice


def test_held_batches_survive_a_restart_and_are_released_once() -> None:
    stage = _Stage(now=RELEASE.timestamp() - 10)
    for batch in _batches():
        stage.process(batch)
    stage.build()  # the worker restarts: state from the tables only
    assert len(stage.held) == 2
    for batch in _batches():  # its uncommitted records come again: held once, not twice
        stage.process(batch)
    assert len(stage.held_table) == 2
    stage.now = RELEASE.timestamp() + 1
    stage.tick()
    stage.build()
    assert stage.tick() == 0
    assert len(stage.sink.delivered) == 3 == len(set(stage.sink.delivered))


def test_a_batch_due_already_when_read_goes_straight_to_the_sink() -> None:
    stage = _Stage(now=RELEASE.timestamp() + 5)
    for batch in _batches():
        stage.process(batch)
    assert len(stage.sink.delivered) == 3 and stage.held_table == {}


def test_held_rows_of_partitions_not_owned_are_not_released_here() -> None:
    stage = _Stage(now=RELEASE.timestamp() - 10)
    for batch in _batches():
        stage.process(batch, partition=1)
    stage.held.assign([0], list(stage.held_table.items()))  # partition 1 moved away
    stage.now = RELEASE.timestamp() + 1
    assert stage.tick() == 0 and stage.sink.delivered == []
    assert len(stage.held_table) == 2  # its new owner releases them


def _cancel(stage: _Stage, wave_id: str, partition: int = 0) -> bool:
    cancellation = WaveCancellation(wave_id=wave_id, case_id="bd-1", cancelled_by="c", at=datetime.now(UTC))
    return stage.cancelled.record(cancellation, partition)


def test_a_cancelled_wave_is_never_sent_and_each_person_gets_a_cancelled_event() -> None:
    stage = _Stage(now=RELEASE.timestamp() - 10)
    for batch in _batches("w") + _batches("other", event_id="evt-other"):
        stage.process(batch)
    assert _cancel(stage, "w") and not _cancel(stage, "w")
    assert _cancel(stage, "w", partition=1) is False  # a second copy, on another partition
    assert len(stage.cancelled_table) == 2
    stage.tick()  # cancelled ones are settled at once, the other wave waits
    assert stage.sink.delivered == []
    assert stage.outcomes() == sorted((f"{s}", "cancelled") for s in _subscriber_ids())
    stage.now = RELEASE.timestamp()
    stage.tick()
    assert len(stage.sink.delivered) == 3  # the other wave's
    # A replay of the cancelled wave's records, or one after a restart, is cancelled again.
    stage.build()
    before = len(stage.sink.delivered)
    for batch in _batches("w"):
        stage.process(batch)
    assert len(stage.sink.delivered) == before
    assert DeliveryOutcome.CANCELLED.value == "cancelled"


def _subscriber_ids() -> list[str]:
    return [r.subscriber_id for b in _batches() for r in b.recipients]


def test_an_action_call_carries_its_wave_and_keeps_it_for_every_place() -> None:
    call = CASE.action_call
    assert isinstance(call, ActionCall) and call.wave is not None
    assert call.wave.local_date == date(2026, 3, 29)
    assert call.for_place("NL").wave == call.wave
