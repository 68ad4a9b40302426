"""`mobilise dead-letters` and `mobilise status` against the real broker and real workers.

The replay test fails records two ways a network meets in practice, fixes the causes, and
replays them with the CLI: an alert the mail server refused (550), and a case update
naming an interest the deployment had not added yet (``MOBILISE_EXTRA_INTERESTS``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mobilise.broker import EmbeddedBroker, free_port
from mobilise.dead_letters import dead_letter_id
from mobilise.replay import REPLAY_HEADER, markers_topic
from mobilise.snapshot import consumer, read_topic
from schemas import DeadLetter
from tests.unit.test_smtp_sink import SmtpServer

from .harness import case_update, subscription
from .smtp_pipeline import SmtpPipeline

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    with SmtpServer("none", login=False) as running:
        yield running


@pytest.fixture
def pipeline(broker: EmbeddedBroker, tmp_path: Path, server: SmtpServer) -> Iterator[SmtpPipeline]:
    harness = SmtpPipeline(broker, tmp_path, server)
    try:
        yield harness
    finally:
        harness.stop()


def _printed(result: subprocess.CompletedProcess[str], word: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(word + " ")]


def test_replaying_dead_letters_after_a_fix_delivers_each_alert_once(
    pipeline: SmtpPipeline, server: SmtpServer
) -> None:
    alice = subscription("alice@example.org", countries=["BD"], interests=["union_busting"], brands=["H&M"])
    bob = subscription("bob@example.org", countries=["BD"], interests=["union_busting"])
    dave = subscription("dave@example.org", countries=["BD"], interests=["union_busting"])
    people = [alice, bob, dave]
    pipeline.subscribe(*people)
    server.mailbox.refusals.update(
        {p.email: "550 5.1.1 Mailbox unavailable" for p in (bob, dave)}  # a misconfigured relay
    )
    pipeline.start_worker()
    pipeline.wait_ready()
    pipeline.wait_indexed(*(p.subscriber_id for p in people))

    refused = case_update(status="escalated")
    pipeline.publish(refused)
    assert pipeline.wait_processed(refused.event_id) == 3
    # Before the deployment adds the interest, such an update fails its schema.
    with pytest.MonkeyPatch.context() as env:  # the coordinator's side knows the interest already
        env.setenv("MOBILISE_EXTRA_INTERESTS", "water_pollution")
        early = case_update(status="urgent_action", issues=["water_pollution"])
    pipeline.publish(early)
    pipeline.wait_until("three dead letters", lambda: len(pipeline.dead_letters()) == 3)
    letters = pipeline.dead_letters()
    by_stage = Counter(letter.stage for letter in letters)
    assert by_stage == {"delivery:smtp": 2, "fanout": 1}
    unknown_interest = next(letter for letter in letters if letter.stage == "fanout")
    assert (
        "water_pollution" in unknown_interest.reason and "MOBILISE_EXTRA_INTERESTS" in unknown_interest.reason
    )
    assert [r.rcpt_tos for r in server.mailbox.messages] == [["alice@example.org"]]

    listed = pipeline.cli("dead-letters", "list")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 3
    assert sum("delivery:smtp" in line and "550" in line for line in listed.stdout.splitlines()) == 2
    shown = pipeline.cli("dead-letters", "show", dead_letter_id(unknown_interest))
    assert shown.returncode == 0, shown.stderr
    assert f"original      {pipeline.names.case_updates} partition" in shown.stdout
    assert '"water_pollution"' in shown.stdout  # the original value, decoded and pretty-printed
    assert "issues.0: Value error, unknown interest 'water_pollution'" in shown.stdout

    # The fixes: the relay takes mail again, the deployment adds the interest (a restart),
    # and meanwhile Dave left: his refused alert must not reach him any more.
    server.mailbox.refusals.clear()
    pipeline.unsubscribe(dave.subscriber_id)
    pipeline.wait_erased(dave.subscriber_id)
    pipeline.wait_until("the group to commit everything", lambda: pipeline.lag() == 0)
    _first, second = pipeline.restart_worker(MOBILISE_EXTRA_INTERESTS="water_pollution")

    dry = pipeline.cli("dead-letters", "replay", "--all", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert len(_printed(dry, "would replay")) == 2
    assert dry.stdout.rstrip().endswith("2 dead letter(s) would be replayed, 1 skipped")
    assert pipeline.read_topic(pipeline.names.case_updates)[-1].headers == []  # nothing sent

    replay = pipeline.cli("dead-letters", "replay", "--all")
    assert replay.returncode == 0, replay.stderr
    assert len(_printed(replay, "replayed")) == 2
    (skipped,) = _printed(replay, "skipped")
    assert dave.subscriber_id in skipped and "erased since" in skipped
    copies = [r for r in pipeline.read_topic(pipeline.names.case_updates) if r.headers]
    assert [dict(r.headers)[REPLAY_HEADER].decode() for r in copies] == [dead_letter_id(unknown_interest)]

    assert pipeline.wait_processed(early.event_id) == 1  # Alice follows H&M; Bob and Dave do not
    bob_alert = next(letter for letter in letters if letter.key == bob.subscriber_id.encode())
    pipeline.wait_until(
        "Bob's replayed alert to be delivered",
        lambda: any(
            d.subscriber_id == bob.subscriber_id and d.outcome == "accepted" for d in pipeline.deliveries()
        ),
    )
    received = Counter((r.rcpt_tos[0], r.message()["X-Mobilise-Event-Id"]) for r in server.mailbox.messages)
    assert received == {
        ("alice@example.org", refused.event_id): 1,
        ("bob@example.org", refused.event_id): 1,
        ("alice@example.org", early.event_id): 1,
    }
    assert bob_alert.topic == pipeline.names.alerts
    # Bob's alert came from the replay, not from the new worker re-reading the update.
    assert not any(
        e["event_id"] == refused.event_id for e in second.events() if e.get("event") == "case_update.matched"
    )

    # Again: everything is remembered as replayed, so nothing is sent.
    again = pipeline.cli("dead-letters", "replay", "--all")
    assert again.returncode == 0, again.stderr
    assert _printed(again, "replayed") == [] and len(_printed(again, "skipped")) == 3
    assert "0 dead letter(s) replayed, 3 skipped" in again.stdout

    # Forced: the copies go out again, and the pipeline's idempotency absorbs them.
    forced = pipeline.cli("dead-letters", "replay", "--all", "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(_printed(forced, "replayed")) == 2
    pipeline.wait_until(
        "the forced copies to be recognised as already done",
        lambda: (
            any(
                e["event_id"] == early.event_id
                for e in second.events()
                if e.get("event") == "case_update.replay_skipped"
            )
            and sum(
                d.subscriber_id == bob.subscriber_id and d.outcome == "duplicate"
                for d in pipeline.deliveries()
            )
            == 1
        ),
    )
    assert len(server.mailbox.messages) == 3
    assert len(pipeline.dead_letters()) == 3  # nothing failed again
    with consumer([pipeline.broker.bootstrap]) as reader:  # one partition: not the harness's reader
        markers = read_topic(reader, markers_topic(pipeline.names.prefix))
    assert {r.key.decode() for r in markers} == {dead_letter_id(unknown_interest), dead_letter_id(bob_alert)}
    accepted = {d.subscriber_id for d in pipeline.deliveries() if d.outcome == "accepted"}
    assert dave.subscriber_id not in accepted

    status = pipeline.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["dead_letters"]["count"] == 3 and report["dead_letters"]["replayed"] == 2
    assert [s["sink"] for s in report["sinks"]] == ["smtp"] and report["sinks"][0]["last_accepted_at"]
    assert report["group"]["group_id"] == pipeline.app_id
    lag = {(p["topic"], p["partition"]): p for p in report["group"]["lag"]}
    assert len(lag) == 4 * pipeline.partitions
    assert len(report["group"]["members"]) == 1
    text = pipeline.cli("status")
    assert text.returncode == 0, text.stderr
    assert "Dead letters: 3 (2 replayed)" in text.stdout and "smtp" in text.stdout


def test_inspecting_and_replaying_filters_and_refusals(pipeline: SmtpPipeline) -> None:
    """Without workers: the commands read and write the topics only."""
    names = pipeline.names
    dead = [
        DeadLetter.model_validate_json(
            json.dumps(
                {
                    "stage": stage,
                    "reason": reason,
                    "topic": topic,
                    "partition": 0,
                    "offset": offset,
                    "key": "a2V5",
                    "value": "/w==",  # b"\xff": not text, shown as base64
                    "at": f"2026-01-01T00:00:0{offset}Z",
                }
            )
        )
        for stage, reason, topic, offset in [
            ("fanout", "not json", names.case_updates, 1),
            ("subscriptions", "email: missing", names.subscriptions, 2),
            ("fanout", "not json either", names.case_updates, 3),
        ]
    ]
    pipeline.publish_raw(names.dead_letters, "k", dead[0].model_dump_json().encode())
    pipeline.publish_raw(names.dead_letters, "k", dead[1].model_dump_json().encode())
    pipeline.publish_raw(names.dead_letters, "k", dead[2].model_dump_json().encode())

    only_fanout = pipeline.cli("dead-letters", "list", "--stage", "fanout", "--limit", "1")
    assert only_fanout.returncode == 0, only_fanout.stderr
    lines = only_fanout.stdout.splitlines()
    assert lines[0].startswith("2026-01-01 00:00:03Z  " + dead_letter_id(dead[2]))
    assert lines[1] == "(the latest 1 of 2; --limit to see more)"
    by_topic = pipeline.cli("dead-letters", "list", "--topic", "subscriptions")
    assert by_topic.stdout.count("\n") == 1 and "email: missing" in by_topic.stdout

    shown = pipeline.cli("dead-letters", "show", dead_letter_id(dead[0]))
    assert "value\n  base64:/w==" in shown.stdout and "key           key" in shown.stdout
    missing = pipeline.cli("dead-letters", "show", "dl-000000000000")
    assert missing.returncode == 2 and "no dead letter dl-000000000000" in missing.stderr
    neither = pipeline.cli("dead-letters", "replay")
    assert neither.returncode == 2 and "--all" in neither.stderr
    unknown = pipeline.cli("dead-letters", "replay", "--id", "dl-nope")
    assert unknown.returncode == 2 and "dl-nope" in unknown.stderr

    one = pipeline.cli("dead-letters", "replay", "--id", dead_letter_id(dead[1]))
    assert one.returncode == 0, one.stderr
    assert "1 dead letter(s) replayed, 0 skipped" in one.stdout
    (copy,) = pipeline.read_topic(names.subscriptions)
    assert (copy.key, copy.value, copy.partition) == (b"key", b"\xff", 0)
    assert dict(copy.headers)[REPLAY_HEADER] == dead_letter_id(dead[1]).encode()


def test_the_commands_name_the_variable_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    env = os.environ | {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "MOBILISE_DATA_DIR": str(tmp_path),
    }
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "mobilise", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in (["status"], ["dead-letters", "list"], ["dead-letters", "replay", "--all"])
    ]
    for process in running:
        _out, err = process.communicate(timeout=60)
        assert process.returncode == 1
        assert "cannot reach Kafka at 127.0.0.1:" in err and "KAFKA_BOOTSTRAP_SERVERS" in err
        assert "Traceback" not in err
