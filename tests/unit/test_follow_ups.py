"""Closing the loop: who acted on which case, and the follow-ups a won or closed case brings them."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from schemas import (
    ActionTaken,
    AlertBatch,
    CaseStatus,
    CaseUpdate,
    MatchReason,
    Subscription,
    Suppression,
    SuppressionReason,
    alert_id_for,
    taken_id_for,
)
from streams.acted import ActedCases, follow_ups_for
from streams.alerting import alert_batches, split_follow_ups
from streams.matching import SubscriberIndex, reason_for

from .world import Partition, raw_event

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def subscription(email: str, **fields: Any) -> Subscription:
    values: dict[str, Any] = {
        "email": email,
        "countries": ["BD"],
        "interests": ["union_busting"],
        "confirmed": True,
        "created_at": T0.isoformat(),
        **fields,
    }
    return Subscription.model_validate_json(json.dumps(values))


def case(status: str, case_id: str = "bd-1") -> CaseUpdate:
    return CaseUpdate.model_validate_json(
        json.dumps(
            {
                "case_id": case_id,
                "status": status,
                "title": {"en": "Union leaders fired"},
                "summary": {"en": "Twelve leaders dismissed."},
                "country": "BD",
                "issues": ["union_busting"],
                "occurred_at": "2026-03-02T00:00:00Z",
                "published_by": "p",
            }
        )
    )


def taken(subscriber_id: str, case_id: str = "bd-1", action_id: str = "act-1") -> ActionTaken:
    return ActionTaken(
        taken_id=taken_id_for(action_id, subscriber_id),
        action_id=action_id,
        case_id=case_id,
        event_id="evt-1",
        subscriber_id=subscriber_id,
        at=T0,
    )


def index_of(*subscriptions: Subscription) -> SubscriberIndex:
    index = SubscriberIndex()
    for s in subscriptions:
        index.upsert(s)
    return index


# -- who gets a follow-up -------------------------------------------------------------------


ACTED = subscription("acted@example.org")
BYSTANDER = subscription("bystander@example.org")
ELSEWHERE = subscription("elsewhere@example.org", countries=["KH"])  # acted, but filters do not match
UNCONFIRMED = subscription("unconfirmed@example.org", confirmed=False)
GONE = "sub-erased-or-suppressed"  # acted, no longer in the shard


@pytest.mark.parametrize("status", ["remedy_won", "closed"])
def test_those_who_acted_and_are_still_subscribed_and_confirmed_get_a_follow_up(status: str) -> None:
    shard = index_of(ACTED, BYSTANDER, ELSEWHERE, UNCONFIRMED)
    public = case(status).public()
    acted = {ACTED.subscriber_id, ELSEWHERE.subscriber_id, UNCONFIRMED.subscriber_id, GONE}
    found = follow_ups_for(public, acted, shard)
    assert [s.subscriber_id for s, _ in found] == sorted([ACTED.subscriber_id, ELSEWHERE.subscriber_id])
    reasons = {s.subscriber_id: r for s, r in found}
    # The match rule's reason when their filters match; an empty one when they only acted.
    assert reasons[ACTED.subscriber_id] == reason_for(ACTED, public)
    assert reasons[ACTED.subscriber_id].country == "BD"
    assert reasons[ELSEWHERE.subscriber_id] == MatchReason()


@pytest.mark.parametrize("status", [s.value for s in CaseStatus if s.value not in ("remedy_won", "closed")])
def test_other_statuses_bring_no_follow_up(status: str) -> None:
    shard = index_of(ACTED)
    assert follow_ups_for(case(status).public(), {ACTED.subscriber_id}, shard) == []


def test_a_person_who_acted_is_taken_out_of_the_normal_match() -> None:
    shard = index_of(ACTED, BYSTANDER)
    public = case("remedy_won").public()
    follow = follow_ups_for(public, {ACTED.subscriber_id}, shard)
    normal = split_follow_ups(shard.match(public), follow)
    assert [s.subscriber_id for s, _ in normal] == [BYSTANDER.subscriber_id]
    assert [s.subscriber_id for s, _ in follow] == [ACTED.subscriber_id]


# -- batches --------------------------------------------------------------------------------


def test_follow_up_batches_have_their_own_deterministic_ids_and_the_same_alert_ids() -> None:
    update = case("remedy_won")
    public = update.public()
    people = [
        (ACTED, MatchReason(country="BD")),
        (subscription("fr@example.org", language="fr"), MatchReason()),
    ]

    def build(follow_up: bool) -> list[AlertBatch]:
        return alert_batches(
            event_id=update.event_id,
            partition=2,
            case=public,
            created_at=T0,
            people=people,
            batch_size=1000,
            follow_up=follow_up,
        )

    normal, follow = build(False), build(True)
    assert [b.language for b in follow] == ["en", "fr"]
    assert all(b.follow_up for b in follow) and not any(b.follow_up for b in normal)
    assert {b.batch_id for b in follow}.isdisjoint({b.batch_id for b in normal})
    assert [b.batch_id for b in follow] == [b.batch_id for b in build(True)]  # the same on a re-match
    assert [r.alert_id for b in follow for r in b.recipients] == [
        r.alert_id for b in normal for r in b.recipients
    ]
    alerts = [a for b in follow for a in b.alerts()]
    assert all(a.follow_up for a in alerts)
    # What travels on the wire is what the schema accepts.
    assert [AlertBatch.model_validate_json(b.model_dump_json()) for b in follow] == follow


def test_batches_carry_the_home_country_to_the_alert() -> None:
    update = case("urgent_action")
    away = subscription("away@example.org", home_country="FR")
    (batch,) = alert_batches(
        event_id=update.event_id,
        partition=0,
        case=update.public(),
        created_at=T0,
        people=[(away, MatchReason(country="BD")), (BYSTANDER, MatchReason(country="BD"))],
        batch_size=10,
    )
    homes = {a.subscriber_id: a.home_country for a in batch.alerts()}
    assert homes == {away.subscriber_id: "FR", BYSTANDER.subscriber_id: None}


def test_follow_up_batches_are_split_by_batch_size() -> None:
    update = case("closed")
    people = [(subscription(f"p{i}@example.org"), MatchReason()) for i in range(5)]
    batches = alert_batches(
        event_id=update.event_id,
        partition=0,
        case=update.public(),
        created_at=T0,
        people=people,
        batch_size=2,
        follow_up=True,
    )
    assert [len(b.recipients) for b in batches] == [2, 2, 1]
    assert len({b.batch_id for b in batches}) == 3


# -- the acted state and its intake ---------------------------------------------------------


def test_the_same_taken_id_twice_changes_nothing() -> None:
    part = Partition(ACTED)
    with capture_logs() as logs:
        part.act(taken(ACTED.subscriber_id))
        row = json.dumps(part.table, sort_keys=True)
        part.act(taken(ACTED.subscriber_id))
    assert json.dumps(part.table, sort_keys=True) == row
    assert [e["event"] for e in logs] == ["action_taken.recorded", "action_taken.duplicate"]
    assert part.acted.who_acted(0, "bd-1") == {ACTED.subscriber_id}
    # Another action on the same case, and one on another case, are recorded beside it.
    part.act(taken(ACTED.subscriber_id, action_id="act-2"))
    part.act(taken(ACTED.subscriber_id, case_id="kh-9", action_id="act-3"))
    assert len(part.table[ACTED.subscriber_id]["taken"]) == 3
    assert part.acted.who_acted(0, "kh-9") == {ACTED.subscriber_id}


def test_bad_records_go_to_dead_letters_with_the_reason_and_unknown_people_are_not_recorded() -> None:
    part = Partition(ACTED)
    part.act(taken(ACTED.subscriber_id), value=b'{"taken_id": "x"}')
    part.act(taken(ACTED.subscriber_id), key="someone-else")
    with capture_logs() as logs:
        part.act(taken("sub-never-heard-of"))
    invalid, wrong_key = part.dead_letters()
    assert invalid.stage == "actions-taken" and "case_id" in {e.loc for e in invalid.errors}
    assert "is not the subscriber_id" in wrong_key.reason
    assert [e["event"] for e in logs] == ["action_taken.unknown_subscriber"]
    assert part.table == {} and part.acted.who_acted(0, "bd-1") == frozenset()


def test_a_partition_not_loaded_here_is_dead_lettered() -> None:
    part = Partition(ACTED)
    record = taken(ACTED.subscriber_id)
    asyncio.run(
        part.actions.process(
            raw_event("actions-taken", ACTED.subscriber_id, record.model_dump_json().encode(), partition=3)
        )
    )
    (letter,) = part.dead_letters()
    assert "partition 3 is not loaded" in letter.reason


def test_erasure_forgets_who_acted_and_a_suppression_keeps_it() -> None:
    erased, suppressed = subscription("erased@example.org"), subscription("suppressed@example.org")
    part = Partition(erased, suppressed)
    part.act(taken(erased.subscriber_id))
    part.act(taken(suppressed.subscriber_id))
    part.subscribe(erased.subscriber_id, None)
    stop = Suppression(
        subscriber_id=suppressed.subscriber_id,
        reason=SuppressionReason.LINK_UNSUBSCRIBE,
        source="link",
        occurred_at=T0,
    )
    part.subscribe(suppressed.subscriber_id, stop)
    assert erased.subscriber_id not in part.table
    assert part.acted.who_acted(0, "bd-1") == {suppressed.subscriber_id}
    # A suppressed person's action stays on record (they may subscribe again) but brings nothing.
    assert part.match(case("remedy_won")) == []


def test_the_index_is_rebuilt_from_the_table_on_the_partitions_owned() -> None:
    part = Partition(ACTED, ELSEWHERE)
    part.act(taken(ACTED.subscriber_id))
    part.act(taken(ELSEWHERE.subscriber_id, case_id="kh-9"))
    other = {"sub-p1": {"partition": 1, "taken": {"t": "bd-1"}}}
    rebuilt = ActedCases({})  # type: ignore[arg-type]  # only read through assign's rows
    assert rebuilt.assign([0], [*part.table.items(), *other.items()]) == 2
    assert rebuilt.who_acted(0, "bd-1") == {ACTED.subscriber_id}
    assert rebuilt.who_acted(0, "kh-9") == {ELSEWHERE.subscriber_id}
    assert rebuilt.who_acted(1, "bd-1") == frozenset()
    assert rebuilt.assign([1], other.items()) == 1  # partition 0 moved away, 1 came
    assert rebuilt.partitions == {1} and rebuilt.who_acted(1, "bd-1") == {"sub-p1"}


# -- the matcher ----------------------------------------------------------------------------


def test_a_won_case_sends_one_alert_per_person_and_follow_ups_to_those_who_acted() -> None:
    home = subscription("home@example.org", home_country="FR")
    part = Partition(ACTED, BYSTANDER, ELSEWHERE, home)
    for person in (ACTED, ELSEWHERE, home):
        part.act(taken(person.subscriber_id))
    update = case("remedy_won")
    with capture_logs() as logs:
        batches = part.match(update)
    carried = Counter(r.subscriber_id for b in batches for r in b.recipients)
    assert carried == Counter({s.subscriber_id: 1 for s in (ACTED, BYSTANDER, ELSEWHERE, home)})
    following = {r.subscriber_id: r for b in batches if b.follow_up for r in b.recipients}
    assert set(following) == {ACTED.subscriber_id, ELSEWHERE.subscriber_id, home.subscriber_id}
    assert following[ELSEWHERE.subscriber_id].reason == MatchReason()
    assert following[ACTED.subscriber_id].reason.country == "BD"
    assert following[home.subscriber_id].home_country == "FR"
    assert all(
        r.alert_id == alert_id_for(update.event_id, r.subscriber_id) for b in batches for r in b.recipients
    )
    (matched,) = [e for e in logs if e["event"] == "case_update.matched"]
    assert matched["matched"] == 4 and matched["follow_ups"] == 3
    assert part.metrics.follow_ups._value.get() == 3
    # Before the case is won, those who acted get the update like anyone else.
    earlier = part.match(case("brand_responded"))
    assert not any(b.follow_up for b in earlier)
    assert {r.subscriber_id for b in earlier for r in b.recipients} == {
        ACTED.subscriber_id,
        BYSTANDER.subscriber_id,
        home.subscriber_id,
    }
