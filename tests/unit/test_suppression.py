"""Suppressions: the subscriptions-topic union, the later-fact-wins rule, the shard intake and rebuild."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from schemas import (
    CaseUpdate,
    DeadLetter,
    Subscription,
    Suppression,
    read_subscriptions_record,
)
from streams.records import DeadLetters
from streams.shards import SubscriberShards, SubscriptionIntake

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def subscription(created_at: datetime, email: str = "amina@example.org") -> Subscription:
    return Subscription.model_validate_json(
        json.dumps(
            {
                "email": email,
                "countries": ["BD"],
                "interests": ["wages"],
                "confirmed": True,
                "created_at": created_at.isoformat(),
            }
        )
    )


def suppression(subscriber_id: str, occurred_at: datetime, **fields: Any) -> Suppression:
    values: dict[str, Any] = {"reason": "bounce", "source": "sendgrid", **fields}
    return Suppression.model_validate_json(
        json.dumps(
            {
                "record": "suppression",
                "subscriber_id": subscriber_id,
                "occurred_at": occurred_at.isoformat(),
                **values,
            }
        )
    )


# -- the union on the subscriptions topic ---------------------------------------------------


def test_records_without_a_record_field_are_subscriptions_and_suppressions_say_so() -> None:
    old = subscription(T0)
    assert read_subscriptions_record(old.model_dump_json().encode()) == old  # existing data stays valid
    stop = suppression(old.subscriber_id, T0)
    assert json.loads(stop.model_dump_json())["record"] == "suppression"
    assert read_subscriptions_record(stop.model_dump_json().encode()) == stop


def test_errors_name_the_fields_of_the_record_itself() -> None:
    with pytest.raises(ValidationError) as unknown:
        read_subscriptions_record(b'{"record": "preference", "subscriber_id": "sub-1"}')
    assert [e["loc"] for e in unknown.value.errors()] == [("record",)]
    assert "'subscription', 'suppression'" in unknown.value.errors()[0]["msg"]
    with pytest.raises(ValidationError) as bad_subscription:
        read_subscriptions_record(b'{"email": "nope", "created_at": "2026-01-01T00:00:00Z"}')
    assert ("email",) in {e["loc"] for e in bad_subscription.value.errors()}  # not ("subscription", "email")
    with pytest.raises(ValidationError) as bad_suppression:
        read_subscriptions_record(
            b'{"record": "suppression", "subscriber_id": "sub-1", "reason": "bored", "source": "link", '
            b'"occurred_at": "2026-01-01T00:00:00"}'
        )
    assert {e["loc"] for e in bad_suppression.value.errors()} == {("reason",), ("occurred_at",)}


def test_a_suppression_id_is_deterministic() -> None:
    a = suppression("sub-1", T0, provider_event_id="sg-1")
    assert a.event_id == suppression("sub-1", T0 + timedelta(hours=1), provider_event_id="sg-1").event_id
    assert a.event_id != suppression("sub-2", T0, provider_event_id="sg-1").event_id
    link = suppression("sub-1", T0, reason="link_unsubscribe", source="link")
    assert link.event_id == suppression("sub-1", T0, reason="link_unsubscribe", source="link").event_id
    assert (
        link.event_id
        != suppression("sub-1", T0 + timedelta(seconds=1), reason="link_unsubscribe", source="link").event_id
    )


def test_the_later_fact_wins() -> None:
    stop = suppression("sub-1", T0)
    assert stop.overrides(subscription(T0 - timedelta(days=30)))  # the bounce ends an older subscription
    assert stop.overrides(subscription(T0))  # a tie goes to the suppression
    assert not stop.overrides(subscription(T0 + timedelta(seconds=1)))  # a fresh re-subscription stands


# -- the intake on a shard ------------------------------------------------------------------


class _Sent:
    """Stands in for the dead-letters topic: keeps what was sent."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    async def send(self, *, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        self.values.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Shard:
    """One partition's intake with a dict for its table."""

    def __init__(self) -> None:
        self.shards = SubscriberShards()
        self.shards.assign([0], [])
        self.table: dict[str, Any] = {}
        self.letters = _Sent()
        self.intake = SubscriptionIntake(
            shards=self.shards,
            table=self.table,  # type: ignore[arg-type]  # the intake uses get, set and pop
            dead_letters=DeadLetters(self.letters),  # type: ignore[arg-type]  # only send()
        )
        self.offset = 0

    def put(self, key: str, record: Subscription | Suppression | None) -> None:
        value = record.model_dump_json().encode() if record is not None else None
        message = SimpleNamespace(
            key=key.encode(), value=value, partition=0, topic="subscriptions", offset=self.offset
        )
        self.offset += 1
        asyncio.run(self.intake.process(SimpleNamespace(message=message)))  # type: ignore[arg-type]

    def matches(self, case: CaseUpdate) -> set[str]:
        index = self.shards.shard(0)
        assert index is not None
        return {s.subscriber_id for s, _ in index.match(case.public())}


CASE = CaseUpdate.model_validate_json(
    json.dumps(
        {
            "case_id": "bd-1",
            "status": "escalated",
            "title": {"en": "t"},
            "summary": {"en": "s"},
            "country": "BD",
            "issues": ["wages"],
            "occurred_at": "2026-03-02T00:00:00Z",
            "published_by": "p",
        }
    )
)


def test_a_suppression_stops_matching_and_keeps_no_address() -> None:
    shard = Shard()
    person, other = subscription(T0), subscription(T0, email="lucie@example.org")
    shard.put(person.subscriber_id, person)
    shard.put(other.subscriber_id, other)
    assert shard.matches(CASE) == {person.subscriber_id, other.subscriber_id}
    with capture_logs() as logs:
        shard.put(person.subscriber_id, suppression(person.subscriber_id, T0 + timedelta(days=1)))
    assert shard.matches(CASE) == {other.subscriber_id}
    assert "amina@example.org" not in json.dumps(shard.table[person.subscriber_id])
    (logged,) = [e for e in logs if e["event"] == "subscription.suppressed"]
    assert logged["subscriber_id"] == person.subscriber_id and logged["reason"] == "bounce"
    assert logged["was_subscribed"] is True
    assert "amina@example.org" not in json.dumps(logs)


def test_a_late_bounce_does_not_cancel_a_fresh_resubscription() -> None:
    shard = Shard()
    old = subscription(T0)
    shard.put(old.subscriber_id, old)
    again = subscription(T0 + timedelta(days=2))  # re-subscribed after the bounce happened…
    shard.put(again.subscriber_id, again)
    with capture_logs() as logs:
        # …and SendGrid reports the bounce (which occurred on day 1) only now.
        shard.put(old.subscriber_id, suppression(old.subscriber_id, T0 + timedelta(days=1)))
    assert shard.matches(CASE) == {old.subscriber_id}
    assert [e["event"] for e in logs] == ["subscription.suppression_ignored"]
    # The same suppression read again (a replay) changes nothing either.
    shard.put(old.subscriber_id, suppression(old.subscriber_id, T0 + timedelta(days=1)))
    assert shard.matches(CASE) == {old.subscriber_id}


def test_an_older_subscription_does_not_bring_a_suppressed_person_back() -> None:
    shard = Shard()
    person = subscription(T0)
    shard.put(person.subscriber_id, person)
    shard.put(person.subscriber_id, suppression(person.subscriber_id, T0 + timedelta(days=1)))
    with capture_logs() as logs:
        shard.put(person.subscriber_id, person)  # replayed, or re-imported from a CRM
    assert shard.matches(CASE) == set()
    assert [e["event"] for e in logs] == ["subscription.kept_suppressed"]
    fresh = subscription(T0 + timedelta(days=3))  # subscribing again, after the suppression
    shard.put(fresh.subscriber_id, fresh)
    assert shard.matches(CASE) == {person.subscriber_id}
    assert "subscription" in shard.table[person.subscriber_id]


def test_a_suppression_before_any_subscription_is_remembered_and_a_tombstone_forgets_it() -> None:
    shard = Shard()
    person = subscription(T0)
    shard.put(person.subscriber_id, suppression(person.subscriber_id, T0 + timedelta(days=1)))
    shard.put(person.subscriber_id, person)
    assert shard.matches(CASE) == set()
    shard.put(person.subscriber_id, None)  # erase the person, suppression included
    assert person.subscriber_id not in shard.table
    shard.put(person.subscriber_id, person)
    assert shard.matches(CASE) == {person.subscriber_id}


def test_a_suppression_under_another_key_is_dead_lettered() -> None:
    shard = Shard()
    person = subscription(T0)
    shard.put(person.subscriber_id, person)
    shard.put("sub-someone-else", suppression(person.subscriber_id, T0 + timedelta(days=1)))
    assert shard.matches(CASE) == {person.subscriber_id}
    (letter,) = [DeadLetter.model_validate_json(v) for v in shard.letters.values]
    assert "is not the subscriber_id" in letter.reason and letter.offset == 1


def test_shards_rebuilt_from_the_table_leave_suppressed_people_out() -> None:
    shard = Shard()
    kept, stopped = subscription(T0, email="lucie@example.org"), subscription(T0)
    shard.put(kept.subscriber_id, kept)
    shard.put(stopped.subscriber_id, stopped)
    shard.put(stopped.subscriber_id, suppression(stopped.subscriber_id, T0 + timedelta(days=1)))
    rebuilt = SubscriberShards()
    assert rebuilt.assign([0], shard.table.items()) == [0]
    index = rebuilt.shard(0)
    assert index is not None and len(index) == 1
    assert {s.subscriber_id for s, _ in index.match(CASE.public())} == {kept.subscriber_id}
