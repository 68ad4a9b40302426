"""The pipeline end to end through the SMTP sink: a worker process mails a real SMTP server."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mobilise.broker import EmbeddedBroker
from schemas import DeliveryEvent
from tests.unit.test_smtp_sink import Certificates, SmtpServer, make_certificates

from .harness import PipelineHarness, case_update, subscription

pytestmark = pytest.mark.integration


class SmtpPipeline(PipelineHarness):
    """A pipeline whose workers deliver through the SMTP sink to ``server``."""

    def __init__(self, broker: EmbeddedBroker, tmp_path: Path, server_env: dict[str, str]) -> None:
        super().__init__(broker, tmp_path)
        self.server_env = server_env

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env.update(self.server_env, MOBILISE_SINK="smtp")
        return env


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    directory = tmp_path / "certificates"
    directory.mkdir()
    return make_certificates(directory)


@pytest.fixture
def server(certificates: Certificates) -> Iterator[SmtpServer]:
    with SmtpServer("starttls", certificates) as running:
        yield running


@pytest.fixture
def pipeline(
    broker: EmbeddedBroker, tmp_path: Path, server: SmtpServer, certificates: Certificates
) -> Iterator[SmtpPipeline]:
    harness = SmtpPipeline(broker, tmp_path, server.env(certificates))
    try:
        yield harness
    finally:
        harness.stop()


def test_a_case_update_is_mailed_to_exactly_the_matching_subscribers(
    pipeline: SmtpPipeline, server: SmtpServer
) -> None:
    matching = [
        subscription("rahima@example.org", name="Rahima", countries=["BD"], interests=["union_busting"]),
        subscription("world@example.org", worldwide=True, interests=["union_busting"]),
    ]
    other = subscription("elsewhere@example.org", countries=["KH"], interests=["wages"])
    pipeline.subscribe(*matching, other)
    pipeline.start_worker()
    pipeline.wait_ready()
    pipeline.wait_indexed(*(s.subscriber_id for s in [*matching, other]))

    update = case_update(internal={"workers_at_risk": ["Secret Worker Name"]})
    pipeline.publish(update)
    assert pipeline.wait_processed(update.event_id) == 2

    # The server stores a message before it answers 250, and the worker logs the alert as
    # delivered only after that answer: everything is in the mailbox by now.
    received = server.mailbox.messages
    assert sorted(r.rcpt_tos[0] for r in received) == sorted(s.email for s in matching)
    assert all(r.tls for r in received) and len(server.mailbox.mechanisms) == 1
    by_address = {r.rcpt_tos[0]: r.message() for r in received}
    rahima = by_address["rahima@example.org"]
    assert rahima["To"].addresses[0].addr_spec == "rahima@example.org"
    assert rahima["X-Mobilise-Event-Id"] == update.event_id
    assert rahima["Subject"] == "URGENT ACTION: Union leaders fired at Dhaka Knitwear"
    body = rahima.get_body(("plain",))
    assert body is not None and "Hello Rahima" in body.get_content()
    assert all(b"Secret Worker Name" not in r.content for r in received)

    deliveries = [
        DeliveryEvent.model_validate_json(r.value) for r in pipeline.read_topic(pipeline.names.deliveries)
    ]
    accepted = [d for d in deliveries if d.outcome == "accepted"]
    assert Counter(d.subscriber_id for d in accepted) == Counter({s.subscriber_id: 1 for s in matching})
    assert {d.provider_message_id for d in accepted} == {m["Message-ID"] for m in by_address.values()}
    assert all(d.sink == "smtp" for d in deliveries)
    assert len(pipeline.events("smtp.connected")) == 1
