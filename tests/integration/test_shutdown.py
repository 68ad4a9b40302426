"""A worker told to stop exits promptly and cleanly, even when its broker has gone."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from mobilise.broker import EmbeddedBroker

from .harness import PipelineHarness

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
    worker.process.send_signal(signal.SIGTERM)
    try:
        code = worker.process.wait(timeout=GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        code = None
    stderr = worker.log_path.with_suffix(".stderr").read_text()
    worker.stop()

    assert code == 0, f"the worker did not exit within {GRACE_SECONDS} s of SIGTERM (code {code})"
    assert "Error while stopping child" not in stderr, stderr[-3000:]
    assert "Exception in thread" not in stderr, stderr[-3000:]
    closed = [e for e in worker.events() if e.get("event") == "sink.closed"]
    assert len(closed) == 1
