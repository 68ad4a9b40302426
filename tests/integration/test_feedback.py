"""The feedback loop end to end: SendGrid's signed webhook and signed unsubscribe links, over real
HTTP (the web app on a loopback port), through the real broker, to real worker processes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from structlog.testing import capture_logs

from mobilise.broker import free_port
from mobilise.settings import Settings, load_settings
from mobilise.web import BackgroundWebServer
from schemas import DeliveryEvent, Suppression, read_subscriptions_record, subscriber_id_for
from tests.fakes.signed_webhook import TIMESTAMP, WebhookSigner, body, event

from .harness import PipelineHarness, case_update, recipients, subscription

pytestmark = pytest.mark.integration

SECRET = "integration-test-secret-key-0123456789abcdef"


@pytest.fixture
def sendgrid() -> WebhookSigner:
    return WebhookSigner()


class Web:
    """The web app of one pipeline, on a free loopback port, with SendGrid's key and the link secret."""

    def __init__(self, pipeline: PipelineHarness, sendgrid: WebhookSigner, port: int | None = None) -> None:
        self.port = port or free_port()
        self.public_url = f"http://127.0.0.1:{self.port}"
        self.settings: Settings = load_settings(
            kafka_bootstrap_servers=pipeline.broker.bootstrap,
            topic_prefix=pipeline.names.prefix,
            partitions=pipeline.partitions,
            public_url=self.public_url,
            secret_key=SECRET,
            sendgrid_webhook_public_key=sendgrid.public_key,
        )
        self.server = BackgroundWebServer(self.settings, port=self.port)
        self.sendgrid = sendgrid

    @property
    def worker_env(self) -> dict[str, str]:
        """What a worker needs to put the same signed links into its emails."""
        return {"MOBILISE_PUBLIC_URL": self.public_url, "MOBILISE_SECRET_KEY": SECRET}

    def post_events(self, *events: dict[str, Any], timestamp: int | None = None) -> tuple[int, Any]:
        payload = body(*events)
        status, _, answer = http(
            "POST", f"{self.public_url}/webhooks/sendgrid", payload, self.sendgrid.sign(payload, timestamp)
        )
        return status, json.loads(answer)


@pytest.fixture
def web(pipeline: PipelineHarness, sendgrid: WebhookSigner) -> Iterator[Web]:
    running = Web(pipeline, sendgrid)
    running.server.start()
    try:
        yield running
    finally:
        running.server.stop()


def http(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # loopback only
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def suppressions(pipeline: PipelineHarness) -> list[tuple[str, Suppression]]:
    found = []
    for record in pipeline.read_topic(pipeline.names.subscriptions):
        parsed = read_subscriptions_record(record.value) if record.value is not None else None
        if isinstance(parsed, Suppression):
            found.append((record.key.decode(), parsed))
    return found


def deliveries(pipeline: PipelineHarness) -> list[DeliveryEvent]:
    return [
        DeliveryEvent.model_validate_json(r.value) for r in pipeline.read_topic(pipeline.names.deliveries)
    ]


def wait_suppressed(pipeline: PipelineHarness, subscriber_id: str) -> dict[str, Any]:
    pipeline.wait_until(
        f"{subscriber_id} to be suppressed",
        lambda: any(e["subscriber_id"] == subscriber_id for e in pipeline.events("subscription.suppressed")),
    )
    return next(e for e in pipeline.events("subscription.suppressed") if e["subscriber_id"] == subscriber_id)


def email_to(messages: list[EmailMessage], address: str) -> EmailMessage:
    (message,) = [m for m in messages if m["To"].addresses[0].addr_spec == address]
    return message


# -- SendGrid's event webhook --------------------------------------------------------------


def test_a_signed_bounce_suppresses_the_address_end_to_end(pipeline: PipelineHarness, web: Web) -> None:
    bounces = subscription("bounces@example.org", countries=["BD"], interests=["union_busting"])
    stays = subscription("stays@example.org", countries=["BD"], interests=["union_busting"])
    pipeline.subscribe(bounces, stays)
    pipeline.start_worker()
    pipeline.wait_ready()
    pipeline.wait_indexed(bounces.subscriber_id, stays.subscriber_id)

    first = case_update(status="escalated")
    pipeline.publish(first)
    pipeline.wait_processed(first.event_id)
    bounced = email_to(pipeline.emails_for(first.event_id), "bounces@example.org")

    # SendGrid reports the hard bounce, with the custom_args the SendGrid sink put on the message.
    bounce = event(
        "bounce",
        "bounces@example.org",
        type="bounce",
        status="5.1.1",
        reason="550 5.1.1 <bounces@example.org>: Recipient address rejected: User unknown",
        alert_id=bounced["X-Mobilise-Alert-Id"],
        event_id=first.event_id,
        case_id=first.case_id,
        subscriber_id=bounces.subscriber_id,
    )
    with capture_logs() as logs:
        status, answer = web.post_events(bounce)
    assert status == 200, answer
    assert answer == {"events": 1, "duplicates": 0, "invalid": 0, "suppressions": 1, "deliveries": 1}
    assert "bounces@example.org" not in json.dumps(logs, default=str)
    suppressed = wait_suppressed(pipeline, bounces.subscriber_id)
    assert suppressed["reason"] == "bounce" and suppressed["was_subscribed"] is True

    second = case_update(status="brand_contacted")
    pipeline.publish(second)
    assert pipeline.wait_processed(second.event_id) == 1
    assert recipients(pipeline.emails_for(second.event_id)) == ["stays@example.org"]

    ((key, record),) = suppressions(pipeline)
    assert key == bounces.subscriber_id == record.subscriber_id
    assert (record.reason, record.source, record.provider_event_id) == (
        "bounce",
        "sendgrid",
        bounce["sg_event_id"],
    )
    (feedback,) = [d for d in deliveries(pipeline) if d.provider_event_id is not None]
    assert (feedback.alert_id, feedback.event_id, feedback.case_id, feedback.subscriber_id) == (
        bounced["X-Mobilise-Alert-Id"],
        first.event_id,
        first.case_id,
        bounces.subscriber_id,
    )
    assert feedback.outcome == "bounced" and "5.1.1" in (feedback.detail or "")
    assert "bounces@example.org" not in (feedback.detail or "")
    assert "bounces@example.org" not in pipeline.workers[0].log_path.read_text()


def test_a_bad_or_missing_signature_is_refused_and_nothing_is_published(
    pipeline: PipelineHarness, web: Web
) -> None:
    payload = body(event("bounce", "victim@example.org"), event("spamreport", "other@example.org"))
    url = f"{web.public_url}/webhooks/sendgrid"
    forged = WebhookSigner().sign(payload)  # someone else's key
    status, _, answer = http("POST", url, payload, forged)
    assert (status, json.loads(answer)["error"]) == (401, "bad_signature")
    tampered = web.sendgrid.sign(payload)
    status, _, answer = http("POST", url, payload.replace(b"victim", b"target"), tampered)
    assert (status, json.loads(answer)["error"]) == (401, "bad_signature")
    status, _, answer = http("POST", url, payload, {TIMESTAMP: str(int(time.time()))})
    assert (status, json.loads(answer)["error"]) == (401, "missing_signature")
    not_events = b'{"event": "bounce", "email": "victim@example.org"}'
    status, _, answer = http("POST", url, not_events, web.sendgrid.sign(not_events))
    assert (status, json.loads(answer)["error"]) == (400, "not_an_event_array")

    assert suppressions(pipeline) == [] and deliveries(pipeline) == []
    status, _, stats = http("GET", f"{url}/stats")
    assert status == 200
    assert json.loads(stats)["requests"] == {
        "bad_signature": 2,
        "missing_signature": 1,
        "not_an_event_array": 1,
    }
    status, _, health = http("GET", f"{web.public_url}/healthz")
    assert status == 200
    assert json.loads(health) == {
        "status": "ok",
        "kafka": "connected",
        "sendgrid_webhook": True,
        "unsubscribe_links": True,
    }


def test_a_stale_or_future_timestamp_is_refused(pipeline: PipelineHarness, web: Web) -> None:
    bounce = event("bounce", "victim@example.org")
    status, answer = web.post_events(
        bounce, timestamp=int(time.time()) - 3600
    )  # a captured request, replayed
    assert status == 401 and answer["error"] == "stale_timestamp"
    assert "old" in answer["detail"] and "MOBILISE_SENDGRID_WEBHOOK_MAX_AGE" in answer["detail"]
    status, answer = web.post_events(bounce, timestamp=int(time.time()) + 3600)
    assert status == 401 and answer["error"] == "future_timestamp"
    assert suppressions(pipeline) == [] and deliveries(pipeline) == []
    status, answer = web.post_events(bounce, timestamp=int(time.time()) - 60)  # within the ten minutes
    assert status == 200 and answer["suppressions"] == 1
    assert [r.subscriber_id for _, r in suppressions(pipeline)] == [subscriber_id_for("victim@example.org")]


def test_a_repeated_event_publishes_nothing_new(
    pipeline: PipelineHarness, web: Web, sendgrid: WebhookSigner
) -> None:
    args = {"alert_id": "alr-1", "event_id": "evt-1", "case_id": "bd-1", "subscriber_id": "sub-x"}
    batch = [
        event("bounce", "x@example.org", type="bounce", **args),
        event("delivered", "y@example.org", **{**args, "subscriber_id": "sub-y"}),
        event("open", "y@example.org", **{**args, "subscriber_id": "sub-y"}),
        event("processed", "y@example.org"),
    ]
    status, answer = web.post_events(*batch)
    assert status == 200 and (answer["suppressions"], answer["deliveries"]) == (
        2,
        3,
    )  # sub-x and the address's id
    before_s, before_d = suppressions(pipeline), deliveries(pipeline)
    assert len(before_s) == 2 and len(before_d) == 3

    # SendGrid did not get our 200 and retries the batch: nothing new is published.
    status, answer = web.post_events(*batch)
    assert status == 200 and answer == {
        "events": 4,
        "duplicates": 4,
        "invalid": 0,
        "suppressions": 0,
        "deliveries": 0,
    }
    assert suppressions(pipeline) == before_s and deliveries(pipeline) == before_d
    status, _, stats = http("GET", f"{web.public_url}/webhooks/sendgrid/stats")
    counters = json.loads(stats)
    assert counters["events"] == {"bounce": 1, "delivered": 1, "open": 1, "processed": 1}
    assert counters["duplicates"] == 4 and counters["published"] == {"suppressions": 2, "deliveries": 3}

    # A fresh process has forgotten the ids: what it publishes again is the very same records.
    web.server.stop()
    restarted = Web(pipeline, sendgrid, port=web.port)
    with restarted.server:
        status, answer = restarted.post_events(*batch)
    assert status == 200 and answer["suppressions"] == 2
    again_s, again_d = suppressions(pipeline), deliveries(pipeline)
    assert sorted(k + s.model_dump_json() for k, s in again_s) == sorted(
        k + s.model_dump_json() for k, s in before_s * 2
    )
    assert sorted(d.model_dump_json() for d in again_d) == sorted(d.model_dump_json() for d in before_d * 2)


# -- signed unsubscribe links --------------------------------------------------------------


def test_one_click_unsubscribe_end_to_end(pipeline: PipelineHarness, web: Web) -> None:
    leaves = subscription("leaves@example.org", language="fr", countries=["BD"], interests=["union_busting"])
    stays = subscription("stays@example.org", countries=["BD"], interests=["union_busting"])
    pipeline.subscribe(leaves, stays)
    pipeline.start_worker(**web.worker_env)
    pipeline.wait_ready()
    pipeline.wait_indexed(leaves.subscriber_id, stays.subscriber_id)

    first = case_update(status="escalated")
    pipeline.publish(first)
    pipeline.wait_processed(first.event_id)
    message = email_to(pipeline.emails_for(first.event_id), "leaves@example.org")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    mailto, link = re.fullmatch(
        r"<(mailto:[^>]+)>, <([^>]+)>", " ".join(message["List-Unsubscribe"].split())
    ).groups()
    assert mailto.startswith("mailto:unsubscribe@example.org")
    assert link.startswith(f"{web.public_url}/unsubscribe/1.")
    assert link in message.get_body(("plain",)).get_content()  # the footer points at the same link
    assert f'href="{link}"' in message.get_body(("html",)).get_content()
    other = email_to(pipeline.emails_for(first.event_id), "stays@example.org")
    assert link not in other.as_string()  # each person has their own

    # Opening the link asks for confirmation (and a link checker opening it changes nothing).
    status, headers, page = http("GET", link, headers={"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"})
    assert status == 200 and headers["Content-Language"] == "fr"
    assert "Me désabonner" in page.decode() and '<form method="post">' in page.decode()
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"
    assert suppressions(pipeline) == []

    # The mail provider's one-click POST (RFC 8058).
    status, headers, page = http(
        "POST",
        link,
        b"List-Unsubscribe=One-Click",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200 and "You are unsubscribed" in page.decode()
    suppressed = wait_suppressed(pipeline, leaves.subscriber_id)
    assert suppressed["reason"] == "link_unsubscribe" and suppressed["source"] == "link"

    second = case_update(status="brand_contacted")
    pipeline.publish(second)
    assert pipeline.wait_processed(second.event_id) == 1
    assert recipients(pipeline.emails_for(second.event_id)) == ["stays@example.org"]
    ((key, record),) = suppressions(pipeline)
    assert key == leaves.subscriber_id and record.reason == "link_unsubscribe"


def test_a_tampered_token_gets_an_invalid_link_page_and_publishes_nothing(
    pipeline: PipelineHarness, web: Web
) -> None:
    from mobilise.links import LinkSigner

    token = LinkSigner(SECRET).sign("unsubscribe", "sub-someone")
    version, _encoded, expires, mac = token.split(".")
    encoded_other = LinkSigner(SECRET).sign("unsubscribe", "sub-someone-else").split(".")[1]
    for bad in (
        f"{version}.{encoded_other}.{expires}.{mac}",  # the signature of another person's link
        LinkSigner(SECRET).sign("preferences", "sub-someone"),  # a link for something else
        token[:-3],
        "sub-someone",
    ):
        for method, data in (("GET", None), ("POST", b"List-Unsubscribe=One-Click")):
            status, _headers, page = http(method, f"{web.public_url}/unsubscribe/{bad}", data)
            assert status == 400, (method, bad)
            assert "This link does not work" in page.decode()
    assert suppressions(pipeline) == []
    status, _, _ = http(
        "POST", f"{web.public_url}/unsubscribe/{token}", b"confirm=yes"
    )  # the genuine one works
    assert status == 200
    assert [(k, s.reason) for k, s in suppressions(pipeline)] == [("sub-someone", "link_unsubscribe")]


def test_mobilise_web_serves_and_refuses_what_it_is_not_configured_for(pipeline: PipelineHarness) -> None:
    port = free_port()
    env = {
        k: v
        for k, v in pipeline.env.items()
        if not k.startswith(("MOBILISE_SECRET", "MOBILISE_PUBLIC", "MOBILISE_SENDGRID"))
    }
    log = pipeline.tmp_path / "web.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mobilise", "web", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    status, _, health = http("GET", f"http://127.0.0.1:{port}/healthz")
                    break
                except urllib.error.URLError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
            assert status == 200
            assert json.loads(health)["sendgrid_webhook"] is False
            payload = body(event("bounce", "victim@example.org"))
            status, _, answer = http("POST", f"http://127.0.0.1:{port}/webhooks/sendgrid", payload)
            assert (status, json.loads(answer)["error"]) == (503, "not_configured")
            status, _, _ = http("POST", f"http://127.0.0.1:{port}/unsubscribe/1.abc.0.def", b"")
            assert status == 503
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    printed = log.read_text()
    assert code == 0, printed
    assert '"event": "web.ready"' in printed and "MOBILISE_SENDGRID_WEBHOOK_PUBLIC_KEY" in printed
    assert suppressions(pipeline) == []
