"""Digests: one email at the person's local morning gathering what matched since the last (injected clock)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from connectors.mime import alert_message
from connectors.rendering import EmailIdentity, fill, render_alert
from connectors.sendgrid_mail import plan_requests
from mobilise.links import PublicLinks
from schemas import Alert, AlertBatch, CaseUpdate, MatchReason, Recipient, Subscription, digest_event_id_for
from streams.digests import digest_due_at, digest_entries

from .world import Partition

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # a Tuesday; 18:00 in Dhaka
DHAKA_MORNING = datetime(2026, 3, 11, 2, 0, tzinfo=UTC)  # 08:00 in Dhaka the next day
AMSTERDAM_MONDAY = datetime(2026, 3, 16, 7, 0, tzinfo=UTC)  # 08:00 CET, Monday 16 March


def subscription(email: str, **fields: Any) -> Subscription:
    values: dict[str, Any] = {
        "email": email,
        "countries": ["BD"],
        "interests": ["union_busting"],
        "confirmed": True,
        "created_at": "2026-01-01T00:00:00Z",
        **fields,
    }
    return Subscription.model_validate_json(json.dumps(values))


def update(case_id: str, status: str, occurred_at: datetime, **fields: Any) -> CaseUpdate:
    values: dict[str, Any] = {
        "case_id": case_id,
        "status": status,
        "title": {"en": f"{case_id} {status}", "fr": f"{case_id} {status} (fr)"},
        "summary": {"en": f"What happened in {case_id}."},
        "country": "BD",
        "issues": ["union_busting"],
        "occurred_at": occurred_at.isoformat(),
        "published_by": "coordinator@example.org",
        "internal": {"workers_at_risk": "Rina Akter"},
        **fields,
    }
    return CaseUpdate.model_validate_json(json.dumps(values))


CALL = {
    "kind": "email_brand",
    "instructions": {"en": "Email the CEO."},
    "target": {"name": "H&M Group", "email": "ceo@example.com"},
    "deadline": "2026-03-20T00:00:00Z",
}

DAILY = subscription("daily@example.org", frequency="daily", time_zone="Asia/Dhaka")
WEEKLY = subscription("weekly@example.org", frequency="weekly", home_country="NL")
NOW = subscription("now@example.org")


@pytest.mark.parametrize(
    ("frequency", "zone", "after", "expected"),
    [
        ("daily", "Asia/Dhaka", T0, DHAKA_MORNING),
        ("daily", "Asia/Dhaka", DHAKA_MORNING, DHAKA_MORNING + timedelta(days=1)),  # strictly after
        ("daily", "Asia/Dhaka", DHAKA_MORNING - timedelta(seconds=1), DHAKA_MORNING),
        ("weekly", "Europe/Amsterdam", T0, AMSTERDAM_MONDAY),
        # New York moves to summer time on Sunday 8 March 2026: Monday 08:00 EDT is 12:00 UTC.
        (
            "weekly",
            "America/New_York",
            datetime(2026, 3, 5, tzinfo=UTC),
            datetime(2026, 3, 9, 12, 0, tzinfo=UTC),
        ),
        ("daily", "UTC", datetime(2026, 3, 10, 7, 59, tzinfo=UTC), datetime(2026, 3, 10, 8, 0, tzinfo=UTC)),
    ],
)
def test_the_digest_time_is_the_next_local_morning_in_the_persons_zone(
    frequency: str, zone: str, after: datetime, expected: datetime
) -> None:
    assert digest_due_at(frequency, zone, after) == expected


def test_a_subscription_may_choose_a_daily_or_weekly_digest_and_nothing_else() -> None:
    assert DAILY.frequency == "daily" and WEEKLY.frequency == "weekly" and NOW.frequency == "immediate"
    with pytest.raises(ValidationError) as caught:
        subscription("x@example.org", frequency="hourly")
    assert caught.value.errors()[0]["loc"] == ("frequency",)


def test_only_an_urgent_action_may_bypass_digests_and_the_error_says_so() -> None:
    assert update("bd-9", "urgent_action", T0, bypass_digests=True).bypass_digests
    with pytest.raises(ValidationError, match="bypass_digests is for urgent_action updates only"):
        update("bd-9", "escalated", T0, bypass_digests=True)


def test_an_update_without_the_new_fields_keeps_the_event_id_it_always_had() -> None:
    # Derived event ids are hashes of the content: fields added later must not change them
    # (the id was computed before bypass_digests and remind_hours_before existed).
    fields = {
        "case_id": "c1",
        "status": "urgent_action",
        "title": {"en": "t"},
        "summary": {"en": "s"},
        "country": "BD",
        "issues": ["wages"],
        "occurred_at": "2026-01-01T00:00:00Z",
        "published_by": "x",
        "action_call": {"kind": "email_brand", "instructions": {"en": "i"}, "target": {"name": "H"}},
    }
    assert CaseUpdate.model_validate_json(json.dumps(fields)).event_id == "evt-7e43659b8251b7d3e2a13700"
    fields["action_call"]["remind_hours_before"] = 24  # type: ignore[index]
    fields["action_call"]["deadline"] = "2026-01-05T00:00:00Z"  # type: ignore[index]
    assert CaseUpdate.model_validate_json(json.dumps(fields)).event_id != "evt-7e43659b8251b7d3e2a13700"


def test_digests_gather_the_latest_status_per_case_open_calls_first_once_at_the_local_morning() -> None:
    world = Partition(DAILY, WEEKLY, NOW, now=T0)
    opened = update("bd-1", "opened", T0 - timedelta(hours=3))
    escalated = update("bd-1", "escalated", T0 - timedelta(hours=1))
    call = update("bd-2", "urgent_action", T0 - timedelta(hours=2), action_call=CALL)
    bypass = update("bd-3", "urgent_action", T0, bypass_digests=True, action_call=CALL)
    for u in (opened, escalated, call, bypass):
        world.match(u)
    world.deliver()

    # Immediate people get every update at once; digest people only the one that bypasses.
    got = {(a.subscriber_id, a.event_id) for a in world.received()}
    assert {e for s, e in got if s == NOW.subscriber_id} == {
        u.event_id for u in (opened, escalated, call, bypass)
    }
    assert {e for s, e in got if s != NOW.subscriber_id} == {bypass.event_id}
    assert world.metrics.digest_entries._value.get() == 6  # 3 updates x 2 people

    world.now = (DHAKA_MORNING - timedelta(seconds=1)).timestamp()
    assert world.send_digests() == []  # never early

    world.now = DHAKA_MORNING.timestamp()
    (batch,) = world.send_digests()
    assert [r.subscriber_id for r in batch.recipients] == [DAILY.subscriber_id]
    assert batch.event_id == digest_event_id_for("daily", DHAKA_MORNING) and batch.digest_frequency == "daily"
    assert [(e.case.case_id, e.case.status.value, e.earlier) for e in batch.digest] == [
        ("bd-2", "urgent_action", ()),  # an open action call first
        ("bd-1", "escalated", ("opened",)),  # the latest status, and what came before
    ]
    world.deliver()
    digests = [a for a in world.received() if a.digest]
    assert [(a.subscriber_id, len(a.digest)) for a in digests] == [(DAILY.subscriber_id, 2)]

    # Once: the timer again, a restart, and a replay of the same updates change nothing.
    assert world.send_digests() == []
    world.restart()
    for u in (opened, escalated, call):
        world.match(u)
    world.now = (DHAKA_MORNING + timedelta(days=1)).timestamp()
    assert world.send_digests() == []

    # The weekly one comes on Monday morning in Amsterdam, with the same cases.
    world.now = AMSTERDAM_MONDAY.timestamp()
    (weekly,) = world.send_digests()
    assert [r.subscriber_id for r in weekly.recipients] == [WEEKLY.subscriber_id]
    assert weekly.digest_frequency == "weekly" and len(weekly.digest) == 2
    world.deliver()
    assert sorted(a.subscriber_id for a in world.received() if a.digest) == sorted(
        [DAILY.subscriber_id, WEEKLY.subscriber_id]
    )


def test_a_crash_after_the_digest_went_out_but_before_it_was_forgotten_sends_it_once() -> None:
    world = Partition(DAILY, now=T0)
    world.match(update("bd-1", "opened", T0))
    before = json.loads(json.dumps(world.digests_table))
    world.now = DHAKA_MORNING.timestamp()
    (first,) = world.send_digests()
    world.deliver()
    # The worker died before the settled row reached the changelog: the old row comes back.
    world.digests_table.clear()
    world.digests_table.update(before)
    # An update matched after the morning belongs to the next digest, not to this one.
    world.match(update("bd-4", "opened", DHAKA_MORNING + timedelta(minutes=1)))
    world.restart()
    (again,) = world.send_digests()
    assert again.batch_id == first.batch_id and again.recipients == first.recipients
    assert [e.event_id for e in again.digest] == [e.event_id for e in first.digest]
    world.deliver()
    assert len([a for a in world.received() if a.digest]) == 1
    assert {e.outcome.value for e in world.bulk.events if e.event_id == first.event_id} == {
        "accepted",
        "duplicate",
    }


def test_people_who_left_before_their_morning_get_no_digest_and_their_data_goes() -> None:
    gone = subscription("gone@example.org", frequency="daily", time_zone="Asia/Dhaka")
    world = Partition(DAILY, gone, now=T0)
    world.match(update("bd-1", "opened", T0))
    assert gone.subscriber_id in world.digests_table
    world.subscribe(gone.subscriber_id, None)  # erased
    assert gone.subscriber_id not in world.digests_table
    world.now = DHAKA_MORNING.timestamp()
    (batch,) = world.send_digests()
    assert [r.subscriber_id for r in batch.recipients] == [DAILY.subscriber_id]


def test_people_with_the_same_digest_share_a_batch_and_each_has_their_own_alert_id() -> None:
    second = subscription("daily2@example.org", frequency="daily", time_zone="Asia/Dhaka")
    french = subscription("fr@example.org", frequency="daily", time_zone="Asia/Dhaka", language="fr")
    world = Partition(DAILY, second, french, now=T0)
    world.match(update("bd-1", "opened", T0))
    world.now = DHAKA_MORNING.timestamp()
    batches = world.send_digests()
    assert sorted((b.language, len(b.recipients)) for b in batches) == [("en", 2), ("fr", 1)]
    ids = [r.alert_id for b in batches for r in b.recipients]
    assert len(set(ids)) == 3


def _digest_alert(language: str = "en", links: bool = True) -> tuple[Alert, EmailIdentity]:
    entries = digest_entries(
        [
            ("evt-a", update("bd-1", "opened", T0 - timedelta(hours=2)).public()),
            ("evt-b", update("bd-1", "escalated", T0 - timedelta(hours=1)).public()),
            ("evt-c", update("bd-2", "urgent_action", T0, action_call=CALL).public()),
        ]
    )
    batch = AlertBatch(
        batch_id="alb-1",
        event_id=digest_event_id_for("daily", DHAKA_MORNING),
        language=language,
        case=entries[0].case,
        digest=entries,
        digest_frequency="daily",
        created_at=DHAKA_MORNING,
        recipients=(
            Recipient(
                alert_id="alr-1",
                subscriber_id="sub-1",
                email="a@example.org",
                name="Rina",
                reason=MatchReason(),
            ),
        ),
    )
    identity = EmailIdentity(
        from_email="Alerts <alerts@example.org>",
        unsubscribe_email="unsubscribe@example.org",
        links=PublicLinks("https://act.example.org", SecretStr("k" * 32)) if links else None,
    )
    return batch.alerts()[0], identity


def test_the_digest_email_lists_each_case_with_its_call_and_own_i_did_this_link_and_no_internal_field() -> (
    None
):
    alert, identity = _digest_alert()
    email = render_alert(alert, identity)
    assert email.subject == "Your daily digest: URGENT ACTION: bd-2 urgent_action (+1)"
    text = email.text
    assert text.index("bd-2 urgent_action") < text.index("bd-1 escalated")  # the call first
    assert "Before that: new case" in text and "Email the CEO." in text and "Hello Rina," in text
    assert (
        text.count("https://act.example.org/acted/")
        == 1
        == email.html.count("https://act.example.org/acted/")
    )
    assert "one digest a day" in text and "https://act.example.org/unsubscribe/" in text
    assert "%mobilise_" not in text + email.html
    assert "Rina Akter" not in text + email.html  # the internal field is not even in the alert
    french = render_alert(_digest_alert("fr")[0], identity)
    assert french.subject.startswith("Votre résumé du jour") and "(fr)" in french.text
    plain = render_alert(*_digest_alert(links=False))
    assert 'with the subject "unsubscribe sub-1"' in plain.text and "/acted/" not in plain.text


def test_every_email_sink_sends_the_digest_as_rendered_and_sendgrid_shares_one_body() -> None:
    alert, identity = _digest_alert()
    reference = render_alert(alert, identity)
    message = alert_message(alert, identity)
    assert message["Subject"] == reference.subject
    text = message.get_body(("plain",))
    assert text is not None and text.get_content().rstrip("\n") == reference.text.rstrip("\n")

    other = alert.model_copy(update={"alert_id": "alr-2", "subscriber_id": "sub-2", "email": "b@example.org"})
    requests, failed = plan_requests([alert, other], identity)
    assert failed == [] and len(requests) == 1
    (request,) = requests
    assert len(request.body["personalizations"]) == 2
    for personalization, person in zip(request.body["personalizations"], (alert, other), strict=True):
        filled = fill(request.body["content"][0]["value"], personalization["substitutions"])
        assert filled == render_alert(person, identity).text
