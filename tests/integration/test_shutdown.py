"""A worker told to stop exits promptly and cleanly, even when its broker has gone or hangs."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from mobilise.broker import EmbeddedBroker, free_port
from schemas import DeliveryEvent
from tests.unit.test_smtp_sink import SmtpServer

from .harness import PipelineHarness, case_update, subscription
from .severable_link import SeverableLink
from .smtp_pipeline import SmtpPipeline

pytestmark = pytest.mark.integration

# Kubernetes' default grace period between SIGTERM and SIGKILL; mode's own bound is 60 s.
GRACE_SECONDS = 30


def test_a_worker_whose_broker_has_gone_exits_at_once_on_sigterm(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        pipeline = PipelineHarness(broker, tmp_path, partitions=2)
        worker = pipeline.start_worker()
        pipeline.wait_ready()
    # The broker is stopped: every connection is refused while the worker retries.
    pipeline.wait_until(
        "the worker to notice the broker is gone",
        lambda: b"Connect call failed" in worker.log_path.with_suffix(".stderr").read_bytes(),
    )
    time.sleep(1)  # let its fetcher settle into retrying
    code = worker.stop(grace=GRACE_SECONDS)
    stderr = worker.log_path.with_suffix(".stderr").read_text()

    assert code == 0, f"the worker did not exit within {GRACE_SECONDS} s of SIGTERM (code {code}; -9: killed)"
    assert "Error while stopping child" not in stderr, stderr[-3000:]
    assert "Exception in thread" not in stderr, stderr[-3000:]
    closed = [e for e in worker.events() if e.get("event") == "sink.closed"]
    assert len(closed) == 1


def test_a_worker_with_an_offset_to_commit_exits_on_sigterm_when_the_broker_hangs(tmp_path: Path) -> None:
    link_port = free_port()
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", advertised_port=link_port)
    with SeverableLink(link_port, broker.port) as link, broker:
        pipeline = PipelineHarness(broker, tmp_path, partitions=2)
        worker = pipeline.start_worker()
        pipeline.wait_ready()
        person = subscription("last@example.org", countries=["BD"], interests=["wages"])
        pipeline.subscribe(person)
        pipeline.wait_indexed(person.subscriber_id)
        # Before the next periodic commit (every few seconds) takes the record's offset, the
        # broker stops answering: the worker's last commit would wait for it for ever.
        link.silence()
        code = worker.stop(grace=GRACE_SECONDS)
        link.cut()  # every half-spoken connection closed; new ones carry again
        link.restore()
        committed = _committed(broker, pipeline)
    assert code == 0, f"the worker did not exit within {GRACE_SECONDS} s of SIGTERM (code {code}; -9: killed)"
    assert len([e for e in worker.events() if e.get("event") == "sink.closed"]) == 1
    if not committed:  # else a periodic commit took the offset before the broker hung
        assert [e for e in worker.events() if e.get("event") == "worker.final_commit_abandoned"]


def _committed(broker: EmbeddedBroker, pipeline: PipelineHarness) -> bool:
    """Whether the group committed an offset on any subscriptions partition."""
    group = KafkaConsumer(
        bootstrap_servers=[broker.bootstrap], group_id=pipeline.app_id, enable_auto_commit=False
    )
    try:
        return any(
            group.committed(TopicPartition(pipeline.names.subscriptions, p))
            for p in range(pipeline.partitions)
        )
    finally:
        group.close()


def test_a_worker_whose_sink_keeps_failing_stops_at_once_and_leaves_the_batch_to_the_next(
    pipeline: PipelineHarness,
) -> None:
    person = subscription("waits@example.org", countries=["BD"], interests=["union_busting"])
    pipeline.subscribe(person)
    # Retries that would go on for many minutes, were they waited out.
    first = pipeline.start_worker(MOBILISE_DELIVERY_MAX_ATTEMPTS="100")
    pipeline.wait_ready()
    pipeline.wait_indexed(person.subscriber_id)
    pipeline.outbox.rmdir()
    pipeline.outbox.write_bytes(b"")  # the outbox is not a directory: every attempt fails
    update = case_update()
    pipeline.publish(update)
    pipeline.wait_until("the sink to fail twice", lambda: len(pipeline.events("delivery.retrying")) >= 2)

    code = first.stop(grace=GRACE_SECONDS)
    pipeline.workers.remove(first)
    assert code == 0, f"the worker did not exit within {GRACE_SECONDS} s of SIGTERM (code {code}; -9: killed)"
    assert [e for e in first.events() if e.get("event") == "delivery.interrupted"]
    assert pipeline.deliveries() == []  # nothing recorded: neither sent nor given up

    # The next worker reads the batch again and delivers it, once.
    pipeline.outbox.unlink()
    pipeline.outbox.mkdir()
    pipeline.start_worker()
    pipeline.wait_ready()
    pipeline.wait_until("the alert to be delivered", lambda: len(pipeline.emails_for(update.event_id)) == 1)
    pipeline.wait_until(
        "its delivery record",
        lambda: (
            [d.outcome.value for d in pipeline.deliveries() if d.event_id == update.event_id] == ["accepted"]
        ),
    )


@pytest.mark.parametrize("own_process", ["false", "true"], ids=["sink-in-worker", "sink-in-own-process"])
def test_a_worker_stopped_mid_batch_finishes_the_message_it_is_sending_not_the_batch(
    broker: EmbeddedBroker, tmp_path: Path, own_process: str
) -> None:
    # A relay that takes 0.5 s a message: one batch of 40 would take 20 s, longer than the
    # grace below, so a worker that waited for its batch would be killed with the batch
    # unrecorded, and the next worker would mail everyone it had reached a second time.
    grace = 12.0
    people = [
        subscription(f"p{n}@example.org", countries=["BD"], interests=["union_busting"]) for n in range(40)
    ]
    with SmtpServer("none", login=False) as server:
        server.mailbox.data_delay = 0.5
        # One partition: everyone in one batch.
        pipeline = SmtpPipeline(broker, tmp_path, server, partitions=1, MOBILISE_SINK_PROCESS=own_process)
        try:
            pipeline.subscribe(*people)
            first = pipeline.start_worker()
            pipeline.wait_ready()
            pipeline.wait_indexed(*(p.subscriber_id for p in people))
            update = case_update()
            pipeline.publish(update)
            pipeline.wait_until("the first messages", lambda: len(server.mailbox.messages) >= 2)

            code = first.stop(grace=grace)
            pipeline.workers.remove(first)
            assert code == 0, f"the worker did not exit within {grace} s of SIGTERM (code {code}; -9: killed)"
            assert [e for e in first.events() if e.get("event") == "delivery.interrupted"]
            reached = {str(m.message()["X-Mobilise-Alert-Id"]) for m in server.mailbox.messages}
            assert 2 <= len(reached) < len(people), len(reached)
            # What it sent, it recorded as delivered before it went.
            assert {d.alert_id for d in delivered(pipeline, update.event_id, "accepted")} == reached

            # The next worker mails only those the first did not reach.
            server.mailbox.data_delay = 0.0
            pipeline.start_worker()
            pipeline.wait_ready()
            pipeline.wait_until(
                "everyone's delivery record",
                lambda: len(delivered(pipeline, update.event_id, "accepted")) >= len(people),
            )
            received = Counter(str(m.message()["X-Mobilise-Alert-Id"]) for m in server.mailbox.messages)
            assert len(received) == len(people) and set(received.values()) == {1}, received.most_common(3)
            accepted = Counter(d.alert_id for d in delivered(pipeline, update.event_id, "accepted"))
            assert len(accepted) == len(people) and set(accepted.values()) == {1}
            # Those the first had reached, the second saw as sent already.
            assert {d.alert_id for d in delivered(pipeline, update.event_id, "duplicate")} == reached
        finally:
            pipeline.stop()


def delivered(pipeline: PipelineHarness, event_id: str, outcome: str) -> list[DeliveryEvent]:
    return [d for d in pipeline.deliveries() if d.event_id == event_id and d.outcome.value == outcome]
