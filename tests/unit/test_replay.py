"""Choosing what a replay sends: once per record, never over a later change, never to someone gone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mobilise.dead_letters import StoredDeadLetter
from mobilise.inputs import InvalidInput
from mobilise.replay import (
    ReplayMarker,
    SubscriberRecord,
    check_subscribers,
    latest_subscriber_records,
    load_markers,
    replay_note,
    select_for_replay,
    subscriptions_to_read,
)
from mobilise.snapshot import StoredRecord
from schemas import Suppression, SuppressionReason
from streams.topics import TopicNames
from tests.integration.harness import subscription

from .test_dead_letters import letter

NAMES = TopicNames(prefix="p-")
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def stored(position: int, **fields: object) -> StoredDeadLetter:
    return StoredDeadLetter(0, position, letter(**fields))  # type: ignore[arg-type]


def marker(of: StoredDeadLetter, offset: int = 50, topic: str = "p-case-updates") -> ReplayMarker:
    return ReplayMarker(dead_letter_id=of.id, topic=topic, partition=0, offset=offset, replayed_at=T0)


def record(offset: int, key: str | None, value: bytes | None, partition: int = 0) -> StoredRecord:
    return StoredRecord(
        "p-subscriptions", partition, offset, T0, key.encode() if key is not None else None, value
    )


def test_everything_is_chosen_once_in_original_order() -> None:
    b = stored(0, topic="p-subscriptions", offset=4, seconds=1)
    a2 = stored(1, topic="p-case-updates", partition=1, offset=2, seconds=2)
    a1 = stored(2, topic="p-case-updates", partition=1, offset=1, seconds=3)
    again = stored(3, topic="p-case-updates", partition=1, offset=1, seconds=4)  # a1's record, re-read
    selection = select_for_replay([b, a2, a1, again], {})
    assert selection.send == [a1, a2, b]
    assert [(s.stored, s.reason) for s in selection.skipped] == [(again, "same record as dead letter 0:2")]


def test_ids_and_filters_narrow_the_choice_and_unknown_ids_are_refused() -> None:
    a = stored(0, stage="fanout", offset=1)
    b = stored(1, stage="delivery:smtp", topic="p-alerts", offset=1)
    c = stored(2, stage="delivery:smtp", topic="p-alerts", offset=2)
    assert select_for_replay([a, b, c], {}, ids=[b.id]).send == [b]
    assert select_for_replay([a, b, c], {}, stage="delivery").send == [b, c]
    assert select_for_replay([a, b, c], {}, topic="alerts", prefix="p-", ids=[a.id, c.id]).send == [c]
    with pytest.raises(InvalidInput, match="dl-unknown"):
        select_for_replay([a, b, c], {}, ids=[a.id, "dl-unknown"])


def test_what_was_replayed_is_not_sent_again_unless_forced() -> None:
    a, b = stored(0, offset=1), stored(1, offset=2)
    markers = {a.id: marker(a)}
    selection = select_for_replay([a, b], markers)
    assert selection.send == [b]
    assert (
        selection.skipped[0].stored == a
        and "already replayed 2026-03-01 08:00:00Z" in selection.skipped[0].reason
    )
    assert select_for_replay([a, b], markers, force=True).send == [a, b]


def test_the_latest_marker_per_id_wins_and_strangers_are_ignored() -> None:
    a = stored(0)
    old, new = marker(a, offset=5), marker(a, offset=9)
    records = [
        StoredRecord("m", 0, 0, T0, a.id.encode(), old.model_dump_json().encode()),
        StoredRecord("m", 0, 1, T0, b"x", b"not a marker"),
        StoredRecord("m", 0, 2, T0, a.id.encode(), new.model_dump_json().encode()),
        StoredRecord("m", 0, 3, T0, b"y", None),
    ]
    assert load_markers(records) == {a.id: new}


def test_notes_say_when_a_letter_was_replayed_and_when_a_replay_failed_again() -> None:
    first = stored(0, offset=3)
    copy_failed = stored(1, offset=50)  # the replayed copy, at p-case-updates[0]@50, failed again
    markers = {first.id: marker(first, offset=50)}
    assert replay_note(first, markers) == ["replayed 2026-03-01 08:00:00Z as p-case-updates[0]@50"]
    assert replay_note(copy_failed, markers) == [f"failed again after the replay of {first.id}"]
    assert replay_note(stored(2, offset=4), markers) == []


def test_the_subscriptions_history_needed_starts_after_a_subscription_and_at_zero_for_an_alert() -> None:
    letters = [
        stored(0, topic="p-subscriptions", partition=2, offset=10),
        stored(1, topic="p-subscriptions", partition=2, offset=4),
        stored(2, topic="p-alerts", partition=3, offset=99),
        stored(3, topic="p-subscriptions", partition=3, offset=7),
        stored(4, topic="p-case-updates", partition=1, offset=1),
    ]
    assert subscriptions_to_read(letters, NAMES) == {2: 5, 3: 0}


def test_the_latest_record_per_subscriber_is_the_last_one_a_worker_would_apply() -> None:
    person = subscription("a@example.org", countries=["BD"], interests=["wages"])
    other = subscription("b@example.org", countries=["BD"], interests=["wages"])
    suppression = Suppression(
        subscriber_id=other.subscriber_id, reason=SuppressionReason.BOUNCE, source="sendgrid", occurred_at=T0
    )
    history = [
        record(0, person.subscriber_id, person.model_dump_json().encode()),
        record(1, person.subscriber_id, b"{broken"),  # dead-lettered: changed nothing
        record(2, "wrong-key", person.model_dump_json().encode()),  # dead-lettered: key mismatch
        record(3, other.subscriber_id, other.model_dump_json().encode()),
        record(4, other.subscriber_id, suppression.model_dump_json().encode()),
        record(5, None, None),  # a tombstone without a key: dead-lettered
        record(6, "gone", None),
    ]
    assert latest_subscriber_records(history) == {
        person.subscriber_id: SubscriberRecord(0, 0, "subscription"),
        other.subscriber_id: SubscriberRecord(0, 4, "suppression"),
        "gone": SubscriberRecord(0, 6, "tombstone"),
    }


def test_a_replay_never_undoes_a_later_change_nor_mails_someone_who_left() -> None:
    superseded = stored(0, topic="p-subscriptions", offset=3, key=b"sub-a")
    latest = stored(1, topic="p-subscriptions", offset=8, key=b"sub-a")
    to_erased = stored(2, topic="p-alerts", key=b"sub-gone")
    to_suppressed = stored(3, topic="p-alerts", key=b"sub-bounced", offset=1)
    to_unknown = stored(4, topic="p-alerts", key=b"sub-never-seen", offset=2)
    to_subscribed = stored(5, topic="p-alerts", key=b"sub-a", offset=3)
    update = stored(6, topic="p-case-updates", key=b"bd-1")
    subscribers = {
        "sub-a": SubscriberRecord(0, 8, "subscription"),
        "sub-gone": SubscriberRecord(0, 9, "tombstone"),
        "sub-bounced": SubscriberRecord(0, 10, "suppression"),
    }
    letters = [superseded, latest, to_erased, to_suppressed, to_unknown, to_subscribed, update]
    checked = check_subscribers(select_for_replay(letters, {}), subscribers, NAMES)
    assert checked.send == [to_subscribed, update, latest]
    reasons = {s.stored.id: s.reason for s in checked.skipped}
    assert (
        "superseded by a later record for subscriber sub-a at p-subscriptions[0]@8" in reasons[superseded.id]
    )
    assert reasons[to_erased.id] == "subscriber sub-gone has been erased since; the alert is not sent"
    assert reasons[to_suppressed.id].startswith("subscriber sub-bounced has been suppressed since")
    assert "sub-never-seen has been erased since" in reasons[to_unknown.id]
    assert len(checked.skipped) == 4
