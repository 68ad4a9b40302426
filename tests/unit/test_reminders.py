"""Reminders before an action call's deadline: once, only to people who got the call and did not act."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.rendering import EmailIdentity, render_alert
from schemas import (
    ActionTaken,
    CaseUpdate,
    DeliveryOutcome,
    Subscription,
    WaveCancellation,
    action_id_for,
    alert_id_for,
    reminder_event_id_for,
    taken_id_for,
)
from streams.reminders import reminders_wave_id_for

from .world import Partition

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DEADLINE = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
REMIND = DEADLINE - timedelta(hours=24)
NL_DEADLINE = datetime(2026, 3, 13, 9, 0, tzinfo=UTC)  # the Amsterdam protest is on Friday


def subscription(email: str, **fields: Any) -> Subscription:
    values: dict[str, Any] = {
        "email": email,
        "worldwide": True,
        "interests": ["union_busting"],
        "confirmed": True,
        "created_at": "2026-01-01T00:00:00Z",
        **fields,
    }
    return Subscription.model_validate_json(json.dumps(values))


def update(status: str = "urgent_action", *, occurred_at: datetime = T0, **call: Any) -> CaseUpdate:
    action_call = {
        "kind": "email_brand",
        "instructions": {"en": "Email the CEO."},
        "target": {"name": "H&M Group", "email": "ceo@example.com"},
        "deadline": DEADLINE.isoformat(),
        "remind_hours_before": 24,
        **call,
    }
    values: dict[str, Any] = {
        "case_id": "bd-1",
        "status": status,
        "title": {"en": "Union leaders fired"},
        "summary": {"en": "Twelve leaders dismissed."},
        "country": "BD",
        "issues": ["union_busting"],
        "occurred_at": occurred_at.isoformat(),
        "published_by": "coordinator@example.org",
        "action_call": action_call if status != "remedy_won" else None,
    }
    return CaseUpdate.model_validate_json(json.dumps(values))


ACTS = subscription("acts@example.org")
FORGETS = subscription("forgets@example.org")
LEAVES = subscription("leaves@example.org")
DIGEST = subscription("digest@example.org", frequency="daily")


def _outcomes(world: Partition, event_id: str) -> dict[str, tuple[str, str | None]]:
    return {e.subscriber_id: (e.outcome.value, e.detail) for e in world.bulk.events if e.event_id == event_id}


def test_a_reminder_needs_a_deadline_and_the_error_names_the_field() -> None:
    with pytest.raises(ValidationError, match="remind_hours_before needs a deadline"):
        update(deadline=None)
    # A variant's deadline is enough: the people it applies to get a reminder.
    variant = {"countries": ["NL"], "deadline": NL_DEADLINE.isoformat()}
    assert update(deadline=None, variants=[variant]).action_call is not None


def test_only_people_who_got_the_call_and_did_not_act_get_one_reminder_never_early() -> None:
    world = Partition(ACTS, FORGETS, LEAVES, DIGEST, now=T0)
    call = update()
    batches = world.match(call)
    reminders = [b for b in batches if b.reminder]
    assert {r.subscriber_id for b in reminders for r in b.recipients} == {
        p.subscriber_id for p in (ACTS, FORGETS, LEAVES)
    }  # not the digest reader: the call waits for their digest
    assert all(
        b.release_at == REMIND and b.event_id == reminder_event_id_for(call.event_id) for b in reminders
    )
    world.deliver()
    assert {a.subscriber_id for a in world.received()} == {p.subscriber_id for p in (ACTS, FORGETS, LEAVES)}
    assert len(world.held) == 1  # the reminders wait, in the held table

    action_id = action_id_for("bd-1", call.action_call)  # type: ignore[arg-type]
    world.act(
        ActionTaken(
            taken_id=taken_id_for(action_id, ACTS.subscriber_id),
            action_id=action_id,
            case_id="bd-1",
            event_id=call.event_id,
            subscriber_id=ACTS.subscriber_id,
            at=T0 + timedelta(hours=1),
        )
    )
    world.subscribe(LEAVES.subscriber_id, None)

    world.now = (REMIND - timedelta(seconds=1)).timestamp()
    world.deliver()
    assert len(world.received()) == 3  # a second early is early

    world.restart()  # what is held survives a restart
    world.now = REMIND.timestamp()
    world.deliver()
    reminded = [a for a in world.received() if a.reminder]
    assert [a.subscriber_id for a in reminded] == [FORGETS.subscriber_id]
    assert reminded[0].alert_id == alert_id_for(reminder_event_id_for(call.event_id), FORGETS.subscriber_id)
    outcomes = _outcomes(world, reminder_event_id_for(call.event_id))
    assert outcomes == {
        FORGETS.subscriber_id: ("accepted", None),
        ACTS.subscriber_id: ("cancelled", "no reminder: they said they acted"),
        LEAVES.subscriber_id: ("cancelled", "not subscribed any more"),
    }

    # Once: the timer again, a restart, a replay of the update change nothing.
    world.now += 3600
    world.restart()
    world.match(call)
    world.deliver()
    assert len([a for a in world.received() if a.reminder]) == 1


def test_the_sent_rows_of_a_call_with_a_reminder_held_outlive_their_retention() -> None:
    world = Partition(FORGETS, now=T0)
    call = update()
    world.match(call)
    world.deliver()
    assert len(world.held) == 1 and world.held.reminded_events() == {call.event_id}

    # However old the rows are, the held reminder keeps its call's: it must still find it sent.
    long_after = datetime.now(UTC) + timedelta(days=365)
    assert world.sent.expire(long_after, {0}, world.held.reminded_events()) == 0
    world.now = REMIND.timestamp()
    world.deliver()
    assert [a.reminder for a in world.received()] == [False, True]
    assert world.held.reminded_events() == set()
    # Then nothing holds them: the call's row and the reminder's both go.
    assert world.sent.expire(long_after, {0}, world.held.reminded_events()) == 2


def test_no_reminder_after_the_case_was_won_or_when_the_coordinator_calls_them_off() -> None:
    world = Partition(FORGETS, now=T0)
    world.match(update())
    world.deliver()
    world.now = (T0 + timedelta(days=1)).timestamp()
    world.match(update("remedy_won", occurred_at=T0 + timedelta(days=1)))
    world.now = REMIND.timestamp()
    world.deliver()
    assert [a.reminder for a in world.received()] == [False, False]  # the call, the win; no reminder
    (outcome,) = _outcomes(world, reminder_event_id_for(update().event_id)).values()
    assert outcome == ("cancelled", "no reminder: the case is remedy_won since")

    other = Partition(FORGETS, now=T0)
    call = update(action_id="email-ceo")
    other.match(call)
    other.deliver()
    other.cancel(
        WaveCancellation(
            wave_id=reminders_wave_id_for("bd-1", "email-ceo"),
            case_id="bd-1",
            cancelled_by="coordinator@example.org",
            at=T0 + timedelta(hours=1),
        )
    )
    other.now = REMIND.timestamp()
    other.deliver()
    assert [a.reminder for a in other.received()] == [False]
    assert {o for o, _ in _outcomes(other, reminder_event_id_for(call.event_id)).values()} == {
        DeliveryOutcome.CANCELLED.value
    }


def test_each_person_is_reminded_before_their_own_deadline_and_not_when_it_is_too_late() -> None:
    amsterdam = subscription("ams@example.org", home_country="NL")
    world = Partition(FORGETS, amsterdam, now=T0)
    call = update(
        variants=[{"countries": ["NL"], "kind": "protest_at_store", "deadline": NL_DEADLINE.isoformat()}]
    )
    reminders = {r.subscriber_id: b.release_at for b in world.match(call) if b.reminder for r in b.recipients}
    assert reminders == {
        FORGETS.subscriber_id: REMIND,
        amsterdam.subscriber_id: NL_DEADLINE - timedelta(hours=24),
    }

    late = Partition(FORGETS, now=REMIND + timedelta(minutes=1))
    assert [b for b in late.match(update()) if b.reminder] == []  # the call itself is the reminder


def test_the_reminder_email_says_it_is_one() -> None:
    world = Partition(FORGETS, now=T0)
    world.match(update())
    world.deliver()
    world.now = REMIND.timestamp()
    world.deliver()
    reminder = next(a for a in world.received() if a.reminder)
    email = render_alert(
        reminder, EmailIdentity(from_email="a@example.org", unsubscribe_email="u@example.org")
    )
    assert email.subject == "Reminder — URGENT ACTION: Union leaders fired"
    assert "the deadline for this action is close" in email.text and "Email the CEO." in email.text


def test_a_win_published_with_another_utc_offset_still_calls_the_reminders_off() -> None:
    # The call says 17:00+06:00 (11:00 UTC), the win 12:00 UTC, an hour later; compared as
    # strings with their own offsets the win would look older than the call.
    world = Partition(FORGETS, now=T0)
    world.match(update(occurred_at=datetime(2026, 3, 10, 17, 0, tzinfo=timezone(timedelta(hours=6)))))
    world.deliver()
    world.match(update("remedy_won", occurred_at=datetime(2026, 3, 10, 12, 0, tzinfo=UTC)))
    world.now = REMIND.timestamp()
    world.deliver()
    assert [a.reminder for a in world.received()] == [False, False]
