"""A real worker delivering through the SendGrid sink to the fake SendGrid API (in a thread)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mobilise.broker import EmbeddedBroker
from schemas import DeadLetter, Subscription
from tests.fakes.sendgrid_server import API_KEY, FakeSendGrid, RateLimited

from .harness import PipelineHarness, case_update, subscription

pytestmark = pytest.mark.integration

PATIENCE = 300.0
"""Seconds any one wait may take: the machine is small and other tests may run alongside."""


class SendGridPipeline(PipelineHarness):
    """A pipeline whose workers deliver through the SendGrid sink to ``sendgrid_url``."""

    def __init__(self, broker: EmbeddedBroker, tmp_path: Path, sendgrid_url: str) -> None:
        super().__init__(broker, tmp_path)
        self.sendgrid_url = sendgrid_url

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env.update(
            MOBILISE_SINK="sendgrid",
            MOBILISE_SENDGRID_API_KEY=API_KEY,
            MOBILISE_SENDGRID_HOST=self.sendgrid_url,
            MOBILISE_FROM_EMAIL="Network alerts <alerts@example.net>",
            MOBILISE_UNSUBSCRIBE_EMAIL="stop@example.net",
            MOBILISE_DELIVERY_BATCH_SIZE="1000",
        )
        return env

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float = PATIENCE) -> None:
        super().wait_until(what, check, timeout)


@pytest.fixture
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid().in_thread() as fake:
        yield fake


@pytest.fixture
def pipeline(
    broker: EmbeddedBroker, tmp_path: Path, fake_sendgrid: FakeSendGrid
) -> Iterator[SendGridPipeline]:
    harness = SendGridPipeline(broker, tmp_path, fake_sendgrid.url)
    try:
        yield harness
    finally:
        harness.stop()


def _people(count: int, languages: tuple[str, ...] = ("en",)) -> list[Subscription]:
    return [
        subscription(
            f"person{i}@example.org",
            name=f"Person {i}",
            language=languages[i % len(languages)],
            countries=["BD"],
            interests=["union_busting"],
        )
        for i in range(count)
    ]


def _start(pipeline: SendGridPipeline, people: list[Subscription]) -> None:
    pipeline.subscribe(*people)
    pipeline.start_worker()
    pipeline.wait_ready()
    wanted = {s.subscriber_id for s in people}
    pipeline.wait_until(
        f"{len(wanted)} subscriptions to be indexed",
        lambda: wanted <= {e["subscriber_id"] for e in pipeline.events("subscription.indexed")},
    )


def _check_each_person_once(
    pipeline: SendGridPipeline, fake: FakeSendGrid, event_id: str, people: list[Subscription]
) -> None:
    personalizations = [p for p in fake.personalizations() if p["custom_args"]["event_id"] == event_id]
    assert Counter(p["custom_args"]["subscriber_id"] for p in personalizations) == Counter(
        {s.subscriber_id: 1 for s in people}
    )
    by_subscriber = {p["custom_args"]["subscriber_id"]: p for p in personalizations}
    assert all(by_subscriber[s.subscriber_id]["to"][0]["email"] == s.email for s in people)
    accepted = [d for d in pipeline.deliveries() if d.event_id == event_id and d.outcome == "accepted"]
    assert Counter(d.subscriber_id for d in accepted) == Counter({s.subscriber_id: 1 for s in people})
    message_ids = {r.message_id for r in fake.requests if r.status == 202}
    assert {d.provider_message_id for d in accepted} <= message_ids
    letters = [
        DeadLetter.model_validate_json(r.value) for r in pipeline.read_topic(pipeline.names.dead_letters)
    ]
    assert letters == []


def test_a_case_update_for_2500_people_takes_a_few_requests(
    pipeline: SendGridPipeline, fake_sendgrid: FakeSendGrid
) -> None:
    people = _people(2_500)
    _start(pipeline, people)

    update = case_update(internal={"workers_at_risk": ["Secret Worker Name"]})
    pipeline.publish(update)
    assert pipeline.wait_processed(update.event_id) == len(people)

    _check_each_person_once(pipeline, fake_sendgrid, update.event_id, people)
    sizes = [len(body["personalizations"]) for body in fake_sendgrid.accepted]
    # An alert batch holds one partition's people of one language, at most 1,000: here each
    # of the 4 partitions has about 625, all English, so one request per partition.
    print(f"\nSendGrid requests for {len(people)} people: {len(sizes)}, of {sizes} people")
    assert len(sizes) == pipeline.partitions and sum(sizes) == len(people), sizes
    assert all("Secret Worker Name" not in str(body) for body in fake_sendgrid.accepted)


def test_a_rate_limited_request_is_sent_again_after_the_reset_and_nobody_gets_two(
    pipeline: SendGridPipeline, fake_sendgrid: FakeSendGrid
) -> None:
    people = _people(1_500, languages=("en", "fr", "es"))
    _start(pipeline, people)

    fake_sendgrid.script(RateLimited(reset_in=1))
    update = case_update(status="escalated")
    pipeline.publish(update)
    assert pipeline.wait_processed(update.event_id) == len(people)

    print(f"\nSendGrid answers for {len(people)} people, first one rate limited: {fake_sendgrid.statuses()}")
    assert fake_sendgrid.statuses()[0] == 429
    _check_each_person_once(pipeline, fake_sendgrid, update.event_id, people)
    retried = [e for e in pipeline.events("sendgrid.rate_limited") if e["event_id"] == update.event_id]
    assert retried and all(e["retry_after"] >= 1 for e in retried)
    assert max(d.attempts for d in pipeline.deliveries() if d.event_id == update.event_id) >= 2
