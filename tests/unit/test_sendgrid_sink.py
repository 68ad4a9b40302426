"""The SendGrid sink against the fake SendGrid API (no broker): batching, outcomes, privacy."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from connectors.base import INTERRUPTED, SinkOutcome
from connectors.outbox import OutboxConfig
from connectors.registry import load_sink
from connectors.rendering import PLACEHOLDER_MARK, EmailIdentity, render_alert
from connectors.sendgrid_mail import (
    MAX_PERSONALIZATIONS,
    SendGridConfig,
    SendGridSink,
    TokenBucket,
    judge_response,
    plan_requests,
)
from mobilise.errors import ConfigurationError
from mobilise.links import LinkSigner, PublicLinks
from schemas import Alert, CaseUpdate, MatchReason, Region, alert_id_for
from tests.fakes.sendgrid_server import (
    API_KEY,
    PASS,
    DropConnection,
    FakeSendGrid,
    RateLimited,
    Refused,
    ServerError,
    validate_mail_send,
)

T = TypeVar("T")
SECRET = SecretStr("a-test-key-that-is-long-enough-to-sign-links")
IDENTITY = EmailIdentity(from_email="Network <alerts@example.net>", unsubscribe_email="stop@example.net")
REASONS = (
    MatchReason(country="BD", interests=("union_busting",)),
    MatchReason(worldwide=True, brands=("H&M",)),
    MatchReason(region=Region.SOUTHERN_ASIA, interests=("union_busting", "wages"), brands=("H&M", "Zara")),
)


def make_case(**changes: Any) -> CaseUpdate:
    return CaseUpdate.model_validate_json(
        json.dumps(
            {
                "case_id": "bd-1",
                "status": "urgent_action",
                "title": {"en": "Fired for organising", "fr": "Licenciés", "es": "Despedidos"},
                "summary": {"en": "Twelve leaders <script>alert(1)</script> dismissed."},
                "country": "BD",
                "brands": ["H&M", "Zara"],
                "factory": {"name": "Dhaka Knitwear", "city": "Gazipur"},
                "issues": ["union_busting", "wages"],
                "occurred_at": "2026-01-01T00:00:00Z",
                "published_by": "p",
                "internal": {"workers_at_risk": ["Hidden Person"], "note": "do-not-send-this"},
                "action_call": {
                    "kind": "email_brand",
                    "instructions": {"en": "Write to the CEO."},
                    "target": {"name": "H&M", "email": "ceo@example.com"},
                    "deadline": "2026-02-01T09:30:00+01:00",
                },
                **changes,
            }
        )
    )


def make_alerts(
    count: int, case: CaseUpdate | None = None, language: str = "en", prefix: str = "p", **fields: Any
) -> list[Alert]:
    case = case or make_case()
    public = case.public()
    alerts = []
    for i in range(count):
        subscriber = f"sub-{prefix}{i}"
        values: dict[str, Any] = {
            "email": f"{prefix}{i}@example.org",
            "name": None if i % 5 == 0 else f"Person {prefix}{i}",
            "reason": REASONS[i % len(REASONS)],
            **fields,
        }
        alerts.append(
            Alert(
                alert_id=alert_id_for(case.event_id, subscriber),
                event_id=case.event_id,
                subscriber_id=subscriber,
                language=language,
                case=public,
                created_at=datetime(2026, 1, 2, tzinfo=UTC),
                **values,
            )
        )
    return alerts


class FakeTime:
    """A clock for the sink and the fake server; sleeping advances it at once."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


SEQUENTIAL = 1
"""One request at a time: the fake's scripted answers meet a batch's requests in their order."""


def with_sink(test: Callable[[SendGridSink, FakeSendGrid, FakeTime], Awaitable[T]], **settings: Any) -> T:
    """Run ``test`` with a set-up sink talking to a fresh fake server, on a fake clock."""

    async def run() -> T:
        time = FakeTime()
        async with FakeSendGrid(clock=time) as fake:
            config = SendGridConfig(
                sendgrid_api_key=settings.pop("sendgrid_api_key", API_KEY),
                sendgrid_host=fake.url,
                from_email="Network <alerts@example.net>",
                unsubscribe_email="stop@example.net",
                **settings,
            )
            sink = SendGridSink(config, clock=time, wall_clock=time, sleep=time.sleep)
            await sink.setup()
            try:
                return await test(sink, fake, time)
            finally:
                await sink.close()

    return asyncio.run(run())


async def deliver_like_the_framework(
    sink: SendGridSink, alerts: Sequence[Alert], time: FakeTime, max_attempts: int = 8
) -> tuple[dict[str, SinkOutcome], int]:
    """What streams.delivery does: retry the retryable ones, waiting at least retry_after."""
    pending = {alert.alert_id: alert for alert in alerts}
    final: dict[str, SinkOutcome] = {}
    attempts = 0
    while pending and attempts < max_attempts:
        attempts += 1
        outcomes = {o.record_id: o for o in await sink.deliver(list(pending.values()))}
        wait = 0.0
        for alert_id in list(pending):
            outcome = outcomes[alert_id]
            if outcome.accepted or not outcome.retryable:
                final[alert_id] = outcome
                del pending[alert_id]
            else:
                wait = max(wait, outcome.retry_after or 0.0)
        await time.sleep(wait)
    return final, attempts


def sent_alert_ids(fake: FakeSendGrid) -> Counter[str]:
    return Counter(p["custom_args"]["alert_id"] for p in fake.personalizations())


async def retry_once_sends_the_rest(
    sink: SendGridSink,
    fake: FakeSendGrid,
    time: FakeTime,
    alerts: Sequence[Alert],
    outcomes: Sequence[SinkOutcome],
) -> None:
    """One retry of the alerts ``outcomes`` did not accept sends them, and everyone got one email in all."""
    accepted = {o.record_id for o in outcomes if o.accepted}
    final, attempts = await deliver_like_the_framework(
        sink, [a for a in alerts if a.alert_id not in accepted], time
    )
    assert attempts == 1 and all(o.accepted for o in final.values())
    assert sent_alert_ids(fake) == Counter({a.alert_id: 1 for a in alerts})


# -- batching ------------------------------------------------------------------------------


def test_ten_thousand_alerts_of_one_event_take_ten_requests() -> None:
    alerts = make_alerts(10_000)

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        outcomes = await sink.deliver(alerts)
        assert len(fake.statuses()) == 10 and set(fake.statuses()) == {202}
        assert all(len(body["personalizations"]) == MAX_PERSONALIZATIONS for body in fake.accepted)
        assert sent_alert_ids(fake) == Counter({a.alert_id: 1 for a in alerts})
        assert len(outcomes) == len(alerts) and all(o.accepted for o in outcomes)
        assert len({o.provider_message_id for o in outcomes}) == 10
        assert time.slept == []  # 10 requests fit in the default burst of 10 per second

    with_sink(test)


def test_preparing_the_next_batch_sends_nothing_and_its_delivery_sends_what_it_would_have() -> None:
    first, second = make_alerts(1500, prefix="a"), make_alerts(700, prefix="b")

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        await sink.prepare(second)
        await asyncio.sleep(0.05)  # planned and encoded by now
        assert fake.statuses() == []  # preparing sends nothing
        # Another batch first: delivered as planned afresh, and the prepared one is dropped.
        await sink.deliver(first)
        await sink.prepare(second)
        outcomes = await sink.deliver(second)
        assert fake.statuses() == [202, 202, 202]
        assert sent_alert_ids(fake) == Counter({a.alert_id: 1 for a in first + second})
        assert all(o.accepted for o in outcomes) and len(outcomes) == len(second)

    with_sink(test)


def test_requests_are_sent_as_json_which_the_fake_insists_on() -> None:
    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        await sink.deliver(make_alerts(3))
        assert fake.statuses() == [202]
        # The fake refuses what is not JSON, as the contract says.
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{fake.url}/v3/mail/send",
                data="{}",
                headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "text/plain"},
            ) as answer,
        ):
            assert answer.status == 415
            assert "application/json" in (await answer.json())["errors"][0]["message"]

    with_sink(test)


def test_the_http_library_logs_no_address_even_at_debug_level(caplog: pytest.LogCaptureFixture) -> None:
    alerts = make_alerts(3)

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        # The sink keeps the library's logger at INFO; an operator may turn it up again.
        caplog.set_level(logging.DEBUG, logger="python_http_client")
        await sink.deliver(alerts)
        assert fake.statuses() == [202]
        assert {p["to"][0]["email"] for p in fake.personalizations()} == {a.email for a in alerts}

    with_sink(test)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("python_http_client")]
    payloads = [line for line in lines if line.startswith("POST Request") or line.startswith("PAYLOAD")]
    assert any("bytes of JSON>" in line for line in payloads)
    assert not [line for line in lines if any(a.email in line for a in alerts)]


def test_three_languages_take_one_request_per_thousand_per_language() -> None:
    case = make_case()
    counts = {"en": 4_500, "fr": 3_001, "es": 2_499}
    alerts = [a for lang, n in counts.items() for a in make_alerts(n, case, language=lang, prefix=lang)]

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        await sink.deliver(alerts)
        assert len(fake.accepted) == sum(math.ceil(n / 1000) for n in counts.values()) == 12
        by_language = Counter(body["subject"] for body in fake.accepted)
        assert by_language == {
            "URGENT ACTION: Fired for organising": 5,
            "ACTION URGENTE : Licenciés": 4,
            "ACCIÓN URGENTE: Despedidos": 3,
        }
        assert sent_alert_ids(fake) == Counter({a.alert_id: 1 for a in alerts})

    with_sink(test)


def test_each_person_gets_exactly_the_email_the_outbox_would_write() -> None:
    case = make_case()
    alerts = [*make_alerts(30, case), *make_alerts(12, case, language="fr", prefix="f")]
    alerts += make_alerts(3, case, language="km", prefix="k")  # no Khmer templates: English
    alerts += make_alerts(1, case, prefix="x", name="<b>Rahima</b>")

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        await sink.deliver(alerts)
        assert len(fake.accepted) == 3  # en, fr and km are three groups (km picks titles in km)
        received = {email.custom_args["alert_id"]: email for email in fake.emails()}
        assert received.keys() == {a.alert_id for a in alerts}
        for alert in alerts:
            email, expected = received[alert.alert_id], render_alert(alert, IDENTITY)
            assert (email.subject, email.text, email.html) == (expected.subject, expected.text, expected.html)
            assert email.to == (
                {"email": alert.email, "name": alert.name} if alert.name else {"email": alert.email}
            )
            assert email.headers["List-Unsubscribe"] == expected.headers["List-Unsubscribe"]
            assert email.headers["X-Mobilise-Alert-Id"] == alert.alert_id
            assert email.custom_args == {
                "alert_id": alert.alert_id,
                "event_id": alert.event_id,
                "case_id": alert.case.case_id,
                "subscriber_id": alert.subscriber_id,
            }
        greetings = {a.alert_id: received[a.alert_id].text.splitlines()[0] for a in alerts[:3]}
        assert greetings == {
            alerts[0].alert_id: "Hello,",
            alerts[1].alert_id: "Hello Person p1,",
            alerts[2].alert_id: "Hello Person p2,",
        }
        assert "you follow Bangladesh and union busting." in received[alerts[0].alert_id].text
        assert "you follow cases worldwide and the brand H&M." in received[alerts[1].alert_id].text
        assert "Southern Asia and union busting, wages and the brands H&amp;M, Zara." in (
            received[alerts[2].alert_id].html
        )

    with_sink(test)


def test_names_are_escaped_in_the_html_part_only() -> None:
    alert = make_alerts(1, name="<b>Rahima</b>")[0]

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        await sink.deliver([alert])
        personalization = fake.personalizations()[0]
        values = personalization["substitutions"]
        assert values["%mobilise_greeting_html%"] == "Hello &lt;b&gt;Rahima&lt;/b&gt;,"
        assert values["%mobilise_greeting_text%"] == "Hello <b>Rahima</b>,"
        email = fake.emails()[0]
        assert "<p>Hello &lt;b&gt;Rahima&lt;/b&gt;,</p>" in email.html and "<b>Rahima</b>" not in email.html
        assert email.text.startswith("Hello <b>Rahima</b>,\n")

    with_sink(test)


def test_the_same_address_twice_goes_into_two_requests() -> None:
    case = make_case()
    alerts = make_alerts(5, case)
    twin = make_alerts(1, case, prefix="twin", email="P3@Example.org")[0]  # p3@example.org

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        outcomes = await sink.deliver([*alerts, twin])
        assert all(o.accepted for o in outcomes)
        # The requests go out together, so they may arrive in either order.
        sizes = sorted(len(body["personalizations"]) for body in fake.accepted)
        assert sizes == [1, 5]
        for body in fake.accepted:
            addresses = [p["to"][0]["email"].lower() for p in body["personalizations"]]
            assert len(set(addresses)) == len(addresses)

    with_sink(test)


def test_a_name_with_a_comma_is_quoted_for_sendgrid() -> None:
    alert = make_alerts(1, name="Akter, Rahima")[0]
    (request,), _ = plan_requests([alert], IDENTITY)
    assert request.body["personalizations"][0]["to"] == [{"email": alert.email, "name": '"Akter, Rahima"'}]
    assert request.body["from"] == {"email": "alerts@example.net", "name": "Network"}


def test_a_person_whose_substitutions_are_too_large_gets_a_request_of_their_own() -> None:
    brands = tuple(f"Brand {i:03d} " + "x" * 100 for i in range(60))
    case = make_case(brands=list(brands))
    alerts = make_alerts(3, case)
    heavy = make_alerts(1, case, prefix="heavy", reason=MatchReason(country="BD", brands=brands))[0]

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        outcomes = await sink.deliver([*alerts, heavy])
        assert all(o.accepted for o in outcomes)
        alone = [b for b in fake.accepted if "substitutions" not in b["personalizations"][0]]
        assert len(fake.accepted) == 2 and len(alone) == 1
        assert alone[0]["content"][0]["value"] == render_alert(heavy, IDENTITY).text
        assert PLACEHOLDER_MARK not in json.dumps(alone[0])

    with_sink(test)


# -- outcomes ------------------------------------------------------------------------------


def test_rate_limited_then_accepted_loses_nothing_and_duplicates_nothing() -> None:
    alerts = make_alerts(2_500)

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        fake.script(PASS, RateLimited(reset_in=7))
        with capture_logs() as logs:
            first = {o.record_id: o for o in await sink.deliver(alerts)}
        # The first request went through; the 429 stopped the batch: the third was not sent.
        assert fake.statuses() == [202, 429]
        accepted = [o for o in first.values() if o.accepted]
        retryable = [o for o in first.values() if o.retryable]
        assert len(accepted) == 1000 and len(retryable) == 1500
        assert {o.retry_after for o in retryable} == {7.0}  # X-RateLimit-Reset minus now
        assert any(e["event"] == "sendgrid.rate_limited" and e["retry_after"] == 7.0 for e in logs)

        await time.sleep(7)  # the framework waits at least retry_after
        await retry_once_sends_the_rest(sink, fake, time, alerts, list(first.values()))
        assert fake.statuses() == [202, 429, 202, 202]

    with_sink(test, sendgrid_concurrency=SEQUENTIAL)


def test_a_retry_before_the_reset_is_rate_limited_again() -> None:
    alerts = make_alerts(10)

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        fake.script(RateLimited(reset_in=30))
        await sink.deliver(alerts)
        time.now += 10  # a client that does not honour retry_after
        outcomes = await sink.deliver(alerts)
        assert all(o.retryable and o.retry_after == 20.0 for o in outcomes)
        final, _ = await deliver_like_the_framework(sink, alerts, time)
        assert all(o.accepted for o in final.values())
        assert fake.statuses() == [429, 429, 429, 202]

    with_sink(test)


def test_a_refused_request_fails_only_its_own_alerts() -> None:
    alerts = make_alerts(2_500)

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        fake.script(
            PASS, Refused(400, ({"message": "The content value must be a string", "field": "content"},))
        )
        with capture_logs() as logs:
            outcomes = await sink.deliver(alerts)
        refused = [o for o in outcomes if not o.accepted]
        assert len(refused) == 1000 and not any(o.retryable for o in refused)
        assert all("(400): content: The content value must be a string" in (o.error or "") for o in refused)
        assert {o.record_id for o in refused} == {a.alert_id for a in alerts[1000:2000]}
        assert sum(o.accepted for o in outcomes) == 1500 and len(fake.accepted) == 2
        assert [e["status"] for e in logs if e["event"] == "sendgrid.rejected"] == [400]

    with_sink(test, sendgrid_concurrency=SEQUENTIAL)


def test_a_refusal_naming_one_personalization_fails_only_that_alert() -> None:
    alerts = make_alerts(5)
    error = {"message": "Does not contain a valid address.", "field": "personalizations.3.to.0.email"}

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        fake.script(Refused(400, (error,)))
        final, attempts = await deliver_like_the_framework(sink, alerts, time)
        assert attempts == 2
        assert [a.alert_id for a in alerts if not final[a.alert_id].accepted] == [alerts[3].alert_id]
        assert "personalizations.3.to.0.email" in (final[alerts[3].alert_id].error or "")
        assert sent_alert_ids(fake) == Counter({a.alert_id: 1 for a in alerts if a is not alerts[3]})

    with_sink(test)


@pytest.mark.parametrize("answer", [ServerError(500), ServerError(503), DropConnection()])
def test_server_errors_and_dropped_connections_are_retryable(answer: Any) -> None:
    alerts = make_alerts(10)

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        fake.script(answer)
        outcomes = await sink.deliver(alerts)
        assert all(o.retryable and not o.accepted and o.error for o in outcomes)
        final, _ = await deliver_like_the_framework(sink, alerts, time)
        assert all(o.accepted for o in final.values())
        assert sent_alert_ids(fake) == Counter({a.alert_id: 1 for a in alerts})

    with_sink(test)


def test_after_a_dropped_connection_the_rest_of_the_batch_waits_for_the_retry() -> None:
    alerts = make_alerts(2_500)

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        fake.script(DropConnection())
        outcomes = await sink.deliver(alerts)
        assert fake.statuses() == [None]
        assert all(o.retryable for o in outcomes) and len(outcomes) == 2_500

    with_sink(test, sendgrid_concurrency=SEQUENTIAL)


def test_after_a_server_error_the_other_requests_proceed() -> None:
    alerts = make_alerts(2_500)

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        fake.script(ServerError(502))
        outcomes = await sink.deliver(alerts)
        assert fake.statuses() == [502, 202, 202]
        assert sum(o.retryable for o in outcomes) == 1000 and sum(o.accepted for o in outcomes) == 1500

    with_sink(test, sendgrid_concurrency=SEQUENTIAL)


def test_a_batch_s_requests_are_in_flight_several_at_once() -> None:
    alerts = make_alerts(4_500)  # five requests

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        fake.delay = 0.2  # a provider's round trip
        outcomes = await sink.deliver(alerts)
        assert fake.most_in_flight == 3
        assert all(o.accepted for o in outcomes) and len(outcomes) == 4_500
        assert sent_alert_ids(fake) == Counter({a.alert_id: 1 for a in alerts})

    with_sink(test, sendgrid_concurrency=3)


def test_one_request_at_a_time_when_so_configured() -> None:
    alerts = make_alerts(2_500)

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        fake.delay = 0.05
        await sink.deliver(alerts)
        assert fake.most_in_flight == 1 and len(fake.accepted) == 3

    with_sink(test, sendgrid_concurrency=SEQUENTIAL)


def test_a_lost_connection_among_requests_in_flight_loses_nothing_and_duplicates_nothing() -> None:
    alerts = make_alerts(4_500)  # five requests, two at a time

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        fake.delay = 0.1
        fake.script(DropConnection(), PASS)
        outcomes = await sink.deliver(alerts)
        # A request started before the sink learnt of the loss keeps its own answer; the
        # retry then sends exactly the people no 202 covered.
        statuses = fake.statuses()
        assert statuses.count(None) == 1 and set(statuses) <= {None, 202}
        assert sum(o.accepted for o in outcomes) == len(fake.personalizations())
        assert all(o.retryable for o in outcomes if not o.accepted) and len(outcomes) == 4_500
        await retry_once_sends_the_rest(sink, fake, time, alerts, outcomes)

    with_sink(test, sendgrid_concurrency=2)


def test_a_429_among_requests_in_flight_loses_nothing_and_duplicates_nothing() -> None:
    alerts = make_alerts(4_500)

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        fake.delay = 0.1
        fake.script(RateLimited(reset_in=7))
        outcomes = await sink.deliver(alerts)
        # The other request in flight is refused too: nothing gets through before the reset.
        assert fake.statuses() == [429, 429]
        assert all(o.retryable and o.retry_after == 7.0 for o in outcomes) and len(outcomes) == 4_500
        await time.sleep(7)
        await retry_once_sends_the_rest(sink, fake, time, alerts, outcomes)

    with_sink(test, sendgrid_concurrency=2)


def test_an_interrupted_batch_sends_no_request_it_had_not_started() -> None:
    alerts = make_alerts(4_500)  # five requests, two at a time

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        fake.delay = 0.3
        batch = asyncio.create_task(sink.deliver(alerts))
        for _ in range(200):  # until the first two requests are in flight (bounded)
            if fake.in_flight == 2:
                break
            await asyncio.sleep(0.01)
        await sink.interrupt()
        outcomes = await batch
        # The two in flight keep their answers; the other three are left for the next worker.
        assert fake.statuses() == [202, 202]
        accepted = {o.record_id for o in outcomes if o.accepted}
        assert len(accepted) == 2_000 and set(sent_alert_ids(fake)) == accepted
        left = [o for o in outcomes if not o.accepted]
        assert len(left) == 2_500 and all(o.retryable and o.error == INTERRUPTED for o in left)

    with_sink(test, sendgrid_concurrency=2)


def test_a_wrong_key_is_a_permanent_failure_and_tells_the_operator() -> None:
    alerts = make_alerts(3)

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        with capture_logs() as logs:
            outcomes = await sink.deliver(alerts)
        assert fake.statuses() == [401]
        assert all(not o.accepted and not o.retryable and "(401)" in (o.error or "") for o in outcomes)
        (logged,) = [e for e in logs if e["event"] == "sendgrid.unauthorized"]
        assert logged["log_level"] == "error" and "MOBILISE_SENDGRID_API_KEY" in logged["fix"]

    with_sink(test, sendgrid_api_key="SG.wrong")


def test_sandbox_mode_is_accepted_without_sending() -> None:
    alerts = make_alerts(3)

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        with capture_logs() as logs:
            outcomes = await sink.deliver(alerts)
        assert fake.accepted == [] and len(fake.sandboxed) == 1
        assert fake.sandboxed[0]["mail_settings"] == {"sandbox_mode": {"enable": True}}
        assert all(o.accepted for o in outcomes)
        assert {o.provider_message_id for o in outcomes} == {fake.requests[0].message_id}
        (logged,) = [e for e in logs if e["event"] == "sendgrid.sandboxed"]
        assert logged["alerts"] == 3 and "sent nothing" in logged["detail"]

    with_sink(test, sendgrid_sandbox=True)


# -- privacy and headers -------------------------------------------------------------------


def test_nothing_personal_or_internal_goes_into_custom_args_or_categories() -> None:
    alerts = make_alerts(50)
    requests, _ = plan_requests(alerts, IDENTITY)
    everything = json.dumps([r.body for r in requests])
    assert "Hidden Person" not in everything and "do-not-send-this" not in everything
    for request in requests:
        assert request.body["categories"] == ["mobilise", "case:bd-1"]
        for personalization in request.body["personalizations"]:
            args = personalization["custom_args"]
            assert set(args) == {"alert_id", "event_id", "case_id", "subscriber_id"}
            assert not any("@" in value or "Person" in value for value in args.values())
        assert validate_mail_send(request.body) == []


def test_one_click_unsubscribe_only_with_a_public_url() -> None:
    alert = make_alerts(1)[0]
    (plain,), _ = plan_requests([alert], IDENTITY)
    assert plain.body["personalizations"][0]["headers"]["List-Unsubscribe"] == (
        f"<mailto:stop@example.net?subject=unsubscribe%20{alert.subscriber_id}>"
    )
    assert "List-Unsubscribe-Post" not in plain.body["headers"]
    assert "/unsubscribe/" not in json.dumps(plain.body)

    linked = IDENTITY.model_copy(update={"links": PublicLinks("https://alerts.example.net/", SECRET)})
    (one_click,), _ = plan_requests([alert], linked)
    header = one_click.body["personalizations"][0]["headers"]["List-Unsubscribe"]
    mailto, url = header.split(", ")
    assert mailto == f"<mailto:stop@example.net?subject=unsubscribe%20{alert.subscriber_id}>"
    assert url.startswith("<https://alerts.example.net/unsubscribe/") and url.endswith(">")
    token = url[1:-1].rsplit("/", 1)[1]
    assert LinkSigner(SECRET).verify(token, "unsubscribe") == alert.subscriber_id  # signed, not the bare id
    assert one_click.body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The footer link is each person's own, through the substitutions.
    assert url[1:-1] in one_click.body["personalizations"][0]["substitutions"].values()


def test_with_signed_links_each_person_gets_the_email_the_outbox_would_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alerts = [*make_alerts(3), *make_alerts(2, language="es", prefix="e")]
    monkeypatch.setenv("MOBILISE_PUBLIC_URL", "https://alerts.example.net")
    monkeypatch.setenv("MOBILISE_SECRET_KEY", SECRET.get_secret_value())

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        await sink.deliver(alerts)
        received = {email.custom_args["alert_id"]: email for email in fake.emails()}
        outbox_identity = OutboxConfig(
            from_email="Network <alerts@example.net>", unsubscribe_email="stop@example.net"
        ).identity()
        assert outbox_identity.links is not None  # the outbox reads the same settings
        urls = set()
        for alert in alerts:
            email, expected = received[alert.alert_id], render_alert(alert, outbox_identity)
            assert (email.text, email.html) == (expected.text, expected.html)
            assert email.headers["List-Unsubscribe"] == expected.headers["List-Unsubscribe"]
            assert email.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            url = expected.headers["List-Unsubscribe"].split(", <")[1].rstrip(">")
            assert url in email.text and f'href="{url}"' in email.html
            assert "write to stop@example.net" not in email.text
            urls.add(url)
        assert len(urls) == len(alerts)

    with_sink(test)


def test_a_case_text_containing_the_placeholder_mark_cannot_be_rendered() -> None:
    case = make_case(summary={"en": f"see {PLACEHOLDER_MARK}why_text%"})
    alerts = make_alerts(2, case)
    requests, failed = plan_requests(alerts, IDENTITY)
    assert requests == [] and len(failed) == 2
    assert all(not o.retryable and "reserved" in (o.error or "") for o in failed)
    with pytest.raises(ValueError, match="reserved"):
        render_alert(alerts[0], IDENTITY)


# -- pacing, answers, configuration --------------------------------------------------------


def test_the_token_bucket_allows_a_burst_then_spaces_requests() -> None:
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.reserve(0.0) for _ in range(5)] == [0.0, 0.0, 0.0, 0.5, 1.0]
    assert bucket.reserve(1.0) == 0.5  # one second refilled two tokens; two were owed
    assert bucket.reserve(10.0) == 0.0  # refilled to the burst, no more
    assert [bucket.reserve(10.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert bucket.reserve(9.0) == 1.0  # a clock stepping back refills nothing


def test_the_sink_waits_for_the_bucket_between_requests() -> None:
    alerts = make_alerts(4_500)

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        await sink.deliver(alerts)
        assert len(fake.accepted) == 5
        assert time.slept == [0.5, 0.5, 0.5]  # a burst of two, then one every half second

    with_sink(test, sendgrid_max_requests_per_second=2, sendgrid_concurrency=SEQUENTIAL)


def test_judging_answers() -> None:
    now = 1_800_000_000.0
    assert judge_response(202, {"X-Message-Id": "m1"}, "", now=now).message_id == "m1"
    limited = judge_response(429, {"X-RateLimit-Reset": str(int(now) + 12)}, "", now=now)
    assert (limited.kind, limited.retry_after, limited.halt) == ("retryable", 12.0, True)
    assert judge_response(429, {"X-RateLimit-Reset": str(int(now) - 5)}, "", now=now).retry_after == 1.0
    assert judge_response(429, {}, "", now=now).retry_after is None
    assert judge_response(503, {}, "busy", now=now).kind == "retryable"
    too_big = judge_response(413, {}, "x" * 5000, now=now)
    assert too_big.kind == "permanent" and len(too_big.error or "") < 1100


def test_settings_name_the_variable_and_hide_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOBILISE_SENDGRID_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="MOBILISE_SENDGRID_API_KEY: Field required"):
        SendGridConfig()
    monkeypatch.setenv("MOBILISE_SENDGRID_API_KEY", "SG.secret")
    monkeypatch.setenv("MOBILISE_SENDGRID_HOST", "not a url")
    with pytest.raises(
        ConfigurationError, match=r"MOBILISE_SENDGRID_HOST='not a url': .*scheme and host"
    ) as raised:
        SendGridConfig()
    assert "SG.secret" not in str(raised.value)
    monkeypatch.delenv("MOBILISE_SENDGRID_HOST")
    monkeypatch.setenv("MOBILISE_PUBLIC_URL", "http://alerts.example.org")
    with pytest.raises(ConfigurationError, match=r"MOBILISE_PUBLIC_URL=.*needs HTTPS"):
        SendGridConfig()
    monkeypatch.setenv("MOBILISE_PUBLIC_URL", "https://alerts.example.org/")
    with pytest.raises(
        ConfigurationError, match=r"MOBILISE_PUBLIC_URL is set but MOBILISE_SECRET_KEY is not"
    ):
        SendGridConfig()
    monkeypatch.setenv("MOBILISE_SECRET_KEY", "too-short-to-sign")
    with pytest.raises(ConfigurationError, match=r"MOBILISE_SECRET_KEY: must be at least 32") as raised:
        SendGridConfig()
    assert "too-short-to-sign" not in str(raised.value)
    monkeypatch.setenv("MOBILISE_SECRET_KEY", SECRET.get_secret_value())
    config = SendGridConfig()
    assert "SG.secret" not in repr(config) and config.sendgrid_host == "https://api.sendgrid.com"
    assert SECRET.get_secret_value() not in repr(config)
    assert config.public_url == "https://alerts.example.org"
    assert config.identity().links == PublicLinks("https://alerts.example.org", SECRET)
    assert config.sendgrid_concurrency == 4
    monkeypatch.setenv("MOBILISE_SENDGRID_CONCURRENCY", "0")
    with pytest.raises(
        ConfigurationError, match=r"MOBILISE_SENDGRID_CONCURRENCY='0': .*greater than or equal"
    ):
        SendGridConfig()


def test_the_sink_is_found_through_its_entry_point() -> None:
    assert load_sink("sendgrid") is SendGridSink


def test_an_internationalised_domain_goes_to_sendgrid_in_ascii_and_a_local_part_beyond_it_not_at_all() -> (
    None
):
    # The schemas keep the Unicode form of a domain, even one given in ASCII (IDNA).
    plain, international, local = make_alerts(3)
    international = international.model_copy(update={"email": "ana@exämple.org"})
    local = local.model_copy(update={"email": "josé@example.org"})

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        outcomes = {o.record_id: o for o in await sink.deliver([plain, international, local])}
        assert outcomes[plain.alert_id].accepted and outcomes[international.alert_id].accepted
        sent = {email.custom_args["alert_id"]: email.to["email"] for email in fake.emails()}
        assert sent == {plain.alert_id: plain.email, international.alert_id: "ana@xn--exmple-cua.org"}
        # SendGrid would take the request and drop this message as invalid: refused up front,
        # permanently, with what to do instead.
        refused = outcomes[local.alert_id]
        assert not refused.accepted and not refused.retryable
        assert refused.error is not None and "SMTPUTF8" in refused.error and "josé" not in refused.error

    with_sink(test)
