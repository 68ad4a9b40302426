"""The web process's fold of the subscriptions topic: the workers' rules, and what pages ask of it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from mobilise.snapshot import StoredRecord
from mobilise.web.subscribers_view import Subscribers, SubscribersView
from schemas import Subscription, Suppression, SuppressionReason

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def sub(email: str = "p@example.org", at: datetime = T0, **fields: Any) -> Subscription:
    data = {"email": email, "worldwide": True, "interests": ["wages"], "created_at": at.isoformat(), **fields}
    return Subscription.model_validate_json(json.dumps(data))


def sup(
    subscriber_id: str, at: datetime, reason: SuppressionReason = SuppressionReason.BOUNCE
) -> Suppression:
    return Suppression(subscriber_id=subscriber_id, reason=reason, source="test", occurred_at=at)


def record(key: str, value: Subscription | Suppression | bytes | None) -> StoredRecord:
    raw = value.model_dump_json().encode() if isinstance(value, Subscription | Suppression) else value
    return StoredRecord(topic="t", partition=0, offset=0, timestamp=T0, key=key.encode(), value=raw)


def test_the_latest_subscription_stands_and_the_address_finds_its_id() -> None:
    subscribers = Subscribers()
    pending = sub()
    confirmed = sub(at=T0 + timedelta(hours=1), confirmed=True)
    subscribers.fold(record(pending.subscriber_id, pending))
    state = subscribers.get(pending.subscriber_id)
    assert state is not None and state.active == pending and not state.confirmed
    subscribers.fold(record(pending.subscriber_id, confirmed))
    subscribers.fold(record(pending.subscriber_id, confirmed))  # read twice: the same state
    state = subscribers.get(pending.subscriber_id)
    assert state is not None and state.confirmed and len(subscribers) == 1
    assert subscribers.find(" P@Example.ORG ") == pending.subscriber_id
    assert subscribers.find("other@example.org") is None


def test_a_suppression_ends_an_older_subscription_but_not_a_newer_one() -> None:
    subscribers = Subscribers()
    person = sub(confirmed=True)
    key = person.subscriber_id
    subscribers.fold(record(key, person))
    subscribers.fold(record(key, sup(key, T0 + timedelta(days=1))))
    state = subscribers.get(key)
    assert state is not None and state.suppressed and state.active is None and not state.confirmed
    assert state.subscription == person  # kept: confirming again can bring the person back
    again = sub(at=T0 + timedelta(days=2), confirmed=True)
    subscribers.fold(record(key, again))
    state = subscribers.get(key)
    assert state is not None and state.confirmed and not state.suppressed
    # A bounce reported late (it happened before the re-subscription) changes nothing.
    subscribers.fold(record(key, sup(key, T0 + timedelta(days=1, hours=1))))
    state = subscribers.get(key)
    assert state is not None and state.confirmed
    # An older replay of the subscription is still suppressed by the latest suppression.
    subscribers.fold(record(key, person))
    state = subscribers.get(key)
    assert state is not None and state.suppressed


def test_a_tombstone_erases_the_person_and_their_address() -> None:
    subscribers = Subscribers()
    person = sub()
    subscribers.fold(record(person.subscriber_id, person))
    subscribers.fold(record(person.subscriber_id, sup(person.subscriber_id, T0 + timedelta(days=1))))
    subscribers.fold(record(person.subscriber_id, None))
    assert subscribers.get(person.subscriber_id) is None and subscribers.find(str(person.email)) is None
    subscribers.fold(record(person.subscriber_id, None))  # erasing nobody is fine
    assert len(subscribers) == 0


def test_records_nobody_can_use_are_skipped() -> None:
    subscribers = Subscribers()
    person = sub()
    subscribers.fold(record("someone-else", person))  # a key that is not its subscriber id
    subscribers.fold(record(person.subscriber_id, b"{not json"))
    subscribers.fold(StoredRecord(topic="t", partition=0, offset=0, timestamp=T0, key=None, value=b"{}"))
    assert len(subscribers) == 0


def test_an_imported_id_is_found_by_address_and_a_changed_address_moves_the_index() -> None:
    subscribers = Subscribers()
    imported = sub("crm@example.org", subscriber_id="ext:crm-7")
    subscribers.fold(record("ext:crm-7", imported))
    assert subscribers.find("crm@example.org") == "ext:crm-7"
    moved = sub("new@example.org", at=T0 + timedelta(days=1), subscriber_id="ext:crm-7")
    subscribers.fold(record("ext:crm-7", moved))
    assert subscribers.find("crm@example.org") is None and subscribers.find("new@example.org") == "ext:crm-7"


def test_a_view_without_brokers_folds_what_is_applied() -> None:
    view = SubscribersView("subscriptions")
    person = sub()
    view.apply(person.subscriber_id, person.model_dump_json().encode(), now=T0.timestamp())
    state = view.subscribers.get(person.subscriber_id)
    assert state is not None and state.subscription == person
