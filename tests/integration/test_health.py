"""A worker's /health, /ready and /metrics, read over HTTP from a real worker process."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mobilise.broker import EmbeddedBroker, free_port

from .harness import PipelineHarness, case_update, subscription

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = _get(f"{base}/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def _lags(base: str, topic: str | None = None) -> set[float]:
    return {
        value
        for (name, labels), value in _samples(base).items()
        if name == "mobilise_consumer_lag" and (topic is None or ("topic", topic) in labels)
    }


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    # This test stops its broker, so it cannot share the session's.
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as running:
        yield running


def test_health_ready_and_metrics_follow_the_worker(own_broker: EmbeddedBroker, tmp_path: Path) -> None:
    pipeline = PipelineHarness(own_broker, tmp_path)
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        people = [
            subscription(f"m{i}@example.org", countries=["BD"], interests=["union_busting"]) for i in range(3)
        ]
        pipeline.subscribe(*people)
        pipeline.start_worker(MOBILISE_HEALTH_PORT=str(port))
        pipeline.wait_ready()
        pipeline.wait_indexed(*(s.subscriber_id for s in people))
        pipeline.wait_until("the health endpoint to answer", lambda: _get(f"{base}/health")[0] == 200)

        status, body = _get(f"{base}/ready")
        assert status == 200, body
        assert json.loads(body)["partitions"] == list(range(pipeline.partitions))

        update = case_update()
        pipeline.publish(update)
        pipeline.publish_raw(pipeline.names.case_updates, "bad", b"{not json")
        assert pipeline.wait_processed(update.event_id) == 3
        pipeline.wait_until(
            "the bad record to be dead-lettered", lambda: bool(pipeline.events("record.dead_lettered"))
        )

        samples = _samples(base)
        assert samples[("mobilise_case_updates_total", (("outcome", "fanned_out"),))] == 1
        assert samples[("mobilise_case_updates_total", (("outcome", "invalid"),))] == 1
        assert samples[("mobilise_alerts_emitted_total", ())] == 3
        assert samples[("mobilise_deliveries_total", (("outcome", "accepted"), ("sink", "outbox")))] == 3
        assert samples[("mobilise_dead_letters_total", (("stage", "fanout"),))] == 1
        assert samples[("mobilise_delivery_latency_seconds_count", (("sink", "outbox"),))] == 3
        assert samples[("mobilise_match_seconds_count", ())] == pipeline.partitions
        assert samples[("mobilise_subscribers", ())] == 3
        # Nothing held or waiting in this test, and the gauges say so.
        for gauge in ("mobilise_held_alert_batches", "mobilise_held_alerts", "mobilise_digests_waiting"):
            assert samples[(gauge, ())] == 0
        assert samples[("mobilise_digests_sent_total", ())] == 0
        # Everything processed: once committed (every few seconds), nothing is behind.
        pipeline.wait_until("every input partition to be committed", lambda: _lags(base) == {0.0})

        # Without a broker the worker stays alive but says it is not ready, and why.
        own_broker.stop()
        pipeline.wait_until("/ready to report the broker gone", lambda: _get(f"{base}/ready")[0] == 503)
        status, body = _get(f"{base}/ready")
        assert "no Kafka broker reachable" in " ".join(json.loads(body)["problems"])
        assert _get(f"{base}/health")[0] == 200
        assert _lags(base) == set()  # the metrics still answer; a lag nobody can know is left out
    finally:
        pipeline.stop()


def test_the_lag_counts_alerts_fetched_but_still_waiting_for_a_sink_that_fails(
    pipeline: PipelineHarness,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    person = subscription("waits@example.org", countries=["BD"], interests=["union_busting"])
    pipeline.subscribe(person)
    pipeline.start_worker(MOBILISE_HEALTH_PORT=str(port), MOBILISE_DELIVERY_MAX_ATTEMPTS="100")
    pipeline.wait_ready()
    pipeline.wait_indexed(person.subscriber_id)
    pipeline.wait_until("the metrics to answer", lambda: _get(f"{base}/health")[0] == 200)
    assert _lags(base, pipeline.names.alerts) <= {0.0}

    # The outbox is gone: the sink fails and retries, and its alert waits, fetched, unsettled.
    pipeline.outbox.rmdir()
    pipeline.outbox.write_bytes(b"")
    update = case_update()
    pipeline.publish(update)
    pipeline.wait_until("the sink to fail", lambda: bool(pipeline.events("delivery.retrying")))
    pipeline.wait_until("the waiting alert in the lag", lambda: max(_lags(base, pipeline.names.alerts)) == 1)

    pipeline.outbox.unlink()
    pipeline.outbox.mkdir()
    assert pipeline.wait_processed(update.event_id) == 1
    pipeline.wait_until("the alert to be delivered", lambda: len(pipeline.emails_for(update.event_id)) == 1)
    pipeline.wait_until("the lag to return to nothing", lambda: _lags(base, pipeline.names.alerts) == {0.0})
