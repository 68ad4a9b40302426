"""The Apprise (chat) sink against a real HTTP server on 127.0.0.1, through Apprise's json:// service.

The server keeps the JSON of every notification posted to it and answers the statuses
it is told to, in order (200 once the list is used up).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr, ValidationError

from connectors.attempts import deliver_with_retries
from connectors.chat import AppriseConfig, AppriseSink, judge_failure, render_message
from connectors.registry import load_connector
from connectors.testing import check_sink_outcomes
from mobilise.errors import ConfigurationError
from schemas import CaseUpdate, DeadLetter, FieldError


@dataclass
class ChatServer:
    statuses: list[int] = field(default_factory=list)
    """Statuses to answer, in order; 200 when used up."""
    posted: list[dict[str, Any]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    port: int = 0

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    async def handle(self, request: web.Request) -> web.Response:
        self.posted.append(await request.json())
        status = self.statuses.pop(0) if self.statuses else 200
        self.answers.append(status)
        return web.Response(status=status, text="ok" if status == 200 else "no")


@asynccontextmanager
async def serving(*servers: ChatServer) -> AsyncIterator[None]:
    runners = []
    try:
        for server in servers:
            app = web.Application()
            app.router.add_post("/{path}", server.handle)
            runner = web.AppRunner(app)
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started
        yield
    finally:
        for runner in runners:
            await runner.cleanup()


@asynccontextmanager
async def open_sink(*urls: str, **settings: Any) -> AsyncIterator[AppriseSink]:
    sink = AppriseSink(AppriseConfig(urls=[SecretStr(u) for u in urls], **settings))
    await sink.setup()
    try:
        yield sink
    finally:
        await sink.close()


def run(servers: tuple[ChatServer, ...], test: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with serving(*servers):
            return await test()

    return asyncio.run(main())


def make_case(case_id: str = "bd-1", **changes: Any) -> CaseUpdate:
    return CaseUpdate.model_validate_json(
        json.dumps(
            {
                "case_id": case_id,
                "status": "urgent_action",
                "title": {"en": "Fired for organising", "fr": "Licenciés pour s'être syndiqués"},
                "summary": {"en": "Twelve union leaders were dismissed."},
                "country": "BD",
                "brands": ["H&M", "Zara"],
                "issues": ["union_busting"],
                "occurred_at": "2026-01-01T00:00:00Z",
                "published_by": "p",
                "internal": {"workers_at_risk": ["Hidden Person"]},
                "action_call": {
                    "kind": "email_brand",
                    "instructions": {"en": "Write to the CEO."},
                    "target": {"name": "H&M Group"},
                    "deadline": "2026-02-01T09:30:00+00:00",
                },
                **changes,
            }
        )
    )


def dead_letter() -> DeadLetter:
    return DeadLetter(
        stage="source:partner-feed",
        reason="country: 'ZZ' is not an ISO 3166-1 alpha-2 country code",
        errors=(FieldError(loc="country", msg="'ZZ' is not a country", type="value_error"),),
        topic="mobilise.case-updates",
        partition=0,
        offset=41,
        value=base64.b64encode(b'{"email": "someone@example.org"}'),
        at=datetime(2026, 1, 2, tzinfo=UTC),
    )


# -- success ---------------------------------------------------------------------------------


def test_a_case_update_is_posted_with_its_title_status_and_action() -> None:
    server = ChatServer()
    case = make_case()

    async def test() -> Any:
        async with open_sink(server.url()) as sink:
            outcomes = await sink.deliver([case])
            check_sink_outcomes(sink, [case], outcomes)
            return outcomes

    (outcome,) = run((server,), test)
    assert outcome.accepted and outcome.record_id == case.event_id
    (posted,) = server.posted
    assert posted["title"] == "[Urgent action] Fired for organising — Bangladesh"
    assert "Twelve union leaders were dismissed." in posted["message"]
    assert "Write to the CEO." in posted["message"] and "2026-02-01 09:30" in posted["message"]
    assert "Hidden Person" not in json.dumps(posted)  # internal fields never reach a channel
    assert posted["type"] == "warning"


def test_the_language_and_the_templates_are_the_configured_ones() -> None:
    server = ChatServer()

    async def test() -> None:
        async with open_sink(
            server.url(),
            language="fr",
            title_template="{{ case_id }}",
            body_template="{{ title }} ({{ status_label }}, {{ country_name }})",
        ) as sink:
            (outcome,) = await sink.deliver([make_case()])
            assert not outcome.accepted and "cannot render" in (outcome.error or "")
        async with open_sink(
            server.url(),
            language="fr",
            title_template="{{ record.case_id }}",
            body_template="{{ title }} ({{ status_label }}, {{ country_name }})",
        ) as sink:
            (outcome,) = await sink.deliver([make_case()])
            assert outcome.accepted

    run((server,), test)
    (posted,) = server.posted  # the record that could not be rendered was not posted
    assert posted["title"] == "bd-1"
    assert posted["message"] == "Licenciés pour s'être syndiqués (Urgent action, Bangladesh)"


def test_a_dead_letter_shows_its_stage_and_reason_but_not_the_record() -> None:
    message = render_message(dead_letter())
    assert message.title == "[Dead letter] source:partner-feed"
    assert "'ZZ' is not an ISO 3166-1 alpha-2 country code" in message.body
    assert "mobilise.case-updates partition 0 offset 41" in message.body
    assert "someone@example.org" not in message.body
    assert message.notify_type == "failure"


def test_one_deliver_of_n_records_posts_n_messages_and_a_repeat_posts_none() -> None:
    server = ChatServer()
    records = [make_case(f"bd-{i}") for i in range(4)] + [dead_letter()]

    async def test() -> tuple[Any, Any]:
        async with open_sink(server.url()) as sink:
            first = await sink.deliver(records)
            check_sink_outcomes(sink, records, first)
            again = await sink.deliver(records)
            check_sink_outcomes(sink, records, again)
            return first, again

    first, again = run((server,), test)
    assert all(o.accepted and not o.duplicate for o in first)
    assert len(server.posted) == len(records)
    titles = [p["title"] for p in server.posted]
    assert titles[:4] == ["[Urgent action] Fired for organising — Bangladesh"] * 4
    assert titles[4] == "[Dead letter] source:partner-feed"
    assert all(o.accepted and o.duplicate for o in again)


# -- failures --------------------------------------------------------------------------------


def test_a_503_is_retryable_and_the_next_deliver_is_accepted() -> None:
    server = ChatServer(statuses=[503])
    case = make_case()

    async def test() -> tuple[Any, Any]:
        async with open_sink(server.url()) as sink:
            first = await sink.deliver([case])
            check_sink_outcomes(sink, [case], first)
            second = await sink.deliver([case])
            check_sink_outcomes(sink, [case], second)
            return first, second

    (first,), (second,) = run((server,), test)
    assert first.retryable and not first.accepted and "503" in (first.error or "")
    assert second.accepted and not second.duplicate
    assert server.answers == [503, 200]


def test_the_runtime_retry_loop_gets_a_record_through_a_429() -> None:
    server = ChatServer(statuses=[429, 503])
    case = make_case()
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    async def test() -> Any:
        async with open_sink(server.url()) as sink:
            return await deliver_with_retries(sink, [case], max_attempts=5, sleep=no_wait)

    (attempted,) = run((server,), test)
    assert attempted.accepted and attempted.attempts == 3
    assert server.answers == [429, 503, 200]
    assert len(waits) == 2


def test_a_400_is_permanent() -> None:
    server = ChatServer(statuses=[400])
    case = make_case()

    async def test() -> Any:
        async with open_sink(server.url()) as sink:
            outcomes = await sink.deliver([case])
            check_sink_outcomes(sink, [case], outcomes)
            return outcomes

    (outcome,) = run((server,), test)
    assert not outcome.accepted and not outcome.retryable
    assert "HTTP 400" in (outcome.error or "") and "urls[0]" in (outcome.error or "")


def test_nothing_listening_is_retryable() -> None:
    server = ChatServer()

    async def test() -> str:
        return server.url()

    url = run((server,), test)  # the server is gone once run returns

    async def main() -> Any:
        async with open_sink(url) as sink:
            return await sink.deliver([make_case()])

    (outcome,) = asyncio.run(main())
    assert outcome.retryable and not outcome.accepted and outcome.error


def test_after_a_temporary_failure_the_rest_of_the_batch_waits_to_keep_the_order() -> None:
    server = ChatServer(statuses=[503])
    records = [make_case("bd-1"), make_case("bd-2")]

    async def test() -> tuple[Any, Any]:
        async with open_sink(server.url()) as sink:
            first = await sink.deliver(records)
            check_sink_outcomes(sink, records, first)
            return first, await sink.deliver(records)

    first, second = run((server,), test)
    assert [o.retryable for o in first] == [True, True]
    assert "not sent" in (first[1].error or "")
    assert all(o.accepted for o in second)
    assert server.answers == [503, 200, 200]


def test_a_retried_record_goes_only_to_the_channel_that_missed_it() -> None:
    healthy, flaky = ChatServer(), ChatServer(statuses=[503])
    case = make_case()

    async def test() -> tuple[Any, Any]:
        async with open_sink(healthy.url(), flaky.url()) as sink:
            return await sink.deliver([case]), await sink.deliver([case])

    (first,), (second,) = run((healthy, flaky), test)
    assert first.retryable and "urls[1]" in (first.error or "") and "urls[0]" not in (first.error or "")
    assert second.accepted
    assert len(healthy.posted) == 1
    assert flaky.answers == [503, 200]


def test_concurrent_notifications_are_judged_by_their_own_answers() -> None:
    refusing, failing = ChatServer(statuses=[400] * 3), ChatServer(statuses=[503] * 3)
    records = [make_case(f"bd-{i}") for i in range(3)]

    async def deliver(url: str) -> Any:
        async with open_sink(url) as sink:
            return [await sink.deliver([r]) for r in records]

    async def test() -> tuple[Any, Any]:
        refused, failed = await asyncio.gather(deliver(refusing.url()), deliver(failing.url()))
        return refused, failed

    refused, failed = run((refusing, failing), test)
    assert all(not o.retryable and "HTTP 400" in (o.error or "") for (o,) in refused)
    assert all(o.retryable and "HTTP 503" in (o.error or "") for (o,) in failed)


# -- configuration ---------------------------------------------------------------------------


def test_an_url_apprise_does_not_understand_fails_setup_without_showing_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "carrier-pigeon://s3cr3t-t0ken@loft/roof"

    async def main() -> None:
        sink = AppriseSink(AppriseConfig(urls=[SecretStr("json://127.0.0.1:9/hook"), SecretStr(secret)]))
        await sink.setup()

    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigurationError) as raised:
        asyncio.run(main())
    message = str(raised.value)
    assert "urls[1]" in message
    assert "s3cr3t" not in message and "carrier-pigeon" not in message
    assert all("s3cr3t" not in record.getMessage() for record in caplog.records)


def test_the_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="urls"):
        AppriseConfig(urls=[])
    with pytest.raises(ValidationError, match="body_template"):
        AppriseConfig(urls=[SecretStr("json://localhost")], body_template="{% if %}")
    config = AppriseConfig(urls=[SecretStr("tgram://123456:token/chat")])
    assert "token" not in repr(config)


def test_judging_what_apprise_logged() -> None:
    assert judge_failure(["Failed to send JSON POST notification: Bad Request, error=400."]) == (False, 400)
    assert judge_failure(["Failed to send Slack notification: Not Found, error=404."]) == (False, 404)
    assert judge_failure(["Failed to send: error=429."]) == (True, 429)
    assert judge_failure(["Failed to send: error=408."]) == (True, 408)
    assert judge_failure(["Failed to send: Service Unavailable, error=503."]) == (True, 503)
    assert judge_failure(["A Connection error occurred sending JSON notification to x."]) == (True, None)
    # The last status is the answer to the request that failed.
    assert judge_failure(["lookup failed: error=404.", "send failed: error=502."]) == (True, 502)


def test_the_entry_point_finds_the_sink() -> None:
    assert load_connector("apprise") is AppriseSink
