"""Faults against the real broker and real workers: a flood of malformed records, a mail server down.

The flood's records come from hypothesis strategies: random bytes, JSON that is not an
object, fields of the wrong type, huge fields, unknown schema versions, missing fields,
and (on subscriptions) valid records under the wrong key, interleaved with good records.
Each example publishes one such mix on case-updates and on subscriptions to a worker that
runs for the whole module, and checks that every bad record is dead-lettered exactly once
with a reason, that every good one is processed, and that the worker stays up and small.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mobilise.broker import EmbeddedBroker
from schemas import CaseStatus, CaseUpdate, DeadLetter
from streams.admin import publish
from tests.unit.test_smtp_sink import SmtpServer

from .harness import PipelineHarness, Worker, case_update, subscription
from .smtp_pipeline import SmtpPipeline

pytestmark = pytest.mark.integration

RSS_LIMIT_MB = 400
"""A worker idles at about 70 MB here and stays under 100 MB through the flood, whose
examples carry up to ~10 MB of huge fields each."""
RSS_GROWTH_LIMIT_MB = 200
OUTAGE_SECONDS = 10.0


# -- the records -----------------------------------------------------------------------------

_VALID_UPDATE: dict[str, Any] = case_update().model_dump(mode="json")
_VALID_SUBSCRIPTION: dict[str, Any] = subscription(
    "someone@example.org", countries=["BD"], interests=["wages"]
).model_dump(mode="json")
_UPDATE_REQUIRED = (
    "case_id",
    "status",
    "title",
    "summary",
    "country",
    "issues",
    "occurred_at",
    "published_by",
)
_SUBSCRIPTION_REQUIRED = ("email", "created_at")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _replaced(valid: dict[str, Any], field: str, value: Any) -> bytes:
    return _dumps({**valid, field: value})


def _without(valid: dict[str, Any], fields: frozenset[str]) -> bytes:
    return _dumps({k: v for k, v in valid.items() if k not in fields})


def _huge(valid: dict[str, Any], field: str, size: int) -> bytes:
    text = "x" * size
    if field in ("title", "summary"):
        return _replaced(valid, field, {"en": text})  # over the 20,000 characters allowed
    if field == "brands":
        return _replaced(valid, field, [text])  # a brand is at most 200 characters
    return _replaced(valid, field, text)  # too long for the field, or an unknown field


def malformed(valid: dict[str, Any], required: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """Bad values for the topic whose valid records look like ``valid``."""
    fields = sorted(valid)
    return st.one_of(
        st.binary(max_size=300),
        json_values.filter(lambda v: not isinstance(v, dict)).map(_dumps),
        st.builds(_replaced, st.just(valid), st.sampled_from(fields), json_values),
        st.builds(
            _huge,
            st.just(valid),
            st.sampled_from([*required[:3], "brands", "title", "summary", "notes", "name"]),
            st.integers(min_value=20_001, max_value=400_000),
        ),
        st.builds(
            _replaced, st.just(valid), st.just("schema_version"), st.integers().filter(lambda v: v != 1)
        ),
        st.builds(_without, st.just(valid), st.frozensets(st.sampled_from(required), min_size=1)),
    )


def _invalid_update(raw: bytes) -> bool:
    try:
        CaseUpdate.model_validate_json(raw)
    except ValidationError:
        return True
    return False


# Case updates: anything invalid (a wrong type can happen to be valid, e.g. another text).
bad_updates = malformed(_VALID_UPDATE, _UPDATE_REQUIRED).filter(_invalid_update)
# Subscriptions: published under keys that are no subscriber's id, so even a valid record
# (the last strategy) is refused: subscriptions must be keyed by subscriber_id.
bad_subscriptions = st.one_of(
    malformed(_VALID_SUBSCRIPTION, _SUBSCRIPTION_REQUIRED), st.just(_dumps(_VALID_SUBSCRIPTION))
)

GOOD = None
"""Marks where a good record goes in a drawn mix."""


def mixes(bad: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[bytes | None]]:
    """Bad values with good ones (``GOOD``) between them; at least one good one."""
    return st.lists(st.one_of(bad, bad, bad, st.just(GOOD)), min_size=8, max_size=40).filter(
        lambda mix: GOOD in mix
    )


# -- the pipeline that takes the flood -------------------------------------------------------


class Flood:
    """One pipeline and worker for the whole module, with the people every good update reaches."""

    def __init__(self, pipeline: PipelineHarness) -> None:
        self.pipeline = pipeline
        self.people = [
            subscription(f"steady{i}@example.org", countries=["BD"], interests=["union_busting"])
            for i in range(3)
        ]
        pipeline.subscribe(*self.people)
        self.worker: Worker = pipeline.start_worker()
        pipeline.wait_ready()
        pipeline.wait_indexed(*(p.subscriber_id for p in self.people))
        self.baseline_rss_mb = _rss_mb(self.worker)
        self.bad_published = 0


@pytest.fixture(scope="module")
def flood(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flood]:
    pipeline = PipelineHarness(broker, tmp_path_factory.mktemp("flood"))
    try:
        yield Flood(pipeline)
    finally:
        pipeline.stop()


def _rss_mb(worker: Worker) -> float:
    for line in Path(f"/proc/{worker.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/<pid>/status")


@settings(
    max_examples=5,
    deadline=None,
    database=None,  # the pipeline's state is not the example's: replaying old examples proves nothing
    phases=[Phase.explicit, Phase.generate],  # shrinking would rerun minute-long examples
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(data=st.data())
def test_a_flood_of_malformed_records_is_dead_lettered_and_good_records_go_through(
    flood: Flood, data: st.DataObject
) -> None:
    pipeline, names = flood.pipeline, flood.pipeline.names
    run = uuid.uuid4().hex[:8]
    update_mix = data.draw(mixes(bad_updates), label="case-updates")
    subscription_mix = data.draw(mixes(bad_subscriptions), label="subscriptions")
    statuses = data.draw(st.lists(st.sampled_from(list(CaseStatus)), min_size=len(update_mix)))
    # The mix again and again, under fresh keys and case ids: a flood, not a trickle.
    copies = data.draw(st.integers(min_value=1, max_value=12), label="copies")

    expected: dict[bytes, tuple[str, bytes]] = {}
    """Key of each bad record → (its topic, its value)."""
    updates: list[tuple[str, bytes | None]] = []
    good_updates: list[CaseUpdate] = []
    subscriptions: list[tuple[str, bytes | None]] = []
    newcomers = []
    for copy in range(copies):
        for i, value in enumerate(update_mix):
            if value is GOOD:
                good = case_update(case_id=f"flood-{run}-{copy}-{i}", status=statuses[i].value)
                good_updates.append(good)
                updates.append((good.case_id, good.model_dump_json().encode()))
            else:
                key = f"bad-{run}-{copy}-u{i}"
                expected[key.encode()] = (names.case_updates, value)
                updates.append((key, value))
        for i, value in enumerate(subscription_mix):
            if value is GOOD:
                # Newcomers follow wages in Viet Nam: the good updates reach the steady three only.
                person = subscription(
                    f"new-{run}-{copy}-{i}@example.org", countries=["VN"], interests=["wages"]
                )
                newcomers.append(person)
                subscriptions.append((person.subscriber_id, person.model_dump_json().encode()))
            else:
                key = f"bad-{run}-{copy}-s{i}"
                expected[key.encode()] = (names.subscriptions, value)
                subscriptions.append((key, value))
    publish([pipeline.broker.bootstrap], names.subscriptions, subscriptions)
    publish([pipeline.broker.bootstrap], names.case_updates, updates)
    flood.bad_published += len(expected)

    for update in good_updates:
        assert pipeline.wait_processed(update.event_id) == len(flood.people)
    pipeline.wait_indexed(*(p.subscriber_id for p in newcomers))
    # The flood is the module's only source of dead letters; the worker logs each one.
    pipeline.wait_until(
        f"{flood.bad_published} dead letters in all",
        lambda: len(pipeline.events("record.dead_lettered")) >= flood.bad_published,
    )

    def ours() -> list[DeadLetter]:
        letters = (DeadLetter.model_validate_json(r.value) for r in pipeline.read_topic(names.dead_letters))
        return [letter for letter in letters if letter.key is not None and letter.key in expected]

    letters = ours()
    assert Counter(letter.key for letter in letters) == Counter(set(expected)), "each bad record exactly once"
    for letter in letters:
        assert letter.key is not None
        topic, value = expected[letter.key]
        assert (letter.topic, letter.value) == (topic, value), "the original bytes, from the right topic"
        assert letter.stage == ("fanout" if topic == names.case_updates else "subscriptions")
        assert letter.reason.strip()
        if topic == names.case_updates:
            assert letter.errors, "a schema failure names its fields"

    for update in good_updates:
        assert sorted(m["To"].addresses[0].addr_spec for m in pipeline.emails_for(update.event_id)) == sorted(
            p.email for p in flood.people
        )
    assert flood.worker.process.poll() is None, "the worker stays up"
    rss = _rss_mb(flood.worker)
    assert rss < RSS_LIMIT_MB, f"worker RSS {rss:.0f} MB"
    assert rss - flood.baseline_rss_mb < RSS_GROWTH_LIMIT_MB, (
        f"worker RSS grew from {flood.baseline_rss_mb:.0f} MB to {rss:.0f} MB"
    )


# -- the mail server down ------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    running = SmtpServer("none", login=False).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def mailing(broker: EmbeddedBroker, tmp_path: Path, server: SmtpServer) -> Iterator[SmtpPipeline]:
    # Enough attempts to outlast the outage (the backoff is capped at a minute). A partition
    # watch period shorter than the outage: records waiting for the sink are neither stalled
    # nor lost, so it must not fetch them again (streams/stalls.py).
    harness = SmtpPipeline(
        broker, tmp_path, server, MOBILISE_DELIVERY_MAX_ATTEMPTS="50", MOBILISE_STALL_SECONDS="3"
    )
    try:
        yield harness
    finally:
        harness.stop()


def test_alerts_wait_while_the_mail_server_is_down_and_all_go_out_once_it_returns(
    mailing: SmtpPipeline, server: SmtpServer
) -> None:
    people = [
        subscription(f"p{i}@example.org", countries=["BD"], interests=["union_busting"]) for i in range(6)
    ]
    mailing.subscribe(*people)
    mailing.start_worker()
    mailing.wait_ready()
    mailing.wait_indexed(*(p.subscriber_id for p in people))
    before = case_update(status="escalated")
    mailing.publish(before)
    assert mailing.wait_processed(before.event_id) == len(people)

    server.stop()
    down = time.monotonic()
    first = case_update(status="brand_contacted")
    second = case_update(status="urgent_action")
    mailing.publish(first, second)
    # Down for a while: at least OUTAGE_SECONDS and three failed attempts.
    mailing.wait_until(
        "three failed delivery attempts",
        lambda: len(mailing.events("delivery.retrying")) >= 3 and time.monotonic() - down >= OUTAGE_SECONDS,
    )
    waiting = {first.event_id, second.event_id}
    assert not [d for d in mailing.deliveries() if d.event_id in waiting and d.outcome == "accepted"]
    assert len(server.mailbox.messages) == len(people)
    back = datetime.now(UTC)
    server.start()  # the same port

    for update in (first, second):
        assert mailing.wait_processed(update.event_id) == len(people)
    assert mailing.dead_letters() == [], "nothing gave up"
    sent = [(r.rcpt_tos[0], r.message()["X-Mobilise-Event-Id"]) for r in server.mailbox.messages]
    assert Counter(sent) == {(p.email, u.event_id): 1 for p in people for u in (before, first, second)}
    for person in people:  # in order per person
        theirs = [event_id for address, event_id in sent if address == person.email]
        assert theirs == [before.event_id, first.event_id, second.event_id]
    accepted = Counter(d.alert_id for d in mailing.deliveries() if d.outcome == "accepted")
    assert len(accepted) == 3 * len(people) and set(accepted.values()) == {1}
    waited = [d for d in mailing.deliveries() if d.outcome == "accepted" and d.event_id in waiting]
    assert len(waited) == 2 * len(people) and all(d.at >= back for d in waited), "all after the outage"
    assert any(d.attempts > 1 for d in waited), "the batch in hand was retried, not dropped"
    assert not mailing.events("partition.lost") and not mailing.events("partition.stalled")
    assert not [d for d in mailing.deliveries() if d.outcome == "duplicate"], "nothing was read twice"
