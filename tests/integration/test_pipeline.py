"""The pipeline end to end: real broker, real worker processes, .eml files in an outbox."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from schemas import AlertBatch, DeadLetter

from .harness import PipelineHarness, case_update, recipients, subscription

pytestmark = pytest.mark.integration


def test_a_case_update_reaches_exactly_the_matching_subscribers(pipeline: PipelineHarness) -> None:
    matching = [
        subscription("country@example.org", name="Rahima", countries=["BD"], interests=["union_busting"]),
        subscription("region@example.org", regions=["southern-asia"], brands=["h&m"]),
        subscription(
            "world@example.org", language="fr", worldwide=True, interests=["union_busting", "wages"]
        ),
    ]
    others = [
        subscription("elsewhere@example.org", countries=["KH"], interests=["union_busting"]),
        subscription("other-topic@example.org", countries=["BD"], interests=["wages"], brands=["Zara"]),
        subscription(
            "unconfirmed@example.org", countries=["BD"], interests=["union_busting"], confirmed=False
        ),
        subscription(
            "wins-only@example.org", worldwide=True, interests=["union_busting"], statuses=["remedy_won"]
        ),
    ]
    pipeline.subscribe(*matching, *others)
    pipeline.start_worker()
    pipeline.wait_ready()
    pipeline.wait_indexed(*(s.subscriber_id for s in matching + others))

    update = case_update(
        internal={"workers_at_risk": ["Secret Worker Name"], "note": "do-not-render-this"},
        action_call={
            "kind": "email_brand",
            "instructions": {"en": "Email the CEO and demand reinstatement.", "fr": "Écrivez au PDG."},
            "target": {"name": "H&M Group", "email": "ceo@example.com"},
            "deadline": "2026-12-01T12:00:00Z",
        },
    )
    pipeline.publish(update)
    assert pipeline.wait_processed(update.event_id) == 3

    emails = pipeline.emails_for(update.event_id)
    assert recipients(emails) == sorted(s.email for s in matching)
    by_address = {m["To"].addresses[0].addr_spec: m for m in emails}
    text = by_address["country@example.org"].get_body(("plain",)).get_content()
    assert "Hello Rahima" in text
    assert "Union leaders fired at Dhaka Knitwear" in text
    assert "Deadline: 2026-12-01 12:00 UTC" in text
    assert "you follow Bangladesh and union busting" in text
    assert "the brand H&M" in by_address["region@example.org"].get_body(("plain",)).get_content()
    assert by_address["world@example.org"]["Content-Language"] == "fr"
    assert all(m["List-Unsubscribe"].startswith("<mailto:") for m in emails)
    for message in emails:
        raw = message.as_string()
        assert "Secret Worker Name" not in raw and "do-not-render-this" not in raw

    accepted = [d for d in pipeline.deliveries() if d.outcome == "accepted"]
    assert Counter(d.alert_id for d in accepted) == Counter({m["X-Mobilise-Alert-Id"]: 1 for m in emails})


def test_unsubscribing_stops_alerts(pipeline: PipelineHarness) -> None:
    stays = subscription("stays@example.org", countries=["BD"], interests=["union_busting"])
    leaves = subscription("leaves@example.org", countries=["BD"], interests=["union_busting"])
    pipeline.subscribe(stays, leaves)
    pipeline.start_worker()
    pipeline.wait_ready()
    pipeline.wait_indexed(stays.subscriber_id, leaves.subscriber_id)

    first = case_update(status="escalated")
    pipeline.publish(first)
    pipeline.wait_processed(first.event_id)
    assert recipients(pipeline.emails_for(first.event_id)) == ["leaves@example.org", "stays@example.org"]

    pipeline.unsubscribe(leaves.subscriber_id)
    pipeline.wait_erased(leaves.subscriber_id)
    second = case_update(status="brand_contacted")
    pipeline.publish(second)
    assert pipeline.wait_processed(second.event_id) == 1
    assert recipients(pipeline.emails_for(second.event_id)) == ["stays@example.org"]


def test_a_replayed_case_update_sends_nothing_twice(pipeline: PipelineHarness) -> None:
    person = subscription("once@example.org", countries=["BD"], interests=["union_busting"])
    pipeline.subscribe(person)
    pipeline.start_worker()
    pipeline.wait_ready()
    pipeline.wait_indexed(person.subscriber_id)

    update = case_update()
    pipeline.publish(update)
    pipeline.wait_processed(update.event_id)
    pipeline.publish(update)  # the coordinator's client retried
    later = case_update(status="brand_responded")  # same case: same partition, read after the replay
    pipeline.publish(later)
    pipeline.wait_processed(later.event_id)

    skipped = [e for e in pipeline.events("case_update.replay_skipped") if e["event_id"] == update.event_id]
    assert len(skipped) == 1
    assert len(pipeline.emails_for(update.event_id)) == 1
    assert len(pipeline.emails_for(later.event_id)) == 1
    accepted = Counter(d.event_id for d in pipeline.deliveries() if d.outcome == "accepted")
    assert accepted == {update.event_id: 1, later.event_id: 1}


def test_malformed_records_go_to_dead_letters_and_the_stream_goes_on(pipeline: PipelineHarness) -> None:
    person = subscription("after@example.org", countries=["BD"], interests=["union_busting"])
    pipeline.start_worker()
    pipeline.wait_ready()

    not_json = b"\xff\xfe not json at all"
    bad_country = case_update().model_dump_json().replace('"BD"', '"XX"').encode()
    future_version = (
        case_update().model_dump_json().replace('"schema_version":1', '"schema_version":9').encode()
    )
    bad_subscription = json.dumps({"email": "not-an-address", "created_at": "2026-01-01T00:00:00Z"}).encode()
    pipeline.publish_raw(pipeline.names.case_updates, "bd-2026-1", not_json)
    pipeline.publish_raw(pipeline.names.case_updates, "bd-2026-1", bad_country)
    pipeline.publish_raw(pipeline.names.case_updates, "bd-2026-1", future_version)
    pipeline.publish_raw(pipeline.names.subscriptions, person.subscriber_id, bad_subscription)
    pipeline.subscribe(person)
    pipeline.wait_indexed(person.subscriber_id)
    good = case_update()
    pipeline.publish(good)
    assert pipeline.wait_processed(good.event_id) == 1
    assert recipients(pipeline.emails_for(good.event_id)) == ["after@example.org"]

    letters = [
        DeadLetter.model_validate_json(r.value) for r in pipeline.read_topic(pipeline.names.dead_letters)
    ]
    by_value = {letter.value: letter for letter in letters}
    assert set(by_value) == {not_json, bad_country, future_version, bad_subscription}
    assert by_value[not_json].errors[0].type == "json_invalid"
    assert by_value[bad_country].errors[0].loc == "country"
    assert "ISO 3166-1" in by_value[bad_country].reason
    assert by_value[future_version].errors[0].loc == "schema_version"
    assert {e.loc for e in by_value[bad_subscription].errors} >= {"email"}
    assert by_value[bad_subscription].topic == pipeline.names.subscriptions
    assert by_value[bad_subscription].key == person.subscriber_id.encode()
    case_letters = [letter for letter in letters if letter.topic == pipeline.names.case_updates]
    assert sorted(letter.offset for letter in case_letters) == [0, 1, 2]
    assert all(letter.stage == "fanout" for letter in case_letters)
    raw = pipeline.read_topic(pipeline.names.dead_letters)[0].value
    assert base64.b64decode(json.loads(raw)["value"]) in by_value


def test_two_workers_share_the_partitions_and_alert_each_person_once(pipeline: PipelineHarness) -> None:
    matching = [
        subscription(f"m{i}@example.org", countries=["BD"], interests=["union_busting"]) for i in range(24)
    ]
    others = [subscription(f"o{i}@example.org", countries=["VN"], interests=["wages"]) for i in range(8)]
    pipeline.subscribe(*matching, *others)
    first, second = pipeline.start_worker(), pipeline.start_worker()
    pipeline.wait_ready()
    pipeline.wait_indexed(*(s.subscriber_id for s in matching + others))

    update = case_update()
    pipeline.publish(update)
    assert pipeline.wait_processed(update.event_id) >= len(matching)

    assert recipients(pipeline.emails_for(update.event_id)) == sorted(s.email for s in matching)
    accepted = Counter(d.subscriber_id for d in pipeline.deliveries() if d.outcome == "accepted")
    assert accepted == Counter({s.subscriber_id: 1 for s in matching})
    matched_by = [
        {e["partition"] for e in w.events() if e.get("event") == "case_update.matched"}
        for w in (first, second)
    ]
    assert matched_by[0] and matched_by[1], "both workers should have matched their own partitions"


def test_shards_move_with_their_partitions_when_workers_join_and_leave(pipeline: PipelineHarness) -> None:
    people = [
        subscription(f"p{i}@example.org", countries=["BD"], interests=["union_busting"]) for i in range(16)
    ]
    first = pipeline.start_worker()
    pipeline.wait_ready()
    # One at a time, so that each write of the subscribers table is a batch of its own on
    # its changelog: the embedded broker (Tansu 0.6) reports a partition's end offset as
    # the last batch's *base* offset + 1, so a newcomer's recovery, which reads up to that
    # end, would miss the tail of a multi-record last batch. Kafka reports the true end.
    for person in people:
        pipeline.subscribe(person)
        pipeline.wait_indexed(person.subscriber_id)

    partition_of = {
        e["subscriber_id"]: e["partition"] for e in first.events() if e.get("event") == "subscription.indexed"
    }

    # The newcomer's shards are rebuilt from the subscribers table's changelog before its
    # streams start (it may also re-read records after the first worker's last commit).
    second = pipeline.start_worker()
    pipeline.wait_ready()
    ready = [e for e in second.events() if e.get("event") == "worker.ready"][-1]
    on_its_partitions = sum(p in ready["partitions"] for p in partition_of.values())
    # Records after the first worker's last commit may be re-read rather than recovered:
    # the changelog is flushed before every commit, so it holds at least everything committed.
    assert 0 < ready["subscribers"] <= on_its_partitions
    joined = case_update(status="escalated")
    pipeline.publish(joined)
    pipeline.wait_processed(joined.event_id)
    assert recipients(pipeline.emails_for(joined.event_id)) == sorted(s.email for s in people)
    assert any(e.get("event") == "case_update.matched" and e["matched"] for e in second.events())

    # The first one leaves: the second takes every partition back, shards included.
    assert first.stop() == 0
    pipeline.workers.remove(first)
    pipeline.wait_ready()
    left = case_update(status="brand_responded")
    pipeline.publish(left)
    pipeline.wait_processed(left.event_id)
    assert recipients(pipeline.emails_for(left.event_id)) == sorted(s.email for s in people)
    accepted = Counter(d.alert_id for d in pipeline.deliveries() if d.outcome == "accepted")
    assert set(accepted.values()) == {1} and len(accepted) == 2 * len(people)


def test_alerts_travel_in_batches_of_one_language_and_each_person_is_alerted_once(
    pipeline: PipelineHarness,
) -> None:
    languages = ("en", "fr", "es")
    people = [
        subscription(f"p{i}@example.org", language=languages[i % 3], countries=["BD"], interests=["wages"])
        for i in range(40)
    ]
    pipeline.subscribe(*people)
    pipeline.start_worker(MOBILISE_DELIVERY_BATCH_SIZE="4")
    pipeline.wait_ready()
    pipeline.wait_indexed(*(s.subscriber_id for s in people))

    update = case_update(issues=["wages"])
    pipeline.publish(update)
    assert pipeline.wait_processed(update.event_id) == len(people)

    language_of = {s.subscriber_id: s.language for s in people}
    batches = [
        (r.partition, AlertBatch.model_validate_json(r.value))
        for r in pipeline.read_topic(pipeline.names.alerts)
    ]
    assert batches and all(1 <= len(b.recipients) <= 4 for _, b in batches)
    for _, b in batches:
        assert {language_of[r.subscriber_id] for r in b.recipients} == {b.language}
    carried = Counter(r.subscriber_id for _, b in batches for r in b.recipients)
    assert carried == Counter({s.subscriber_id: 1 for s in people})
    # Each batch sits on the partition of its people's subscriptions.
    subscribed_on = {r.key.decode(): r.partition for r in pipeline.read_topic(pipeline.names.subscriptions)}
    assert all(subscribed_on[r.subscriber_id] == p for p, b in batches for r in b.recipients)
    assert recipients(pipeline.emails_for(update.event_id)) == sorted(s.email for s in people)
    accepted = Counter(d.subscriber_id for d in pipeline.deliveries() if d.outcome == "accepted")
    assert accepted == Counter({s.subscriber_id: 1 for s in people})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has ended; only its parent has not read its status yet.
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def test_a_sink_in_its_own_process_delivers_once_and_is_replaced_when_killed(
    pipeline: PipelineHarness,
) -> None:
    people = [
        subscription(f"p{i}@example.org", countries=["BD"], interests=["union_busting"]) for i in range(3)
    ]
    pipeline.subscribe(*people)
    worker = pipeline.start_worker(MOBILISE_SINK_PROCESS="true")
    pipeline.wait_ready()
    pipeline.wait_indexed(*(p.subscriber_id for p in people))

    first = case_update()
    pipeline.publish(first)
    assert pipeline.wait_processed(first.event_id) == 3
    (ready,) = pipeline.events("sink_process.ready")
    assert ready["sink"] == "outbox" and ready["pid"] != worker.process.pid

    os.kill(ready["pid"], signal.SIGKILL)  # the sink's process dies; the worker does not
    second = case_update(status="escalated")
    pipeline.publish(second)
    assert pipeline.wait_processed(second.event_id) == 3
    assert len(pipeline.events("sink_process.ready")) == 2 and worker.process.poll() is None

    for update in (first, second):
        assert recipients(pipeline.emails_for(update.event_id)) == sorted(p.email for p in people)
    accepted = Counter(d.alert_id for d in pipeline.deliveries() if d.outcome == "accepted")
    assert len(accepted) == 6 and set(accepted.values()) == {1}

    # A worker killed outright leaves no sink process behind: it reads the end of the pipe.
    child = pipeline.events("sink_process.ready")[-1]["pid"]
    worker.stop(signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the sink's process outlived its worker"
