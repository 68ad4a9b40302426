"""Digests and reminders through real workers: time is driven by the worker's clock file, not slept."""

from __future__ import annotations

import os
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas import digest_event_id_for, reminder_event_id_for

from .harness import PipelineHarness, case_update, recipients, subscription

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # 18:00 in Dhaka
DHAKA_MORNING = datetime(2026, 3, 11, 2, 0, tzinfo=UTC)  # 08:00 in Dhaka
DEADLINE = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
REMIND = DEADLINE - timedelta(hours=24)


def _set_clock(path: Path, at: datetime) -> None:
    # Atomically, as the setting asks: a worker never reads half a number.
    partial = path.with_suffix(".tmp")
    partial.write_text(f"{at.timestamp()}\n", "ascii")
    os.replace(partial, path)


def test_a_digest_and_a_reminder_go_out_at_their_time_once_across_a_killed_worker(
    pipeline: PipelineHarness, tmp_path: Path
) -> None:
    clock = tmp_path / "clock"
    _set_clock(clock, T0)
    digest_reader = subscription(
        "digest@example.org",
        countries=["BD"],
        interests=["union_busting"],
        frequency="daily",
        time_zone="Asia/Dhaka",
    )
    activist = subscription("now@example.org", countries=["BD"], interests=["union_busting"])
    first = pipeline.start_worker(MOBILISE_CLOCK_FILE=str(clock))
    pipeline.wait_ready()
    for person in (digest_reader, activist):  # one at a time: see test_follow_ups
        pipeline.subscribe(person)
        pipeline.wait_indexed(person.subscriber_id)

    call = case_update(
        "bd-digest-1",
        occurred_at=T0.isoformat(),
        action_call={
            "kind": "email_brand",
            "instructions": {"en": "Email the CEO before Saturday."},
            "target": {"name": "H&M Group", "email": "ceo@example.com"},
            "deadline": DEADLINE.isoformat(),
            "remind_hours_before": 24,
        },
    )
    news = case_update("bd-digest-2", status="escalated", occurred_at=T0.isoformat())
    for update in (call, news):  # one at a time, so each table write is a changelog batch of its own
        pipeline.publish(update)
        pipeline.wait_processed(update.event_id)

    # The activist gets both at once; the digest reader nothing yet.
    pipeline.wait_until(
        "both updates to reach the activist",
        lambda: len(pipeline.emails_for(call.event_id)) + len(pipeline.emails_for(news.event_id)) == 2,
    )
    assert (
        recipients(pipeline.emails_for(call.event_id) + pipeline.emails_for(news.event_id))
        == [activist.email] * 2
    )
    matched = pipeline.events("case_update.matched")
    assert sum(e["digested"] for e in matched) == 2 and sum(e["reminders"] for e in matched) == 1

    # The worker is killed; the one that replaces it has the digest and the reminder waiting.
    first.stop(signal.SIGKILL)
    pipeline.workers.remove(first)
    second = pipeline.start_worker(MOBILISE_CLOCK_FILE=str(clock))
    pipeline.wait_ready()
    ready = [e for e in second.events() if e.get("event") == "worker.ready"][-1]
    assert ready["digests_waiting"] == 1 and ready["held"] == 1

    # Dhaka's morning: one digest with both cases, the one with a call first.
    _set_clock(clock, DHAKA_MORNING)
    digest_id = digest_event_id_for("daily", DHAKA_MORNING)
    pipeline.wait_until("the digest", lambda: len(pipeline.emails_for(digest_id)) == 1)
    (digest,) = pipeline.emails_for(digest_id)
    assert recipients([digest]) == [digest_reader.email]
    assert digest["Subject"].startswith("Your daily digest: URGENT ACTION")
    body = digest.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert text.index("Email the CEO before Saturday.") < text.index("Case escalated")

    # The day before the deadline: the activist, who did not say they acted, is reminded once.
    _set_clock(clock, REMIND)
    reminder_id = reminder_event_id_for(call.event_id)
    pipeline.wait_until("the reminder", lambda: len(pipeline.emails_for(reminder_id)) == 1)
    assert recipients(pipeline.emails_for(reminder_id)) == [activist.email]
    assert pipeline.emails_for(reminder_id)[0]["Subject"].startswith("Reminder")

    # Later the same day nothing more goes out, and each was recorded once.
    _set_clock(clock, REMIND + timedelta(hours=6))
    pipeline.wait_until(
        "the digest and reminder deliveries to be recorded",
        lambda: {d.event_id for d in pipeline.deliveries()} >= {digest_id, reminder_id},
    )
    outcomes = Counter(
        (d.event_id, d.outcome) for d in pipeline.deliveries() if d.event_id in (digest_id, reminder_id)
    )
    assert outcomes == {(digest_id, "accepted"): 1, (reminder_id, "accepted"): 1}
    assert len(pipeline.emails_for(digest_id)) == 1 and len(pipeline.emails_for(reminder_id)) == 1
