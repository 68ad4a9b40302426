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
        lags = {labels: value for (name, labels), value in samples.items() if name == "mobilise_consumer_lag"}
        assert lags and all(value == 0 for value in lags.values())

        # Without a broker the worker stays alive but says it is not ready, and why.
        own_broker.stop()
        pipeline.wait_until("/ready to report the broker gone", lambda: _get(f"{base}/ready")[0] == 503)
        status, body = _get(f"{base}/ready")
        assert "no Kafka broker reachable" in " ".join(json.loads(body)["problems"])
        assert _get(f"{base}/health")[0] == 200
    finally:
        pipeline.stop()
