"""The ``mobilise`` command as people run it, against the real broker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from mobilise.broker import EmbeddedBroker, free_port
from schemas import CaseUpdate, Subscription

from .harness import PipelineHarness

pytestmark = pytest.mark.integration

GOOD = {
    "case_id": "kh-2026-7",
    "status": "escalated",
    "title": {"en": "Wages unpaid for three months"},
    "summary": {"en": "The owner left the country."},
    "country": "KH",
    "issues": ["wages", "severance"],
    "occurred_at": "2026-03-01T08:00:00Z",
    "published_by": "coordinator-asia",
}


def run(harness: PipelineHarness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mobilise", *args],
        env=harness.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_publish_validates_the_whole_file_before_publishing(broker: EmbeddedBroker, tmp_path: Path) -> None:
    harness = PipelineHarness(broker, tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps([GOOD, {**GOOD, "country": "Cambodia"}]))
    result = run(harness, "publish", str(bad))
    assert result.returncode == 2
    assert "update 2: country:" in result.stderr and "was not published" in result.stderr
    assert harness.read_topic(harness.names.case_updates) == []

    good = tmp_path / "good.json"
    good.write_text(json.dumps([GOOD, {**GOOD, "status": "brand_contacted"}]))
    result = run(harness, "publish", str(good))
    assert result.returncode == 0, result.stderr
    printed = [line.split("\t")[0] for line in result.stdout.splitlines()]
    records = harness.read_topic(harness.names.case_updates)
    assert [CaseUpdate.model_validate_json(r.value).event_id for r in records] == printed
    assert {r.key for r in records} == {b"kh-2026-7"}


def test_subscribe_and_unsubscribe(broker: EmbeddedBroker, tmp_path: Path) -> None:
    harness = PipelineHarness(broker, tmp_path)
    refused = run(harness, "subscribe", "--email", "a@example.org", "--country", "BD")
    assert refused.returncode == 2 and "must say what" in refused.stderr

    done = run(harness, "subscribe", "--email", "a@example.org", "--country", "bd", "--interest", "wages")
    assert done.returncode == 0, done.stderr
    subscriber_id = done.stdout.strip()
    gone = run(harness, "unsubscribe", "--email", "A@example.org")
    assert gone.returncode == 0 and gone.stdout.strip() == subscriber_id

    records = harness.read_topic(harness.names.subscriptions)
    assert [r.key.decode() for r in records] == [subscriber_id, subscriber_id]
    subscription = Subscription.model_validate_json(records[0].value)
    assert subscription.countries == ("BD",) and subscription.confirmed
    assert records[1].value is None  # the tombstone that erases the person


def test_schemas_export(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mobilise", "schemas", "export", str(tmp_path / "schemas")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "schemas").glob("*.schema.json"))
    assert len(written) == 11 and "alert-batch.v1.schema.json" in written


def test_a_wrong_setting_is_reported_before_anything_runs(tmp_path: Path) -> None:
    env = {**os.environ, "MOBILISE_PARTITIONS": "-1"}
    result = subprocess.run(
        [sys.executable, "-m", "mobilise", "topics", "create"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "MOBILISE_PARTITIONS='-1'" in result.stderr


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "terminal-closed"])
def test_dev_demo_shows_alerts_and_stops_cleanly_on_ctrl_c(tmp_path: Path, stop: signal.Signals) -> None:
    port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOBILISE_", "KAFKA_"))}
    log = tmp_path / "dev.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mobilise",
                "dev",
                "--demo",
                "--port",
                str(port),
                "--web-port",
                str(web_port),
            ],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a command typed in a terminal
        )
        try:
            outbox = tmp_path / "outbox"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and len(list(outbox.glob("*.eml"))) < 4:
                assert process.poll() is None, log.read_text()[-3000:]
                time.sleep(0.2)
            time.sleep(1)  # anything more would be a wrong alert
            assert len(list(outbox.glob("*.eml"))) == 4, log.read_text()[-3000:]
            # The emails' one-click links point at the web process dev serves, signed with a kept key.
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=10) as response:
                assert json.loads(response.read())["kafka"] == "connected"
            message = BytesParser(policy=policy.default).parsebytes(next(outbox.glob("*.eml")).read_bytes())
            assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            assert f"<http://127.0.0.1:{web_port}/unsubscribe/1." in message["List-Unsubscribe"]
            assert len((tmp_path / "data" / "dev-secret-key").read_text().strip()) >= 32
            # ...and the same web process serves the pages.
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/subscribe", timeout=10) as response:
                assert response.status == 200 and b"<form" in response.read()
        finally:
            # A terminal signals the whole foreground process group, not one process.
            os.killpg(process.pid, stop)
            code = process.wait(timeout=60)
    printed = log.read_text()
    assert f"127.0.0.1:{port}" in printed and str(outbox) in printed
    assert f"http://127.0.0.1:{web_port}/subscribe" in printed
    assert f"http://127.0.0.1:{web_port}/console" in printed
    assert code == 0, printed[-3000:]
    # Cleanly: the broker outlived the worker and the web process, which closed their clients.
    for trouble in ("Unable connect to node", "Task was destroyed", "Traceback"):
        assert trouble not in printed, printed[-3000:]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass  # the embedded broker stopped with it
