"""Scheduled waves end to end: held until their time, released once across a restart, cancelled."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from schemas import CaseUpdate, wave_id_for

from .harness import PipelineHarness, Worker, case_update, recipients, subscription

pytestmark = pytest.mark.integration

SOON = timedelta(seconds=10)
"""How far ahead the first wave is: its alerts are held at least until then."""


def _waved(case_id: str, send_at: datetime, wave_id: str | None = None) -> CaseUpdate:
    wave: dict[str, str] = {"send_at": send_at.isoformat()}
    if wave_id is not None:
        wave["wave_id"] = wave_id
    return case_update(
        case_id,
        action_call={
            "kind": "email_brand",
            "instructions": {"en": "Email the CEO on the day of action."},
            "target": {"name": "H&M Group", "email": "ceo@example.com"},
            "wave": wave,
        },
    )


def _matched_on(pipeline: PipelineHarness, update: CaseUpdate) -> set[int]:
    matched = pipeline.events("case_update.matched")
    return {e["partition"] for e in matched if e["event_id"] == update.event_id}


def _wait_held(pipeline: PipelineHarness, update: CaseUpdate, people: int) -> None:
    pipeline.wait_until(
        f"{update.event_id} to be matched on every partition",
        lambda: (
            {
                e["partition"]
                for e in pipeline.events("case_update.matched")
                if e["event_id"] == update.event_id
            }
            == set(range(pipeline.partitions))
        ),
    )
    pipeline.wait_until(
        f"{people} alerts of {update.event_id} to be held",
        lambda: (
            sum(e["alerts"] for e in pipeline.events("alerts.held") if e["event_id"] == update.event_id)
            >= people
        ),
    )


def test_a_wave_is_held_until_its_time_survives_a_restart_and_a_cancelled_one_is_never_sent(
    pipeline: PipelineHarness,
) -> None:
    people = [
        subscription(
            "dhaka@example.org", countries=["BD"], interests=["union_busting"], time_zone="Asia/Dhaka"
        ),
        subscription("ams@example.org", countries=["BD"], interests=["union_busting"], home_country="NL"),
        subscription(
            "nyc@example.org", countries=["BD"], interests=["union_busting"], time_zone="America/New_York"
        ),
    ]
    first = pipeline.start_worker()
    pipeline.wait_ready()
    for person in people:  # one at a time: see test_follow_ups
        pipeline.subscribe(person)
        pipeline.wait_indexed(person.subscriber_id)

    # Nothing here depends on how fast the machine is: "never early" is read from the delivery
    # times, and the waves that must still be held at the restart are hours away.
    send_at = datetime.now(UTC).replace(microsecond=0) + SOON
    later = send_at + timedelta(hours=2)
    day_of_action = _waved("bd-wave-1", send_at)
    called_off = _waved("bd-wave-2", later, wave_id="called-off")
    tomorrow = _waved("bd-wave-3", later, wave_id="tomorrow")
    # One after the other, so that each held row is a changelog batch of its own (Tansu, see
    # test_pipeline): the restart below recovers them from the changelog.
    for update in (day_of_action, called_off, tomorrow):
        pipeline.publish(update)
        # A slow machine may reach the first wave's time before matching it: only the two
        # waves hours away are sure to be held.
        _wait_held(pipeline, update, 0 if update is day_of_action else len(people))

    # The first wave goes out at its time, once to each person, never early.
    pipeline.wait_until(
        "the wave to be delivered",
        lambda: len(pipeline.emails_for(day_of_action.event_id)) == len(people),
        timeout=SOON.total_seconds() + 90,
    )
    assert recipients(pipeline.emails_for(day_of_action.event_id)) == sorted(p.email for p in people)
    delivered = [d for d in pipeline.deliveries() if d.event_id == day_of_action.event_id]
    assert Counter(d.outcome for d in delivered) == {"accepted": len(people)}
    assert all(d.at >= send_at for d in delivered)

    # A coordinator calls the second wave off with the CLI: one copy on every partition.
    done = subprocess.run(
        [sys.executable, "-m", "mobilise", "waves", "cancel", "called-off", "--case", "bd-wave-2"],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "4 partitions" in done.stdout
    pipeline.wait_until(
        "the called-off wave's alerts to be cancelled",
        lambda: (
            {d.subscriber_id for d in pipeline.deliveries() if d.outcome == "cancelled"}
            == {p.subscriber_id for p in people}
        ),
    )

    # The worker stops cleanly in the middle of the day: the third wave is still held, and
    # another worker with the same app id holds it, and only it.
    held_on = _matched_with_people(first, tomorrow)
    assert first.stop() == 0
    pipeline.workers.remove(first)
    second = pipeline.start_worker()
    pipeline.wait_ready()
    ready = [e for e in second.events() if e.get("event") == "worker.ready"][-1]
    assert ready["held"] == len(held_on)  # one batch per partition with people, recovered
    assert pipeline.emails_for(called_off.event_id) == [] == pipeline.emails_for(tomorrow.event_id)
    # Nothing of the first wave went out again, nor anything of the cancelled one.
    again = [d for d in pipeline.deliveries() if d.event_id in (day_of_action.event_id, called_off.event_id)]
    assert Counter(d.outcome for d in again) == {"accepted": len(people), "cancelled": len(people)}
    assert wave_id_for("bd-wave-1", day_of_action.action_call.wave) != "called-off"  # type: ignore[union-attr]


def _matched_with_people(worker: Worker, update: CaseUpdate) -> set[int]:
    matched = [e for e in worker.events() if e.get("event") == "case_update.matched"]
    return {e["partition"] for e in matched if e["event_id"] == update.event_id and e["matched"]}
