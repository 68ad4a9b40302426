"""The "I did this" page and the action counters, over real HTTP against the real broker.

Each test runs the web app (aiohttp's TestServer on a loopback port) on its own topics
(PipelineHarness), with an injected clock: the signed link of an action call's email, its
page (a GET records nothing), the ActionTaken a POST publishes (once per person and
action), and the counters per action call in the coordinators' API and console, from
delivery events and actions taken published on the topics.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from mobilise.broker import free_port
from mobilise.links import LinkSigner, PublicLinks
from mobilise.settings import load_settings
from mobilise.web import create_app
from mobilise.web.publisher import KafkaPublisher
from schemas import (
    ActionTaken,
    CaseUpdate,
    DeliveryEvent,
    Subscription,
    TokenRole,
    read_subscriptions_record,
    taken_id_for,
)
from streams.admin import publish

from .coordinators import add_token
from .harness import PipelineHarness, case_update, subscription

pytestmark = pytest.mark.integration

SECRET = "acted-pages-test-secret-0123456789abcdefgh"
START = 1_800_000_000.0
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
ACTION = "bd-2026-1-email-hm"
WAIT = 60.0

CALL: dict[str, Any] = {
    "kind": "email_brand",
    "action_id": ACTION,
    "instructions": {"en": "Write to H&M's CEO.", "fr": "Écrivez au PDG de H&M."},
    "target": {"name": "H&M's CEO", "email": "ceo@hm.example"},
    "goal": {"count": 5000, "label": {"en": "emails to H&M", "fr": "e-mails à H&M"}},
    "variants": [{"countries": ["NL"], "kind": "protest_at_store", "target": {"name": "H&M Kalverstraat"}}],
}


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Site:
    def __init__(self, client: TestClient[Any, Any], pipeline: PipelineHarness, clock: Clock) -> None:
        self.client = client
        self.pipeline = pipeline
        self.clock = clock
        self.links = PublicLinks(str(client.make_url("")), SecretStr(SECRET), clock=clock)

    def acted_path(
        self, subscriber_id: str, event_id: str, language: str = "en", action: str = ACTION
    ) -> str:
        url = self.links.acted_url(subscriber_id, action, event_id, language)
        return url.removeprefix(self.links.public_url)

    async def get_ok(self, path: str) -> str:
        """GET ``path`` until it answers 200 (the views read their topics first); its HTML."""
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            response = await self.client.get(path)
            if response.status == 200:
                return await response.text()
            assert asyncio.get_running_loop().time() < deadline, (response.status, await response.text())
            await asyncio.sleep(0.1)

    async def post(self, path: str, data: list[tuple[str, str]], *, csrf: bool = True) -> ClientResponse:
        fields = list(data)
        if csrf:
            match = CSRF.search(await self.get_ok(path))
            assert match is not None
            fields.insert(0, ("csrf_token", match.group(1)))
        return await self.client.post(path, data=fields)

    async def taken(self) -> list[tuple[str, ActionTaken]]:
        found = await asyncio.to_thread(self.pipeline.read_topic, self.pipeline.names.actions_taken)
        return [(r.key.decode(), ActionTaken.model_validate_json(r.value)) for r in found]

    async def until_api(self, token: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """``GET /api/v1/cases/bd-2026-1`` until its answer passes ``check`` (the views read first)."""
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            response = await self.client.get(
                "/api/v1/cases/bd-2026-1", headers={"Authorization": f"Bearer {token}"}
            )
            answer: dict[str, Any] = await response.json()
            if response.status == 200 and check(answer):
                return answer
            assert asyncio.get_running_loop().time() < deadline, json.dumps(answer, indent=1)
            await asyncio.sleep(0.1)


@asynccontextmanager
async def site(
    pipeline: PipelineHarness, publisher: KafkaPublisher | None = None, **overrides: Any
) -> AsyncIterator[Site]:
    port = free_port()
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": pipeline.broker.bootstrap,
        "topic_prefix": pipeline.names.prefix,
        "partitions": pipeline.partitions,
        "public_url": f"http://127.0.0.1:{port}",
        "secret_key": SECRET,
        **overrides,
    }
    clock = Clock()
    app = create_app(load_settings(**values), clock=clock, publisher=publisher)
    async with TestClient(TestServer(app, host="127.0.0.1", port=port)) as client:
        yield Site(client, pipeline, clock)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def action_update(occurred_at: str = "2026-03-01T08:00:00+00:00", **fields: Any) -> CaseUpdate:
    return case_update(action_call=CALL, occurred_at=occurred_at, **fields)


def person(email: str, **fields: Any) -> Subscription:
    return subscription(email, countries=["BD"], interests=["union_busting"], **fields)


def delivery(update: CaseUpdate, alert: str, outcome: str) -> DeliveryEvent:
    return DeliveryEvent.model_validate_json(
        json.dumps(
            {
                "alert_id": alert,
                "event_id": update.event_id,
                "case_id": update.case_id,
                "subscriber_id": f"sub-{alert}",
                "sink": "sendgrid",
                "outcome": outcome,
                "provider_event_id": f"pe-{alert}-{outcome}" if outcome == "opened" else None,
                "at": "2026-03-01T09:00:00Z",
            }
        )
    )


def taken(update: CaseUpdate, subscriber_id: str, region: str | None, n: int = 0) -> ActionTaken:
    country = {"western-europe": "NL", "southern-asia": "BD", None: None}[region]
    return ActionTaken.model_validate_json(
        json.dumps(
            {
                "taken_id": taken_id_for(ACTION, subscriber_id),
                "action_id": ACTION,
                "case_id": update.case_id,
                "event_id": update.event_id,
                "subscriber_id": subscriber_id,
                "home_country": country,
                "region": region,
                "at": f"2026-03-02T09:00:0{n}Z",
            }
        )
    )


# -- the page -------------------------------------------------------------------------------


def test_opening_the_link_records_nothing_and_shows_the_form(pipeline: PipelineHarness) -> None:
    update, rahima = action_update(), person("rahima@example.org")
    pipeline.publish(update)
    pipeline.subscribe(rahima)

    async def scenario() -> None:
        async with site(pipeline) as web:
            path = web.acted_path(rahima.subscriber_id, update.event_id)
            html = await web.get_ok(path)
            assert '<html lang="en">' in html and 'name="viewport"' in html
            assert "<h1>Thank you! Tell us what you did</h1>" in html
            assert 'type="radio" name="what" value="as_asked" checked> I did what was asked' in html
            assert 'value="something_else"> I did something else for this case' in html
            assert '<label class="block" for="note">' in html and 'maxlength="1000"' in html
            assert "Union leaders fired at Dhaka Knitwear" in html and "H&amp;M&#39;s CEO" in html
            assert "<script" not in html
            # The language switch keeps the event.
            assert f'href="?event={update.event_id}&amp;lang=fr"' in html
            french = await web.get_ok(web.acted_path(rahima.subscriber_id, update.event_id, "fr"))
            assert '<html lang="fr">' in french and "Merci ! Dites-nous ce que vous avez fait" in french
            spanish = await web.get_ok(web.acted_path(rahima.subscriber_id, update.event_id, "es"))
            assert "¡Gracias! Cuéntanos qué hiciste" in spanish
            assert await web.taken() == []

    run(scenario)


def test_saying_so_publishes_one_action_taken_and_a_second_time_counts_once(
    pipeline: PipelineHarness,
) -> None:
    update, rahima = action_update(), person("rahima@example.org", home_country="NL")
    pipeline.publish(update)
    pipeline.subscribe(rahima)
    coordinator = add_token(pipeline, "coordinator-asia", TokenRole.COORDINATOR)

    async def scenario() -> None:
        async with site(pipeline) as web:
            path = web.acted_path(rahima.subscriber_id, update.event_id)
            html = await web.get_ok(path)
            assert "H&amp;M Kalverstraat" in html  # the variant for where she lives
            answer = await web.post(path, [("what", "as_asked"), ("note", "Sent the letter.")])
            thanks = await answer.text()
            assert answer.status == 200, thanks
            assert "<h1>Thank you!</h1>" in thanks
            assert "1 of 5,000 emails to H&amp;M so far." in thanks
            ((key, first),) = await web.taken()
            assert key == rahima.subscriber_id
            assert first.taken_id == taken_id_for(ACTION, rahima.subscriber_id)
            assert (first.action_id, first.case_id, first.event_id) == (ACTION, "bd-2026-1", update.event_id)
            assert (first.what, first.note) == ("as_asked", "Sent the letter.")
            assert first.home_country == "NL" and first.region is not None
            assert first.region.value == "western-europe"

            web.clock.now += 60
            again = await web.post(path, [("what", "something_else"), ("note", "")])
            assert again.status == 200 and "1 of 5,000 emails" in await again.text()
            records = await web.taken()
            assert len(records) == 2 and {r.taken_id for _, r in records} == {first.taken_id}
            case = await web.until_api(coordinator.token, lambda c: bool(c["actions"]))
            (action,) = case["actions"]
            assert action["acted"] == 1 and case["counts"]["acted"] == 1

    run(scenario)


def test_forged_foreign_and_unknown_links_are_refused(pipeline: PipelineHarness) -> None:
    update, rahima = action_update(), person("rahima@example.org")
    plain = case_update("kh-2026-7", country="KH", occurred_at="2026-03-01T08:00:00+00:00")
    pipeline.publish(update, plain)
    pipeline.subscribe(rahima)

    async def scenario() -> None:
        async with site(pipeline) as web:
            good = web.acted_path(rahima.subscriber_id, update.event_id)
            await web.get_ok(good)
            signer = LinkSigner(SECRET, clock=web.clock)
            forged = LinkSigner("another-secret-that-is-long-enough-0123456789").sign(
                "acted", rahima.subscriber_id, scope=ACTION
            )
            for token in (
                forged,
                signer.sign("acted", rahima.subscriber_id, scope="another-action"),
                signer.sign("preferences", rahima.subscriber_id),
                "not-a-token",
            ):
                path = f"/acted/{ACTION}/{token}?event={update.event_id}&lang=en"
                for answer in (
                    await web.client.get(path),
                    await web.client.post(path, data=[("what", "as_asked")]),
                ):
                    assert answer.status == 400, (token, await answer.text())
                    assert "This link does not work" in await answer.text()
            # The right token for the action, but an event that is unknown, or has no such call.
            token = signer.sign("acted", rahima.subscriber_id, scope=ACTION)
            for event in ("evt-nope", plain.event_id, ""):
                answer = await web.client.get(f"/acted/{ACTION}/{token}?event={event}&lang=fr")
                assert answer.status == 404
                assert "Nous ne connaissons pas cette action" in await answer.text()
            # A post without the form's CSRF token.
            refused = await web.post(good, [("what", "as_asked")], csrf=False)
            assert refused.status == 403
            # Fields at fault are named next to them.
            invalid = await web.post(good, [("what", "danced"), ("note", "x" * 1001)])
            html = await invalid.text()
            assert invalid.status == 400
            assert 'id="what-error"' in html and "Choose what you did." in html
            assert 'id="note-error"' in html and "1000 characters or fewer" in html
            assert await web.taken() == []

    run(scenario)


def test_when_kafka_does_not_acknowledge_nothing_is_counted(pipeline: PipelineHarness) -> None:
    update, rahima = action_update(), person("rahima@example.org")
    pipeline.publish(update)
    pipeline.subscribe(rahima)
    nowhere = KafkaPublisher([f"127.0.0.1:{free_port()}"], timeout=2)

    async def scenario() -> None:
        async with site(pipeline, publisher=nowhere) as web:
            path = web.acted_path(rahima.subscriber_id, update.event_id)
            answer = await web.post(path, [("what", "as_asked")])
            assert answer.status == 503 and "Please try again" in await answer.text()
            assert await web.taken() == []

    run(scenario)


# -- the counters -----------------------------------------------------------------------------


def test_the_api_and_the_console_count_sent_opened_acted_and_progress_per_action(
    pipeline: PipelineHarness,
) -> None:
    update = action_update()
    # The same call again, a day later: one action, whose alerts add up.
    repeat = action_update(
        "2026-03-02T08:00:00+00:00", status="escalated", summary={"en": "Still no reinstatement."}
    )
    plain = case_update(status="opened", occurred_at="2026-02-28T08:00:00+00:00")
    pipeline.publish(plain, update, repeat)
    deliveries = [
        delivery(update, "a1", "accepted"),
        delivery(update, "a1", "opened"),
        delivery(update, "a1", "opened"),  # an alert opened twice is opened once
        delivery(update, "a2", "accepted"),
        delivery(update, "a3", "dead_lettered"),
        delivery(repeat, "a4", "accepted"),
        delivery(repeat, "a4", "clicked"),
        delivery(plain, "a5", "accepted"),  # the update without a call: not the action's
        delivery(plain, "a5", "opened"),
    ]
    actions = [
        taken(update, "sub-nl-1", "western-europe"),
        taken(update, "sub-nl-1", "western-europe", n=1),  # a second click: the same taken id
        taken(update, "sub-nl-2", "western-europe"),
        taken(repeat, "sub-bd-1", "southern-asia"),
        taken(update, "sub-x", None),
    ]
    bootstrap = [pipeline.broker.bootstrap]
    publish(
        bootstrap,
        pipeline.names.deliveries,
        [(d.subscriber_id, d.model_dump_json().encode()) for d in deliveries],
    )
    publish(
        bootstrap,
        pipeline.names.actions_taken,
        [(a.subscriber_id, a.model_dump_json().encode()) for a in actions],
    )
    coordinator = add_token(pipeline, "coordinator-asia", TokenRole.COORDINATOR)

    async def scenario() -> None:
        async with site(pipeline) as web:
            case = await web.until_api(
                coordinator.token,
                lambda c: bool(c["actions"]) and c["actions"][0]["acted"] == 4 and c["counts"]["sent"] == 4,
            )
            assert case["actions"] == [
                {
                    "action_id": ACTION,
                    "kind": "email_brand",
                    "goal": {"count": 5000, "label": {"en": "emails to H&M", "fr": "e-mails à H&M"}},
                    "sent": 3,
                    "opened": 2,
                    "acted": 4,
                    "progress": 4 / 5000,
                    "by_region": {"southern-asia": 1, "unknown": 1, "western-europe": 2},
                }
            ]
            assert case["counts"] == {
                "matched": 5,
                "sent": 4,
                "failed": 1,
                "bounced": 0,
                "opened": 3,
                "acted": 4,
            }

            # The console: sign in with the token, then the case page.
            sign_in = await web.client.get("/console")
            match = CSRF.search(await sign_in.text())
            assert match is not None
            signed = await web.client.post(
                "/console/sign-in",
                data=[("csrf_token", match.group(1)), ("token", coordinator.token)],
                allow_redirects=False,
            )
            assert signed.status == 303
            page = await web.client.get("/console/cases/bd-2026-1")
            html = await page.text()
            assert page.status == 200, html
            assert "<h2>Actions</h2>" in html and ACTION in html
            assert "4 of 5,000 emails to H&amp;M" in html
            assert re.search(
                r'<td class="number">3</td>\s*<td class="number">2</td>\s*<td class="number">4</td>', html
            )
            assert "Western Europe: 2" in html and "Southern Asia: 1" in html and "Not said: 1" in html

    run(scenario)


def test_home_country_round_trip_through_preferences_and_into_the_action(pipeline: PipelineHarness) -> None:
    update, rahima = action_update(), person("rahima@example.org")
    pipeline.publish(update)
    pipeline.subscribe(rahima)

    async def scenario() -> None:
        async with site(pipeline) as web:
            preferences = f"/preferences/{LinkSigner(SECRET).sign('preferences', rahima.subscriber_id)}"
            html = await web.get_ok(preferences)
            assert '<label class="block" for="home_country">Where do you live? (optional)</label>' in html
            assert '<option value="" selected>I would rather not say</option>' in html
            fields = [
                ("language", "en"),
                ("home_country", "fr"),
                ("countries", "BD"),
                ("interests", "union_busting"),
                ("statuses", "urgent_action"),
                ("frequency", "immediate"),
            ]
            saved = await web.post(preferences, fields)
            html = await saved.text()
            assert saved.status == 200, html
            assert '<option value="FR" lang="en" selected>France</option>' in html
            found = await asyncio.to_thread(pipeline.read_topic, pipeline.names.subscriptions)
            latest = read_subscriptions_record(found[-1].value)
            assert isinstance(latest, Subscription) and latest.home_country == "FR"
            my_data = await web.get_ok(preferences.replace("/preferences/", "/my-data/"))
            assert "<dt>Where you live</dt>\n<dd>France</dd>" in my_data

            answer = await web.post(
                web.acted_path(rahima.subscriber_id, update.event_id), [("what", "as_asked")]
            )
            assert answer.status == 200
            ((_, record),) = await web.taken()
            assert record.home_country == "FR" and record.region is not None
            assert record.region.value == "western-europe"

            wrong = await web.post(preferences, [*fields[:1], ("home_country", "XX"), *fields[2:]])
            assert wrong.status == 400
            assert "Choose the country you live in from the list" in await wrong.text()

    run(scenario)
