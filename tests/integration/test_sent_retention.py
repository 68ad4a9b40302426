"""A worker forgets the alerts it sent once they are past their retention, on its changelog too."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mobilise.broker import EmbeddedBroker
from streams.admin import create_topics, publish
from streams.topics import TopicSpec

from .harness import PipelineHarness

pytestmark = pytest.mark.integration


def _row(at: datetime, *alert_ids: str) -> bytes:
    row = {
        "partition": 0,
        "sink": "outbox",
        "event_id": "ev-1",
        "at": at.isoformat(),
        "alerts": list(alert_ids),
    }
    return json.dumps(row).encode()


def test_rows_past_the_retention_are_deleted_from_the_changelog_and_recent_ones_stay(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    pipeline = PipelineHarness(broker, tmp_path, partitions=1)
    changelog = f"{pipeline.app_id}-sent-alerts-changelog"
    create_topics([broker.bootstrap], [TopicSpec(name=changelog, partitions=1)], 1)
    now = datetime.now(UTC)
    # Keys as faust writes a table's str keys (JSON). One record at a time: each is a batch
    # of its own, all of which the recovery reads on the embedded broker (see test_pipeline).
    publish([broker.bootstrap], changelog, [('"alb-old"', _row(now - timedelta(days=31), "old-1", "old-2"))])
    publish([broker.bootstrap], changelog, [('"alb-recent"', _row(now - timedelta(days=29), "recent-1"))])
    try:
        worker = pipeline.start_worker(MOBILISE_SENT_RETENTION_DAYS="30")
        pipeline.wait_ready()
        ready = [e for e in worker.events() if e.get("event") == "worker.ready"][-1]
        assert ready["sent_known"] == 3  # both rows were recovered before the expiry
        pipeline.wait_until("the old row to expire", lambda: bool(pipeline.events("sent_alerts.expired")))
        [expired] = pipeline.events("sent_alerts.expired")
        assert expired["alerts"] == 2

        def latest() -> dict[bytes, bytes | None]:
            return {r.key: r.value for r in pipeline.read_topic(changelog)}

        pipeline.wait_until("the tombstone on the changelog", lambda: latest().get(b'"alb-old"', b"") is None)
        assert latest()[b'"alb-recent"'] is not None

        # A worker starting afterwards recovers only what is left.
        worker.stop()
        pipeline.workers.remove(worker)  # stopped: no longer one to wait for
        second = pipeline.start_worker(MOBILISE_SENT_RETENTION_DAYS="30")
        pipeline.wait_ready()
        ready = [e for e in second.events() if e.get("event") == "worker.ready"][-1]
        assert ready["sent_known"] == 1
    finally:
        pipeline.stop()
