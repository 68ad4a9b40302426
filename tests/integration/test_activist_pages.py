"""The activists' pages over real HTTP against the real broker: subscribe, confirm, preferences, my data.

Each test runs the web app (aiohttp's TestServer on a loopback port) on its own topics
(PipelineHarness), with the outbox sink so that notices land as .eml files, and an
injected clock. The last test goes through the pages in a real browser (chromium through
Playwright), with a worker delivering the alerts.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from mobilise.broker import EmbeddedBroker, free_port
from mobilise.links import LinkSigner
from mobilise.settings import load_settings
from mobilise.web import BackgroundWebServer, create_app, subscribers_view
from mobilise.web.publisher import KafkaPublisher
from schemas import Subscription, Suppression, SuppressionReason, read_subscriptions_record, subscriber_id_for

from .harness import PipelineHarness, case_update, now, recipients, subscription

pytestmark = pytest.mark.integration

SECRET = "activist-pages-test-secret-0123456789abcdef"
START = 1_800_000_000.0
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Clock:
    """The app's clock: stands still unless a test moves it."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pipeline(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PipelineHarness]:
    harness = PipelineHarness(broker, tmp_path)
    monkeypatch.setenv("MOBILISE_OUTBOX_DIR", str(harness.outbox))
    monkeypatch.setenv("MOBILISE_FROM_EMAIL", "Network alerts <alerts@example.net>")
    try:
        yield harness
    finally:
        harness.stop()


class Site:
    """A TestClient on the app, and what the tests read back: the topic and the outbox."""

    def __init__(self, client: TestClient[Any, Any], pipeline: PipelineHarness, clock: Clock) -> None:
        self.client = client
        self.pipeline = pipeline
        self.clock = clock

    async def form(self, path: str, **headers: str) -> str:
        """GET ``path`` and return the CSRF token of its form."""
        response = await self.client.get(path, headers=headers)
        assert response.status == 200, await response.text()
        match = CSRF.search(await response.text())
        assert match is not None
        return match.group(1)

    async def post(
        self, path: str, data: list[tuple[str, str]], *, token: str | None = None
    ) -> ClientResponse:
        """POST the form ``data`` to ``path``, with a fresh CSRF token unless one is given."""
        if token is None:
            token = await self.form(path)
        return await self.client.post(path, data=[("csrf_token", token), *data])

    async def records(self) -> list[tuple[str, Subscription | Suppression | None]]:
        found = await asyncio.to_thread(self.pipeline.read_topic, self.pipeline.names.subscriptions)
        return [
            (r.key.decode(), read_subscriptions_record(r.value) if r.value is not None else None)
            for r in found
        ]

    def notices(self) -> list[EmailMessage]:
        parser = BytesParser(policy=policy.default)
        return [parser.parsebytes(p.read_bytes()) for p in sorted(self.pipeline.outbox.glob("notice-*.eml"))]

    def notice_to(self, address: str) -> EmailMessage:
        (notice,) = [n for n in self.notices() if n["To"].addresses[0].addr_spec == address]
        return notice


@asynccontextmanager
async def site(
    pipeline: PipelineHarness,
    clock: Clock | None = None,
    publisher: KafkaPublisher | None = None,
    **overrides: Any,
) -> AsyncIterator[Site]:
    port = free_port()
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": pipeline.broker.bootstrap,
        "topic_prefix": pipeline.names.prefix,
        "partitions": pipeline.partitions,
        "public_url": f"http://127.0.0.1:{port}",
        "secret_key": SECRET,
        "sink": "outbox",
        **overrides,
    }
    clock = clock or Clock()
    app = create_app(load_settings(**values), clock=clock, publisher=publisher)
    async with TestClient(TestServer(app, host="127.0.0.1", port=port)) as client:
        yield Site(client, pipeline, clock)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def choices(email: str | None = "new@example.org", **fields: Any) -> list[tuple[str, str]]:
    """A valid form: Bangladesh and union busting unless told otherwise."""
    data: dict[str, Any] = {
        "email": email,
        "name": "Rahima",
        "language": "en",
        "countries": ["BD"],
        "interests": ["union_busting"],
        "brands": "",
        "statuses": ["opened", "urgent_action"],
        "frequency": "immediate",
        **fields,
    }
    pairs = []
    for name, value in data.items():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                pairs.append((name, item))
    return pairs


def link(notice: EmailMessage, page: str) -> str:
    """The path (and query) of the ``page`` link in the text body of ``notice``."""
    body = notice.get_body(preferencelist=("plain",))
    assert body is not None
    match = re.search(rf"https?://[^/\s]+(/{page}/[^\s]+)", body.get_content())
    assert match is not None, body.get_content()
    return match.group(1)


def near(html: str, element_id: str, chars: int = 600) -> str:
    """The HTML from the element with ``id`` back to ``chars`` characters before it."""
    at = html.index(f'id="{element_id}"')
    return html[max(0, at - chars) : at + 300]


def token(purpose: Any, subscriber_id: str, clock: Clock, **kwargs: Any) -> str:
    return LinkSigner(SECRET, clock=clock).sign(purpose, subscriber_id, **kwargs)


# -- the subscribe page ----------------------------------------------------------------------


def test_the_form_is_labelled_and_speaks_the_asked_language(pipeline: PipelineHarness) -> None:
    async def scenario() -> None:
        async with site(pipeline) as web:
            response = await web.client.get("/subscribe")
            html = await response.text()
            assert response.status == 200
            assert '<html lang="en">' in html and 'name="viewport"' in html
            assert '<label class="block" for="email">Email address</label>' in html
            assert 'id="email" name="email"' in html
            assert "<legend>Where?</legend>" in html and "Everywhere in the world" in html
            assert 'value="BD"' in html and "Bangladesh" in html and "South-eastern Asia" in html
            assert (
                "Union busting" in html and "Urgent actions" in html and "As soon as a case matches" in html
            )
            assert "<script" not in html
            cookie = response.headers["Set-Cookie"]
            assert "mobilise_csrf=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
            assert response.headers["Cache-Control"] == "no-store"

            french = await (await web.client.get("/subscribe?lang=fr")).text()
            assert '<html lang="fr">' in french
            assert "<h1>Recevoir les alertes sur les droits des travailleurs et travailleuses</h1>" in french
            assert "Asie du Sud-Est" in french and "Répression syndicale" in french
            spanish = await (
                await web.client.get("/subscribe", headers={"Accept-Language": "es-MX,en;q=0.5"})
            ).text()
            assert '<html lang="es">' in spanish
            assert "<h1>Recibir alertas sobre casos de derechos laborales</h1>" in spanish

    run(scenario)


def test_a_valid_form_answers_the_same_whether_the_address_is_known_or_not(pipeline: PipelineHarness) -> None:
    known = subscription("known@example.org", countries=["KH"], interests=["wages"])
    pipeline.subscribe(known)

    async def scenario() -> None:
        async with site(pipeline) as web:
            with capture_logs() as logs:
                unknown_page = await web.post("/subscribe", choices("new@example.org"))
                known_page = await web.post("/subscribe", choices("Known@Example.org", countries=["BD"]))
            logged = json.dumps(logs, default=str).casefold()
            assert "new@example.org" not in logged and "known@example.org" not in logged
            assert [e["notice"] for e in logs if e["event"] == "web.notice_sent"] == ["confirm", "manage"]
            assert (unknown_page.status, known_page.status) == (200, 200)
            unknown_body, known_body = await unknown_page.text(), await known_page.text()
            assert unknown_body == known_body
            assert "<h1" in unknown_body and "Check your inbox" in unknown_body
            assert "Set-Cookie" not in unknown_page.headers and "Set-Cookie" not in known_page.headers

            records = await web.records()
            # The known, confirmed person's subscription is untouched: one record, theirs.
            assert [s for k, s in records if k == known.subscriber_id] == [known]
            ((key, pending),) = [(k, s) for k, s in records if k != known.subscriber_id]
            assert isinstance(pending, Subscription)
            assert key == pending.subscriber_id == subscriber_id_for("new@example.org")
            assert pending.confirmed is False and pending.created_at.timestamp() == START
            assert (pending.countries, pending.interests, pending.name) == (
                ("BD",),
                ("union_busting",),
                "Rahima",
            )

            confirm = web.notice_to("new@example.org")
            assert (
                confirm["X-Mobilise-Notice"] == "confirm"
                and confirm["From"] == "Network alerts <alerts@example.net>"
            )
            assert confirm["Subject"] == "Confirm your subscription to the alerts"
            path = link(confirm, "confirm")
            assert path.endswith("?lang=en")
            manage = web.notice_to("known@example.org")
            assert (
                manage["X-Mobilise-Notice"] == "manage" and manage["Subject"] == "You already get the alerts"
            )
            assert link(manage, "preferences") and link(manage, "my-data")
            assert "/confirm/" not in manage.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]

            # The link from the email: GET changes nothing, the button confirms.
            page = await web.client.get(path)
            html = await page.text()
            assert page.status == 200 and "Confirm my subscription" in html
            assert len(await web.records()) == 2
            web.clock.now += 60
            match = CSRF.search(html)
            assert match is not None
            done = await web.client.post(path, data={"csrf_token": match.group(1)})
            done_html = await done.text()
            assert done.status == 200 and "You are subscribed" in done_html
            assert "/preferences/" in done_html
            confirmed = [s for k, s in await web.records() if k == pending.subscriber_id][-1]
            assert isinstance(confirmed, Subscription)
            assert confirmed.confirmed is True and confirmed.created_at.timestamp() == START + 60
            assert (
                confirmed.model_copy(update={"confirmed": False, "created_at": pending.created_at}) == pending
            )

    run(scenario)


def test_a_pending_address_submitted_again_gets_a_new_link_and_the_new_choices(
    pipeline: PipelineHarness,
) -> None:
    async def scenario() -> None:
        async with site(pipeline) as web:
            assert (await web.post("/subscribe", choices("again@example.org"))).status == 200
            web.clock.now += 10
            assert (
                await web.post("/subscribe", choices("again@example.org", countries=["KH"]))
            ).status == 200
            pending = [s for _, s in await web.records()]
            assert [s.countries for s in pending if isinstance(s, Subscription)] == [("BD",), ("KH",)]
            assert all(isinstance(s, Subscription) and not s.confirmed for s in pending)
            assert [n["X-Mobilise-Notice"] for n in web.notices()] == ["confirm", "confirm"]

    run(scenario)


def test_invalid_fields_get_their_message_next_to_them_and_nothing_is_published(
    pipeline: PipelineHarness,
) -> None:
    async def scenario() -> None:
        async with site(pipeline) as web:
            bad = choices("not-an-address", countries=[], interests=[], statuses=[], name="x" * 201)
            response = await web.post("/subscribe", bad)
            html = await response.text()
            assert response.status == 400
            assert '<div class="summary" role="alert"' in html and "There is a problem" in html
            assert "<title>Error: " in html
            email = near(html, "email-error", 0)
            assert "Enter an email address like name@example.org." in email
            field = html[html.index('<input type="email" id="email"') :].split(">", 1)[0]
            assert 'value="not-an-address"' in field and 'aria-invalid="true"' in field
            assert 'aria-describedby="email-hint email-error"' in field
            assert "Your name must be 200 characters or fewer." in near(html, "name-error", 0)
            places = html[html.index('<fieldset id="places"') : html.index('<fieldset id="interests"')]
            assert 'aria-invalid="true"' in places.split(">", 1)[0]
            assert "Choose at least one region or country" in places
            interests = html[
                html.index('<fieldset id="interests"') : html.index('<label class="block" for="brands"')
            ]
            assert "Choose at least one issue, or name at least one brand below." in interests
            statuses = html[html.index('<fieldset id="statuses"') : html.index('<fieldset id="frequency"')]
            assert "Choose at least one kind of case update." in statuses
            assert 'href="#email"' in html and 'href="#places"' in html  # the summary links to the fields
            assert 'id="language-error"' not in html  # only the wrong fields

            french = await web.post("/subscribe", choices("x@y", language="fr", countries=["ZZ"]))
            french_html = await french.text()
            assert french.status == 400 and '<html lang="fr">' in french_html
            assert "Saisissez une adresse e-mail de la forme nom@exemple.org." in near(
                french_html, "email-error", 0
            )
            assert "Choisissez les régions et les pays dans la liste." in near(french_html, "places-error", 0)
            assert 'value="x@y"' in french_html  # kept as typed

            assert await web.records() == [] and web.notices() == []

    run(scenario)


def test_a_post_without_a_valid_csrf_token_is_refused(pipeline: PipelineHarness) -> None:
    async def scenario() -> None:
        async with site(pipeline) as web:
            missing = await web.client.post("/subscribe", data=choices())
            assert missing.status == 403 and "Please send the form again" in await missing.text()
            forged = await web.post("/subscribe", choices(), token=f"{int(START) + 3600}.forged")
            assert forged.status == 403
            token_ = await web.form("/subscribe")
            web.client.session.cookie_jar.clear()  # the token is worth nothing without its cookie
            assert (await web.post("/subscribe", choices(), token=token_)).status == 403
            token_ = await web.form("/subscribe")
            web.clock.now += 5 * 3600  # a form left open too long
            assert (await web.post("/subscribe", choices(), token=token_)).status == 403
            assert await web.records() == [] and web.notices() == []

    run(scenario)


def test_subscribing_is_rate_limited_per_client_and_per_address(pipeline: PipelineHarness) -> None:
    async def scenario() -> None:
        async with site(pipeline) as web:
            for i in range(3):
                assert (await web.post("/subscribe", choices("same@example.org"))).status == 200, i
            limited = await web.post("/subscribe", choices("same@example.org"))
            assert limited.status == 429 and "Too many requests" in await limited.text()
            assert limited.headers["Retry-After"] == "1200"  # one more per 20 minutes
            assert (await web.post("/subscribe", choices("other@example.org"))).status == 200
            # Five valid forms from this client in ten minutes (the one limited by its address
            # too): the sixth waits for a token, whatever the address.
            client_limited = await web.post("/subscribe", choices("third@example.org"))
            assert client_limited.status == 429 and client_limited.headers["Retry-After"] == "120"
            assert len(web.notices()) == 4
            web.clock.now += 1200
            assert (await web.post("/subscribe", choices("same@example.org"))).status == 200
            assert len(web.notices()) == 5

    run(scenario)


# -- confirmation links ---------------------------------------------------------------------


def test_expired_altered_and_foreign_confirmation_links_are_refused(pipeline: PipelineHarness) -> None:
    async def scenario() -> None:
        async with site(pipeline) as web:
            assert (await web.post("/subscribe", choices("late@example.org"))).status == 200
            path = link(web.notice_to("late@example.org"), "confirm").split("?")[0]
            page = await web.client.get(path)
            match = CSRF.search(await page.text())
            assert match is not None
            altered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
            web.clock.now += 7 * 86400 + 1
            for method, target in (("GET", path), ("POST", path), ("GET", altered), ("POST", altered)):
                answer = await web.client.request(method, target, data={"csrf_token": match.group(1)})
                html = await answer.text()
                assert answer.status == 400, (method, target)
                assert "This confirmation link does not work" in html and 'href="/subscribe"' in html
            sid = subscriber_id_for("late@example.org")
            foreign = await web.client.get(f"/confirm/{token('preferences', sid, web.clock)}")
            assert foreign.status == 400
            french = await web.client.get(f"{path}?lang=fr")
            assert "Ce lien de confirmation ne fonctionne pas" in await french.text()
            # Nothing but the pending record.
            assert [s.confirmed for _, s in await web.records() if isinstance(s, Subscription)] == [False]

    run(scenario)


def test_a_subscription_erased_meanwhile_is_no_longer_pending(pipeline: PipelineHarness) -> None:
    async def scenario() -> None:
        async with site(pipeline) as web:
            nobody = token("confirm", "sub-nobody", web.clock, expires_in=timedelta(days=7))
            page = await web.client.get(f"/confirm/{nobody}")
            assert page.status == 410 and "There is nothing to confirm" in await page.text()

    run(scenario)


def test_confirming_after_unsubscribing_subscribes_again(pipeline: PipelineHarness) -> None:
    sid = subscriber_id_for("back@example.org")

    async def scenario() -> None:
        async with site(pipeline) as web:
            assert (await web.post("/subscribe", choices("back@example.org"))).status == 200
            path = link(web.notice_to("back@example.org"), "confirm")

            async def confirm() -> None:
                page = await web.client.get(path)
                match = CSRF.search(await page.text())
                assert match is not None
                web.clock.now += 60
                assert (await web.client.post(path, data={"csrf_token": match.group(1)})).status == 200

            await confirm()
            # Unsubscribe through the link of an alert, and wait for the view to read it.
            web.clock.now += 60
            gone = await web.client.post(f"/unsubscribe/{token('unsubscribe', sid, web.clock)}")
            assert gone.status == 200
            view = web.client.app[subscribers_view.SUBSCRIBERS]
            for _ in range(200):
                state = view.subscribers.get(sid)
                if state is not None and state.suppressed:
                    break
                await asyncio.sleep(0.05)
            await confirm()
            kinds = [type(s).__name__ + str(getattr(s, "confirmed", "")) for _, s in await web.records()]
            assert kinds == ["SubscriptionFalse", "SubscriptionTrue", "Suppression", "SubscriptionTrue"]
            state = view.subscribers.get(sid)
            assert state is not None and state.confirmed

    run(scenario)


# -- preferences ----------------------------------------------------------------------------


def test_the_preferences_page_shows_the_choices_and_saves_changes(pipeline: PipelineHarness) -> None:
    person = subscription(
        "pref@example.org", countries=["KH"], regions=["south-america"], interests=["wages"], brands=["H&M"]
    )
    pipeline.subscribe(person)

    async def scenario() -> None:
        async with site(pipeline) as web:
            path = f"/preferences/{token('preferences', person.subscriber_id, web.clock)}"
            page = await web.client.get(path + "?lang=es")
            html = await page.text()
            assert page.status == 200 and '<html lang="es">' in html and "<h1>Tus alertas</h1>" in html
            assert 'name="email"' not in html and "pref@example.org" in html
            assert 'value="KH" checked' in html and 'value="BD" checked' not in html
            assert 'value="south-america" checked' in html and 'value="wages" checked' in html
            assert 'name="brands" value="H&amp;M"' in html
            assert "/unsubscribe/" in html and "/my-data/" in html

            invalid = await web.post(path, choices(None, interests=[], brands=" , "))
            assert invalid.status == 400
            assert "Choose at least one issue" in near(await invalid.text(), "interests-error", 0)

            web.clock.now += 30
            saved = await web.post(
                path, choices(None, countries=["BD", "VN"], brands="Zara, zara ,Inditex", language="fr")
            )
            saved_html = await saved.text()
            assert saved.status == 200 and "Vos choix sont enregistrés." in saved_html
            assert '<html lang="fr">' in saved_html and 'value="VN" checked' in saved_html
            latest = [s for k, s in await web.records() if k == person.subscriber_id][-1]
            assert isinstance(latest, Subscription)
            assert (latest.email, latest.confirmed, latest.language) == ("pref@example.org", True, "fr")
            assert (latest.countries, latest.brands, latest.regions) == (
                ("BD", "VN"),
                ("Zara", "Inditex"),
                (),
            )
            assert latest.created_at.timestamp() == START + 30

            unknown = await web.client.get(f"/preferences/{token('preferences', 'sub-gone', web.clock)}")
            assert unknown.status == 404 and "We have no subscription for this link" in await unknown.text()
            assert (await web.client.get(path[:-2] + "xx")).status == 400
            assert (
                await web.client.get(f"/preferences/{token('unsubscribe', person.subscriber_id, web.clock)}")
            ).status == 400

    run(scenario)


def test_an_unsubscribed_person_is_told_so_and_saving_subscribes_them_again(
    pipeline: PipelineHarness,
) -> None:
    person = subscription("left@example.org", countries=["BD"], interests=["wages"])
    pipeline.subscribe(person)
    left = Suppression(
        subscriber_id=person.subscriber_id,
        reason=SuppressionReason.LINK_UNSUBSCRIBE,
        source="link",
        occurred_at=person.created_at.replace(year=person.created_at.year + 1),
    )
    pipeline.publish_raw(pipeline.names.subscriptions, person.subscriber_id, left.model_dump_json().encode())

    async def scenario() -> None:
        async with site(pipeline, Clock()) as web:
            web.clock.now = left.occurred_at.timestamp() + 60
            path = f"/preferences/{token('preferences', person.subscriber_id, web.clock)}"
            html = await (await web.client.get(path)).text()
            assert "You are unsubscribed at the moment" in html
            assert (await web.post(path, choices(None))).status == 200
            latest = [s for _, s in await web.records()][-1]
            assert isinstance(latest, Subscription) and not left.overrides(latest)

    run(scenario)


# -- my data --------------------------------------------------------------------------------


def test_my_data_shows_what_is_stored_and_erasing_publishes_a_tombstone(pipeline: PipelineHarness) -> None:
    person = subscription(
        "mine@example.org", name="Sokha", countries=["KH"], interests=["wages"], language="fr"
    )
    pipeline.subscribe(person)

    async def scenario() -> None:
        async with site(pipeline) as web:
            path = f"/my-data/{token('preferences', person.subscriber_id, web.clock)}"
            page = await web.client.get(path)
            html = await page.text()
            assert page.status == 200 and "<h1>Your data</h1>" in html
            for shown in ("mine@example.org", "Sokha", "Cambodia", "Wages", "Français", person.subscriber_id):
                assert shown in html, shown
            assert "You get alerts." in html and "Erase my data" in html

            unticked = await web.post(path, [])
            unticked_html = await unticked.text()
            assert unticked.status == 400
            assert "Tick the box to confirm" in near(unticked_html, "erase-error", 0)
            assert 'id="erase" name="erase" value="yes" required aria-invalid="true"' in unticked_html
            assert [k for k, _ in await web.records()] == [person.subscriber_id]

            erased = await web.post(path, [("erase", "yes")])
            assert erased.status == 200 and "Your data is erased" in await erased.text()
            assert await web.records() == [(person.subscriber_id, person), (person.subscriber_id, None)]
            after = await web.client.get(path + "?lang=es")
            assert (
                after.status == 404
                and "No tenemos ninguna suscripción para este enlace" in await after.text()
            )

    run(scenario)


def test_my_data_says_why_a_person_gets_nothing(pipeline: PipelineHarness) -> None:
    person = subscription("bounced@example.org", countries=["KH"], interests=["wages"])
    pipeline.subscribe(person)
    bounce = Suppression(
        subscriber_id=person.subscriber_id,
        reason=SuppressionReason.BOUNCE,
        source="sendgrid",
        occurred_at=person.created_at.replace(year=person.created_at.year + 1),
    )
    pipeline.publish_raw(
        pipeline.names.subscriptions, person.subscriber_id, bounce.model_dump_json().encode()
    )

    async def scenario() -> None:
        async with site(pipeline) as web:
            html = await (
                await web.client.get(
                    f"/my-data/{token('preferences', person.subscriber_id, web.clock)}?lang=fr"
                )
            ).text()
            assert '<html lang="fr">' in html and "<h1>Vos données</h1>" in html
            assert "votre serveur de messagerie a refusé nos e-mails" in html

    run(scenario)


# -- time zone and digests -------------------------------------------------------------------


def test_the_time_zone_and_a_digest_are_chosen_on_subscribing_changed_and_shown(
    pipeline: PipelineHarness,
) -> None:
    async def scenario() -> None:
        async with site(pipeline) as web:
            form = await (await web.client.get("/subscribe?lang=fr")).text()
            assert '<label class="block" for="time_zone">Votre fuseau horaire (facultatif)</label>' in form
            assert '<option value="" selected>Celui de mon pays</option>' in form
            assert "Un e-mail par jour (un récapitulatif, le matin)" in form

            wrong = await web.post(
                "/subscribe", choices("zone@example.org", language="es", time_zone="Mars/Olympus_Mons")
            )
            wrong_html = await wrong.text()
            assert wrong.status == 400 and '<html lang="es">' in wrong_html
            assert "Elige tu zona horaria de la lista, o «La de mi país»." in near(
                wrong_html, "time_zone-error", 0
            )
            assert await web.records() == []

            chosen = choices("zone@example.org", time_zone="America/New_York", frequency="daily")
            assert (await web.post("/subscribe", chosen)).status == 200
            ((sid, pending),) = await web.records()
            assert isinstance(pending, Subscription)
            assert (pending.time_zone, pending.frequency) == ("America/New_York", "daily")

            path = f"/preferences/{token('preferences', sid, web.clock)}"
            html = await (await web.client.get(path)).text()
            assert '<option value="America/New_York" selected>New York</option>' in html
            assert 'name="frequency" value="daily" checked' in html
            web.clock.now += 30
            # Back to the home country's zone (the Netherlands has one), and a weekly digest.
            saved = await web.post(path, choices(None, home_country="NL", time_zone="", frequency="weekly"))
            saved_html = await saved.text()
            assert saved.status == 200 and "Your choices are saved." in saved_html
            assert '<option value="" selected>From my home country (Europe/Amsterdam)</option>' in saved_html
            assert 'name="frequency" value="weekly" checked' in saved_html
            latest = [s for k, s in await web.records() if k == sid][-1]
            assert isinstance(latest, Subscription)
            assert (latest.time_zone, latest.home_country, latest.frequency) == (None, "NL", "weekly")

            mine = await (await web.client.get(f"/my-data/{token('preferences', sid, web.clock)}")).text()
            assert "<dt>Time zone</dt>" in mine
            assert "Not given: we use Europe/Amsterdam, the time zone of where you live" in mine
            assert "One email a week (a digest, on Monday morning)" in mine

    run(scenario)


def test_the_weekly_digest_names_the_deployments_day(pipeline: PipelineHarness) -> None:
    person = subscription("friday@example.org", countries=["KH"], interests=["wages"], frequency="weekly")
    pipeline.subscribe(person)

    async def scenario() -> None:
        async with site(pipeline, digest_weekday="friday") as web:
            form = await (await web.client.get("/subscribe?lang=es")).text()
            assert "Un correo a la semana (un resumen, el viernes por la mañana)" in form
            preferences = f"/preferences/{token('preferences', person.subscriber_id, web.clock)}"
            html = await (await web.client.get(preferences)).text()
            assert 'value="weekly" checked> One email a week (a digest, on Friday morning)' in html
            mine = await (
                await web.client.get(f"/my-data/{token('preferences', person.subscriber_id, web.clock)}")
            ).text()
            assert "One email a week (a digest, on Friday morning)" in mine

    run(scenario)


def test_my_data_shows_the_time_zone_given_in_the_page_language(pipeline: PipelineHarness) -> None:
    person = subscription(
        "tz@example.org",
        countries=["KH"],
        interests=["wages"],
        time_zone="Asia/Phnom_Penh",
        frequency="daily",
    )
    pipeline.subscribe(person)

    async def scenario() -> None:
        async with site(pipeline) as web:
            path = f"/my-data/{token('preferences', person.subscriber_id, web.clock)}?lang=fr"
            html = await (await web.client.get(path)).text()
            assert "<dt>Fuseau horaire</dt>\n<dd>Asia/Phnom_Penh</dd>" in html
            assert "Un e-mail par jour (un récapitulatif, le matin)" in html

    run(scenario)


# -- when the web process cannot serve ------------------------------------------------------


def test_without_the_secret_key_every_page_answers_503(pipeline: PipelineHarness) -> None:
    async def scenario() -> None:
        async with site(pipeline, public_url=None, secret_key=None) as web:
            for method, path in (
                ("GET", "/subscribe"),
                ("POST", "/subscribe"),
                ("GET", "/confirm/1.x.0.y"),
                ("POST", "/confirm/1.x.0.y"),
                ("GET", "/preferences/1.x.0.y"),
                ("POST", "/preferences/1.x.0.y"),
                ("GET", "/my-data/1.x.0.y"),
                ("POST", "/my-data/1.x.0.y"),
            ):
                answer = await web.client.request(method, path, data=choices() if method == "POST" else None)
                assert answer.status == 503, (method, path)
                assert "Please try again" in await answer.text()

    run(scenario)


def test_when_kafka_does_not_acknowledge_nothing_changes_and_the_page_says_try_again(
    pipeline: PipelineHarness,
) -> None:
    person = subscription("kept@example.org", countries=["BD"], interests=["wages"])
    pipeline.subscribe(person)
    # The view reads the real topics; records go to a broker that is not there.
    nowhere = KafkaPublisher([f"127.0.0.1:{free_port()}"], timeout=2)

    async def scenario() -> None:
        async with site(pipeline, publisher=nowhere) as web:
            refused = await web.post("/subscribe", choices("new@example.org"))
            assert refused.status == 503 and "nothing was changed" in await refused.text()
            assert web.notices() == []  # no link to confirm what was not recorded
            path = f"/preferences/{token('preferences', person.subscriber_id, web.clock)}"
            assert (await web.post(path, choices(None, countries=["KH"]))).status == 503
            erase = f"/my-data/{token('preferences', person.subscriber_id, web.clock)}"
            assert (await web.post(erase, [("erase", "yes")])).status == 503
            assert await web.records() == [(person.subscriber_id, person)]
            html = await (await web.client.get(path)).text()
            assert 'value="BD" checked' in html  # the view still has the stored choices

    run(scenario)


def test_a_notice_that_cannot_be_sent_is_logged_and_the_page_is_the_same(
    pipeline: PipelineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = pipeline.tmp_path / "not-a-directory"
    blocked.write_text("a file where the outbox should be")
    monkeypatch.setenv("MOBILISE_OUTBOX_DIR", str(blocked))

    async def scenario() -> None:
        async with site(pipeline) as web:
            with capture_logs() as logs:
                answer = await web.post("/subscribe", choices("unlucky@example.org"))
            assert answer.status == 200 and "Check your inbox" in await answer.text()
            (failure,) = [e for e in logs if e["event"] == "web.notice_not_sent"]
            assert failure["subscriber_id"] == subscriber_id_for("unlucky@example.org")
            assert failure["notice"] == "confirm" and failure["log_level"] == "error"
            assert "unlucky@example.org" not in json.dumps(logs, default=str)
            # The pending subscription is recorded: submitting again sends a new link.
            assert [k for k, _ in await web.records()] == [subscriber_id_for("unlucky@example.org")]

    run(scenario)


def test_pages_answer_503_until_the_subscribers_view_has_caught_up(
    pipeline: PipelineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscribers_view, "VIEW_WAIT_SECONDS", 0.5)

    async def scenario() -> None:
        # Topics that do not exist: the view waits for them, and never catches up.
        async with site(pipeline, topic_prefix="missing-") as web:
            assert (await web.post("/subscribe", choices())).status == 503
            page = await web.client.get(f"/preferences/{token('preferences', 'sub-x', web.clock)}")
            assert page.status == 503 and "Please try again" in await page.text()
        assert web.notices() == []

    run(scenario)


# -- end to end, in a browser ---------------------------------------------------------------


def _indexed(pipeline: PipelineHarness, subscriber_id: str) -> list[dict[str, Any]]:
    return [e for e in pipeline.events("subscription.indexed") if e["subscriber_id"] == subscriber_id]


def test_a_person_subscribes_confirms_gets_alerts_changes_them_and_unsubscribes_in_a_browser(
    pipeline: PipelineHarness,
) -> None:
    """The whole journey in chromium, with a screenshot of each page.

    The screenshots go to ``MOBILISE_SCREENSHOTS`` when it is set (``docs/screenshots``
    holds the ones the README shows), to the test's directory otherwise.
    """
    from playwright.sync_api import Page, expect, sync_playwright

    shots = Path(os.environ.get("MOBILISE_SCREENSHOTS") or pipeline.tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)

    def shot(page: Page, name: str) -> None:
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    settings = load_settings(
        kafka_bootstrap_servers=pipeline.broker.bootstrap,
        topic_prefix=pipeline.names.prefix,
        partitions=pipeline.partitions,
        public_url=public_url,
        secret_key=SECRET,
        sink="outbox",
    )
    pipeline.start_worker(MOBILISE_PUBLIC_URL=public_url, MOBILISE_SECRET_KEY=SECRET)
    address = "browser@example.org"
    sid = subscriber_id_for(address)
    with BackgroundWebServer(settings, port=port), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(locale="en-GB", viewport={"width": 900, "height": 900})
            page.goto(f"{public_url}/subscribe")
            shot(page, "subscribe")
            page.get_by_label("Email address").fill(address)
            page.get_by_label("Your name (optional)").fill("Browser Person")
            page.get_by_text("Countries of Southern Asia").click()
            page.get_by_label("Bangladesh").check()
            page.get_by_label("Union busting").check()
            page.get_by_role("button", name="Subscribe").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
            shot(page, "check-your-inbox")

            pipeline.wait_until("the confirmation email", lambda: any(pipeline.outbox.glob("notice-*.eml")))
            (notice_file,) = pipeline.outbox.glob("notice-*.eml")
            notice = BytesParser(policy=policy.default).parsebytes(notice_file.read_bytes())
            page.goto(public_url + link(notice, "confirm"))
            shot(page, "confirm")
            page.get_by_role("button", name="Confirm my subscription").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("You are subscribed")
            shot(page, "subscribed")
            pipeline.wait_ready()
            pipeline.wait_until(
                "the confirmed subscription", lambda: any(e["confirmed"] for e in _indexed(pipeline, sid))
            )

            first = case_update(status="urgent_action")
            pipeline.publish(first)
            assert pipeline.wait_processed(first.event_id) == 1
            (alert,) = pipeline.emails_for(first.event_id)
            assert recipients([alert]) == [address]
            text = alert.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
            html = alert.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
            assert "Manage your alerts" in text and ">Manage your alerts</a>" in html
            preferences = link(alert, "preferences")

            page.goto(public_url + preferences)
            expect(page.get_by_role("heading", level=1)).to_have_text("Your alerts")
            expect(page.get_by_label("Union busting")).to_be_checked()
            shot(page, "preferences")
            page.get_by_label("Union busting").uncheck()
            page.get_by_label("Wages", exact=True).check()
            page.get_by_role("button", name="Save my choices").click()
            expect(page.get_by_role("status")).to_have_text("Your choices are saved.")
            shot(page, "preferences-saved")
            pipeline.wait_until("the changed subscription", lambda: len(_indexed(pipeline, sid)) >= 3)

            second = case_update(status="escalated", occurred_at=now())
            pipeline.publish(second)
            assert pipeline.wait_processed(second.event_id) == 0
            assert pipeline.emails_for(second.event_id) == []

            page.goto(public_url + preferences)
            page.get_by_role("link", name="See or erase my data").click()
            expect(page.get_by_text("browser@example.org").first).to_be_visible()
            shot(page, "my-data")

            # The new choices match this update; only the unsubscribe keeps it away.
            page.goto(public_url + link(alert, "unsubscribe"))
            shot(page, "unsubscribe")
            page.get_by_role("button", name="Unsubscribe").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("You are unsubscribed")
            shot(page, "unsubscribed")
            pipeline.wait_until(
                "the unsubscribe to reach the shard",
                lambda: any(e["subscriber_id"] == sid for e in pipeline.events("subscription.suppressed")),
            )
            third = case_update(status="escalated", issues=["wages"], occurred_at=now())
            pipeline.publish(third)
            assert pipeline.wait_processed(third.event_id) == 0
            assert pipeline.emails_for(third.event_id) == []
        finally:
            browser.close()
    assert json.dumps(pipeline.events()).count(address) == 0  # workers log ids, not addresses
