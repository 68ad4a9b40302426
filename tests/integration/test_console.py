"""The coordinator console as a browser without JavaScript uses it, over real HTTP against the real
broker: sign in with a token, publish through the form (messages next to the fields), see the case."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp.test_utils import TestClient, TestServer

from mobilise.broker import EmbeddedBroker
from mobilise.settings import load_settings
from mobilise.web import BackgroundWebServer, create_app
from schemas import ApiToken, AuditRecord, CaseUpdate, DeliveryEvent, TokenRole
from streams.admin import publish

from .coordinators import add_token, read_all, until, web_settings
from .harness import PipelineHarness

pytestmark = pytest.mark.integration


class Page(HTMLParser):
    """The elements of a page: each start tag's attributes, and the text inside elements with an id."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self._open: list[tuple[str, str | None]] = []
        self.texts: dict[str, str] = {}
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attributes))
        if tag not in {"input", "meta", "br", "link"}:
            self._open.append((tag, attributes.get("id")))
            if attributes.get("id"):
                self.texts.setdefault(attributes["id"], "")

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            name, _ = self._open.pop()
            if name == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open:
            if element_id:
                self.texts[element_id] += data

    def find(self, tag: str, **attrs: str) -> dict[str, str]:
        for name, attributes in self.tags:
            if name == tag and all(attributes.get(k) == v for k, v in attrs.items()):
                return attributes
        raise AssertionError(f"no <{tag} {attrs}> on the page")

    def csrf(self) -> str:
        return self.find("input", name="csrf_token")["value"]


class Console:
    def __init__(self, pipeline: PipelineHarness) -> None:
        self.pipeline = pipeline
        self.coordinator = add_token(pipeline, "coordinator-asia", TokenRole.COORDINATOR)
        self.server = BackgroundWebServer(web_settings(pipeline))
        self.browser = requests.Session()

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.browser.get(self.server.url + path, timeout=60, allow_redirects=False, **kwargs)

    def post(self, path: str, data: Any, **kwargs: Any) -> requests.Response:
        return self.browser.post(
            self.server.url + path, data=data, timeout=60, allow_redirects=False, **kwargs
        )

    def sign_in(self, token: str) -> requests.Response:
        page = Page(self.get("/console").text)
        return self.post("/console/sign-in", {"csrf_token": page.csrf(), "token": token})


@pytest.fixture
def console(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Console]:
    running = Console(PipelineHarness(broker, tmp_path))
    running.server.start()
    try:
        auth = {"Authorization": f"Bearer {running.coordinator.token}"}
        # The console shares the API's views: the API says when they have read their topics.
        until(
            "the console to have read its topics",
            lambda: (
                requests.get(running.server.url + "/api/v1/cases", headers=auth, timeout=60).status_code
                == 200
            ),
        )
        yield running
    finally:
        running.server.stop()


def test_sign_in_sets_a_strict_http_only_cookie_and_refuses_bad_tokens(console: Console) -> None:
    first = console.get("/console")
    assert first.status_code == 200 and first.headers["Content-Type"].startswith("text/html")
    page = Page(first.text)
    assert page.find("html")["lang"] == "en"
    assert page.find("label", **{"for": "token"}) and page.find("input", id="token")["type"] == "password"
    assert page.find("meta", name="viewport")
    assert "frame-ancestors 'none'" in first.headers["Content-Security-Policy"]

    no_csrf = console.post("/console/sign-in", {"token": console.coordinator.token})
    assert no_csrf.status_code == 403 and "mobilise_console" not in no_csrf.cookies

    wrong = console.sign_in(console.coordinator.token[:-3] + "xyz")
    assert wrong.status_code == 401
    page = Page(wrong.text)
    assert "not a valid API token" in page.texts["token-error"]
    field = page.find("input", id="token")
    assert field["aria-invalid"] == "true" and "token-error" in field["aria-describedby"]

    assert console.get("/console/cases").headers["Location"] == "/console"  # not signed in yet
    signed = console.sign_in(console.coordinator.token)
    assert signed.status_code == 303 and signed.headers["Location"] == "/console/cases"
    cookie = signed.headers["Set-Cookie"]
    assert cookie.startswith("mobilise_console=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/console" in cookie and "Secure" not in cookie  # http on loopback
    cases = console.get("/console/cases")
    assert cases.status_code == 200 and "Signed in as coordinator-asia" in cases.text

    page = Page(cases.text)
    out = console.post("/console/sign-out", {"csrf_token": page.csrf()})
    assert out.status_code == 303 and out.headers["Location"] == "/console"
    assert console.get("/console/cases").headers["Location"] == "/console"


def publish_form(**overrides: str | list[str]) -> dict[str, Any]:
    form: dict[str, Any] = {
        "case_id": "kh-2026-7",
        "status": "escalated",
        "country": "KH",
        "title_en": "Wages unpaid for three months",
        "title_fr": "Salaires impayés depuis trois mois",
        "summary_en": "The owner left the country.",
        "summary_fr": "Le propriétaire a quitté le pays.",
        "brands": "Brand One\nBrand Two",
        "issues": ["wages", "severance"],
        "factory_name": "Phnom Penh Garments",
        "factory_city": "Phnom Penh",
        "action_kind": "email_brand",
        "action_instructions_en": "Write to the brand's CEO.",
        "action_target_name": "Brand One CEO",
        "action_target_email": "ceo@brand-one.example",
        "action_deadline": "2026-04-01T12:00",
    }
    form.update(overrides)
    return form


def test_publishing_through_the_form_shows_messages_next_to_fields_then_the_case(console: Console) -> None:
    assert console.sign_in(console.coordinator.token).status_code == 303
    page = Page(console.get("/console/publish").text)
    hidden = {
        name: page.find("input", name=name)["value"]
        for name in ("csrf_token", "idempotency_key", "opened_at")
    }
    assert page.find("input", id="title_fr")["lang"] == "fr"
    assert page.find("label", **{"for": "country"}) and page.find("option", value="KH")

    bad = console.post(
        "/console/publish",
        {
            **hidden,
            **publish_form(
                country="", action_target_url="ftp://petition", issues=[], title_en="", title_fr=""
            ),
        },
    )
    assert bad.status_code == 422
    page = Page(bad.text)
    assert "Choose the country" in page.texts["country-error"]
    assert "ftp://petition" in page.texts["action_target_url-error"]
    assert "Tick at least one issue" in page.texts["issues-error"]
    assert "at least one language" in page.texts["title-error"]
    for name, tag in (("country", "select"), ("action_target_url", "input")):
        field = page.find(tag, id=name)
        assert field["aria-invalid"] == "true" and f"{name}-error" in field["aria-describedby"]
    assert page.find("input", id="factory_name")["value"] == "Phnom Penh Garments"  # what was typed stays
    assert "Nothing was published" in page.texts["error-summary-title"]
    assert read_all(console.pipeline, console.pipeline.names.case_updates) == []

    good = console.post("/console/publish", {**hidden, **publish_form()})
    assert good.status_code == 303, good.text
    location = good.headers["Location"]
    assert location.startswith("/console/cases/kh-2026-7?published=")
    event_id = location.split("published=")[1]
    again = console.post("/console/publish", {**hidden, **publish_form()})  # the same form sent twice
    assert again.status_code == 303 and again.headers["Location"] == location

    [record] = read_all(console.pipeline, console.pipeline.names.case_updates)
    update = CaseUpdate.model_validate_json(record.value)
    assert (update.event_id, update.published_by, update.country) == (event_id, "coordinator-asia", "KH")
    assert update.brands == ("Brand One", "Brand Two") and update.issues == ("wages", "severance")
    assert update.action_call is not None and update.action_call.deadline == datetime(
        2026, 4, 1, 12, tzinfo=UTC
    )
    assert update.title["fr"] == "Salaires impayés depuis trois mois"
    [audit] = [
        AuditRecord.model_validate_json(r.value)
        for r in read_all(console.pipeline, console.pipeline.names.audit)
    ]
    assert (audit.via, audit.event_id, audit.actor_name) == ("console", event_id, "coordinator-asia")

    changed = console.post("/console/publish", {**hidden, **publish_form(status="closed")})
    assert changed.status_code == 422 and "already been used" in changed.text

    # The case page: the timeline and the counts, once deliveries are recorded.
    events = [
        DeliveryEvent.model_validate_json(
            json.dumps(
                {
                    "alert_id": alert,
                    "event_id": event_id,
                    "case_id": "kh-2026-7",
                    "subscriber_id": f"s-{alert}",
                    "sink": "outbox",
                    "outcome": outcome,
                    "at": "2026-03-01T09:00:00Z",
                }
            )
        )
        for alert, outcome in (("a1", "accepted"), ("a2", "accepted"), ("a3", "dead_lettered"))
    ]
    publish(
        [console.pipeline.broker.bootstrap],
        console.pipeline.names.deliveries,
        [(e.subscriber_id, e.model_dump_json().encode()) for e in events],
    )

    def counted() -> bool:
        page = console.get(location)
        return page.status_code == 200 and "<dt>Sent</dt><dd>2</dd>" in page.text

    until("the deliveries to be counted on the case page", counted)
    case = console.get(location)
    page = Page(case.text)
    assert f"Published: event {event_id}" in case.text
    assert "<dt>Matched</dt><dd>3</dd>" in case.text and "<dt>Failed</dt><dd>1</dd>" in case.text
    assert "Escalated" in case.text and "by coordinator-asia" in case.text
    assert page.find("span", lang="fr")
    listing = console.get("/console/cases")
    assert 'href="/console/cases/kh-2026-7"' in listing.text

    prefilled = Page(console.get("/console/publish?case_id=kh-2026-7").text)
    assert prefilled.find("input", id="case_id")["value"] == "kh-2026-7"
    assert prefilled.find("option", value="KH").get("selected") is not None
    assert prefilled.find("input", id="issue-wages").get("checked") is not None
    assert prefilled.find("input", name="idempotency_key")["value"] != hidden["idempotency_key"]
    assert console.get("/console/cases/no-such-case").status_code == 404


def test_the_cookies_are_secure_when_the_public_url_is_https(broker: EmbeddedBroker, tmp_path: Path) -> None:
    pipeline = PipelineHarness(broker, tmp_path)
    settings = load_settings(
        kafka_bootstrap_servers=broker.bootstrap,
        topic_prefix=pipeline.names.prefix,
        public_url="https://alerts.example.org",
        secret_key="console-test-secret-key-0123456789abcdef",
    )

    async def scenario() -> str:
        async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as client:
            response = await client.get("/console")
            return response.headers["Set-Cookie"]

    cookie = asyncio.run(scenario())
    assert cookie.startswith("mobilise_console_csrf=") and "Secure" in cookie and "SameSite=Strict" in cookie


def test_a_revoked_token_ends_its_console_session(console: Console) -> None:
    assert console.sign_in(console.coordinator.token).status_code == 303
    assert console.get("/console/cases").status_code == 200
    record: ApiToken = console.coordinator.record
    revoked = record.model_copy(update={"revoked_at": datetime.now(UTC)})
    publish(
        [console.pipeline.broker.bootstrap],
        console.pipeline.names.api_tokens,
        [(record.token_id, revoked.model_dump_json().encode())],
    )
    answers: list[requests.Response] = []
    until(
        "the revocation to be read",
        lambda: answers.append(console.get("/console/cases")) or answers[-1].status_code == 303,
    )
    assert answers[-1].headers["Location"] == "/console?expired=1"
    assert "mobilise_console" not in console.browser.cookies  # the session cookie is cleared
    assert "session has ended" in console.get("/console?expired=1").text
    assert console.sign_in(console.coordinator.token).status_code == 401
