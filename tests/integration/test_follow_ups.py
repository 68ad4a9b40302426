"""Closing the loop end to end: people who acted hear how the case ended, across a restart."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from schemas import (
    ActionTaken,
    AlertBatch,
    CaseUpdate,
    MatchReason,
    Suppression,
    SuppressionReason,
    action_id_for,
    taken_id_for,
)
from streams.admin import publish

from .harness import PipelineHarness, case_update, recipients, subscription

pytestmark = pytest.mark.integration


def _act(pipeline: PipelineHarness, update: CaseUpdate, subscriber_id: str) -> str:
    assert update.action_call is not None
    action_id = action_id_for(update.case_id, update.action_call)
    record = ActionTaken(
        taken_id=taken_id_for(action_id, subscriber_id),
        action_id=action_id,
        case_id=update.case_id,
        event_id=update.event_id,
        subscriber_id=subscriber_id,
        at=datetime.now(UTC),
    )
    publish(
        [pipeline.broker.bootstrap],
        pipeline.names.actions_taken,
        [(subscriber_id, record.model_dump_json().encode())],
    )
    return record.taken_id


def _wait_logged(pipeline: PipelineHarness, event: str, taken_id: str) -> None:
    pipeline.wait_until(
        f"{event} of {taken_id}",
        lambda: any(e.get("taken_id") == taken_id for e in pipeline.events(event)),
    )


def _batches_of(pipeline: PipelineHarness, event_id: str) -> list[AlertBatch]:
    batches = [AlertBatch.model_validate_json(r.value) for r in pipeline.read_topic(pipeline.names.alerts)]
    return [b for b in batches if b.event_id == event_id]


def _check_follow_ups(
    pipeline: PipelineHarness, update: CaseUpdate, emailed: list[str], following: set[str]
) -> None:
    emails = pipeline.emails_for(update.event_id)
    assert recipients(emails) == sorted(emailed)  # exactly one email each
    batches = _batches_of(pipeline, update.event_id)
    carried = Counter(r.subscriber_id for b in batches for r in b.recipients)
    assert set(carried.values()) == {1}
    assert {r.subscriber_id for b in batches if b.follow_up for r in b.recipients} == following
    accepted = Counter(d.alert_id for d in pipeline.deliveries() if d.event_id == update.event_id)
    assert set(accepted.values()) == {1} and len(accepted) == len(emailed)


def test_those_who_acted_get_a_follow_up_once_and_the_state_survives_a_restart(
    pipeline: PipelineHarness,
) -> None:
    acts = subscription("acts@example.org", countries=["BD"], interests=["union_busting"], home_country="FR")
    bystander = subscription("bystander@example.org", countries=["BD"], interests=["union_busting"])
    other = subscription("other@example.org", countries=["BD"], brands=["H&M"])
    leaves = subscription("leaves@example.org", countries=["BD"], interests=["union_busting"])
    # Wants urgent actions only: no update of a won case matches, but having acted, they hear of it.
    urgent_only = subscription(
        "urgent-only@example.org", countries=["BD"], interests=["union_busting"], statuses=["urgent_action"]
    )
    people = [acts, bystander, other, leaves, urgent_only]
    first = pipeline.start_worker()
    pipeline.wait_ready()
    # One at a time, so that each changelog write is a batch of its own (see
    # test_pipeline.test_shards_move_with_their_partitions_when_workers_join_and_leave):
    # the restart below recovers the tables from their changelogs.
    for person in people:
        pipeline.subscribe(person)
        pipeline.wait_indexed(person.subscriber_id)

    urgent = case_update(
        action_call={
            "kind": "email_brand",
            "instructions": {"en": "Email the CEO and demand reinstatement."},
            "target": {"name": "H&M Group", "email": "ceo@example.com"},
        }
    )
    pipeline.publish(urgent)
    assert pipeline.wait_processed(urgent.event_id) == len(people)
    assert not any(b.follow_up for b in _batches_of(pipeline, urgent.event_id))
    (home_alert,) = [
        a
        for b in _batches_of(pipeline, urgent.event_id)
        for a in b.alerts()
        if a.subscriber_id == acts.subscriber_id
    ]
    assert home_alert.home_country == "FR"

    for person in (acts, leaves, urgent_only):
        _wait_logged(pipeline, "action_taken.recorded", _act(pipeline, urgent, person.subscriber_id))
    # A second click on the same link: the same taken_id, nothing changes.
    _wait_logged(pipeline, "action_taken.duplicate", _act(pipeline, urgent, acts.subscriber_id))
    stop = Suppression(
        subscriber_id=leaves.subscriber_id,
        reason=SuppressionReason.LINK_UNSUBSCRIBE,
        source="link",
        occurred_at=datetime.now(UTC),
    )
    publish(
        [pipeline.broker.bootstrap],
        pipeline.names.subscriptions,
        [(leaves.subscriber_id, stop.model_dump_json().encode())],
    )
    pipeline.wait_until(
        "the suppression",
        lambda: any(
            e["subscriber_id"] == leaves.subscriber_id for e in pipeline.events("subscription.suppressed")
        ),
    )

    won = case_update(status="remedy_won")
    pipeline.publish(won)
    assert pipeline.wait_processed(won.event_id) == 4
    stayed = [acts.email, bystander.email, other.email, urgent_only.email]
    _check_follow_ups(pipeline, won, stayed, {acts.subscriber_id, urgent_only.subscriber_id})
    reasons = {
        r.subscriber_id: r for b in _batches_of(pipeline, won.event_id) for r in b.recipients if b.follow_up
    }
    assert reasons[acts.subscriber_id].reason.country == "BD"
    assert reasons[urgent_only.subscriber_id].reason == MatchReason()
    assert reasons[acts.subscriber_id].home_country == "FR"
    (follow_up,) = [
        a
        for b in _batches_of(pipeline, won.event_id)
        for a in b.alerts()
        if a.subscriber_id == acts.subscriber_id
    ]
    assert follow_up.follow_up and follow_up.home_country == "FR"
    (won_email,) = [
        m for m in pipeline.emails_for(won.event_id) if m["To"].addresses[0].addr_spec == acts.email
    ]
    assert won_email["X-Mobilise-Alert-Id"] == follow_up.alert_id

    # The worker stops cleanly; another with the same app id recovers the acted state.
    assert first.stop() == 0
    pipeline.workers.remove(first)
    second = pipeline.start_worker()
    pipeline.wait_ready()
    ready = [e for e in second.events() if e.get("event") == "worker.ready"][-1]
    assert ready["acted"] == 3  # the suppressed person's action stays on record, bringing nothing

    closed = case_update(status="closed")
    pipeline.publish(closed)
    assert pipeline.wait_processed(closed.event_id) == 4
    _check_follow_ups(pipeline, closed, stayed, {acts.subscriber_id, urgent_only.subscriber_id})
