"""The broker unreachable for a while, then back: workers and the web process ride it out.

The broker keeps its data in memory, so the outage is a cut network link rather than a
stopped broker (tests/integration/severable_link.py): every client connection is reset and
new ones are refused, as when the brokers' host goes away, and the data is still there when
the link comes back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mobilise.broker import EmbeddedBroker, free_port
from mobilise.settings import load_settings
from mobilise.web import BackgroundWebServer
from schemas import Suppression, read_subscriptions_record

from .harness import PipelineHarness, case_update, recipients, subscription
from .severable_link import SeverableLink

pytestmark = pytest.mark.integration

SECRET = "outage-test-secret-key-0123456789abcdef0123"
OUTAGE_SECONDS = 20


def _http(method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=90) as response:  # loopback only
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def link(tmp_path: Path) -> Iterator[tuple[EmbeddedBroker, SeverableLink]]:
    link_port = free_port()
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", advertised_port=link_port)
    with SeverableLink(link_port, broker.port) as severable, broker:
        yield broker, severable


def test_workers_and_the_web_process_recover_on_their_own_after_an_outage(
    link: tuple[EmbeddedBroker, SeverableLink], tmp_path: Path
) -> None:
    broker, severable = link
    pipeline = PipelineHarness(broker, tmp_path, partitions=2)
    health = f"http://127.0.0.1:{free_port()}"
    web_port = free_port()
    web_url = f"http://127.0.0.1:{web_port}"
    web = BackgroundWebServer(
        load_settings(
            kafka_bootstrap_servers=broker.bootstrap,
            topic_prefix=pipeline.names.prefix,
            partitions=pipeline.partitions,
            public_url=web_url,
            secret_key=SECRET,
        ),
        port=web_port,
    )
    stays = subscription("stays@example.org", countries=["BD"], interests=["union_busting"])
    leaves = subscription("leaves@example.org", countries=["BD"], interests=["union_busting"])
    try:
        pipeline.subscribe(stays, leaves)
        worker = pipeline.start_worker(
            MOBILISE_HEALTH_PORT=health.rsplit(":", 1)[1],
            MOBILISE_PUBLIC_URL=web_url,
            MOBILISE_SECRET_KEY=SECRET,
        )
        pipeline.wait_ready()
        pipeline.wait_indexed(stays.subscriber_id, leaves.subscriber_id)
        web.start()
        before = case_update(status="escalated")
        pipeline.publish(before)
        assert pipeline.wait_processed(before.event_id) == 2
        (leaves_link,) = [
            m["List-Unsubscribe"].split("<")[-1].rstrip(">")
            for m in pipeline.emails_for(before.event_id)
            if m["To"].addresses[0].addr_spec == "leaves@example.org"
        ]
        assert leaves_link.startswith(f"{web_url}/unsubscribe/")
        assert _http("GET", f"{web_url}/readyz")[0] == 200

        severable.cut()
        # Both processes stay up and say they are not ready, and why.
        pipeline.wait_until(
            "the worker to report the broker gone", lambda: _http("GET", f"{health}/ready")[0] == 503
        )
        assert "no Kafka broker reachable" in " ".join(
            json.loads(_http("GET", f"{health}/ready")[1])["problems"]
        )
        assert _http("GET", f"{health}/health")[0] == 200
        status, body = _http("GET", f"{web_url}/readyz")
        assert status == 503 and b"no Kafka broker reachable" in body
        assert _http("GET", f"{web_url}/healthz")[0] == 200

        # Writes during the outage fail with a clear answer, and are not done later behind anyone's back.
        status, _ = _http("POST", leaves_link, b"List-Unsubscribe=One-Click")
        assert status == 503
        during = case_update(case_id="bd-2026-2", status="urgent_action")
        update_file = tmp_path / "during.json"
        update_file.write_text(during.model_dump_json())
        published = subprocess.run(
            [sys.executable, "-m", "mobilise", "publish", str(update_file)],
            env=pipeline.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert published.returncode != 0
        assert "Kafka" in published.stderr and "Traceback" not in published.stderr, published.stderr

        cut_at = time.monotonic()
        while time.monotonic() - cut_at < OUTAGE_SECONDS:
            assert worker.process.poll() is None, "the worker exited during the outage"
            time.sleep(1)
        severable.restore()

        # Back on their own: nobody restarts anything.
        pipeline.wait_until(
            "the worker to be ready again", lambda: _http("GET", f"{health}/ready")[0] == 200, timeout=120
        )
        pipeline.wait_until(
            "the web process to be ready again", lambda: _http("GET", f"{web_url}/readyz")[0] == 200
        )
        status, body = _http("POST", leaves_link, b"List-Unsubscribe=One-Click")
        assert status == 200, body
        pipeline.wait_until(
            "the unsubscribe to reach the worker",
            lambda: any(
                e["subscriber_id"] == leaves.subscriber_id for e in pipeline.events("subscription.suppressed")
            ),
        )
        after = case_update(case_id="bd-2026-3", status="brand_responded")
        pipeline.publish(after)
        assert pipeline.wait_processed(after.event_id) == 1
        assert recipients(pipeline.emails_for(after.event_id)) == ["stays@example.org"]

        # What failed during the outage was not written: no case update, exactly one suppression.
        keys = [r.key.decode() for r in pipeline.read_topic(pipeline.names.case_updates)]
        assert sorted(keys) == sorted([before.case_id, after.case_id])
        assert not pipeline.emails_for(during.event_id)
        suppressed = [
            r.key.decode()
            for r in pipeline.read_topic(pipeline.names.subscriptions)
            if r.value is not None and isinstance(read_subscriptions_record(r.value), Suppression)
        ]
        assert suppressed == [leaves.subscriber_id]
        assert worker.process.poll() is None
    finally:
        web.stop()
        pipeline.stop()
