"""The action call in the alert email: as each person gets it, with its "I did this" link.

Also the follow-up emails that thank the people who acted, and the same emails through
the outbox and SendGrid.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from connectors import rendering
from connectors.outbox import OutboxConfig, OutboxSink
from connectors.rendering import EmailIdentity, action_variant, fill, render_alert
from connectors.sendgrid_mail import SendGridSink, plan_requests
from mobilise.links import InvalidLink, LinkSigner, PublicLinks
from schemas import (
    Alert,
    AlertBatch,
    CaseUpdate,
    MatchReason,
    Recipient,
    action_id_for,
    alert_id_for,
    batch_id_for,
    known_countries,
)
from tests.fakes.sendgrid_server import FakeSendGrid, validate_mail_send

from .test_sendgrid_sink import FakeTime, with_sink

SECRET = SecretStr("a-test-key-that-is-long-enough-to-sign-links")
PUBLIC_URL = "https://alerts.example.net"
IDENTITY = EmailIdentity(from_email="Network <alerts@example.net>", unsubscribe_email="stop@example.net")
LINKED = IDENTITY.model_copy(update={"links": PublicLinks(PUBLIC_URL, SECRET)})
INTERNAL = ("Hidden Person", "do-not-send-this")

CALL: dict[str, Any] = {
    "kind": "email_brand",
    "instructions": {"en": "Email the CEO.", "fr": "Écrivez au PDG.", "es": "Escribe al CEO."},
    "target": {"name": "H&M Group", "email": "ceo@example.com", "url": "https://example.com/hm"},
    "suggested_message": {
        "en": "Reinstate the twelve union leaders <now>.\nRespect freedom of association.",
        "fr": "Réintégrez les douze dirigeants syndicaux.",
        "es": "Readmitan a los doce dirigentes sindicales.",
    },
    "goal": {"count": 5000, "label": {"en": "emails to H&M", "fr": "courriels à H&M"}},
    "variants": [
        {
            "countries": ["NL"],
            "kind": "protest_at_store",
            "instructions": {"en": "Protest at the Amsterdam store on Saturday."},
            "target": {"name": "H&M Kalverstraat", "address": "Kalverstraat 125, Amsterdam"},
            "deadline": "2026-12-05T11:00:00+01:00",
        },
        {"regions": ["northern-america"], "kind": "call", "instructions": {"en": "Call the US office."}},
    ],
}


def make_case(**changes: Any) -> CaseUpdate:
    return CaseUpdate.model_validate_json(
        json.dumps(
            {
                "case_id": "bd-1",
                "status": "urgent_action",
                "title": {"en": "Fired for organising", "fr": "Licenciés", "es": "Despedidos"},
                "summary": {"en": "Twelve leaders dismissed.", "fr": "Douze dirigeants renvoyés."},
                "country": "BD",
                "brands": ["H&M"],
                "issues": ["union_busting"],
                "occurred_at": "2026-01-01T00:00:00Z",
                "published_by": "p",
                "internal": {"workers_at_risk": ["Hidden Person"], "note": "do-not-send-this"},
                "action_call": CALL,
                **changes,
            }
        )
    )


def make_batch(
    case: CaseUpdate, homes: dict[str, str | None], language: str = "en", *, follow_up: bool = False
) -> list[Alert]:
    """One alert batch of ``case`` for people living where ``homes`` says, as the topic carries it."""
    recipients = tuple(
        Recipient(
            alert_id=alert_id_for(case.event_id, subscriber),
            subscriber_id=subscriber,
            email=f"{subscriber}@example.org",
            name=subscriber.title(),
            reason=MatchReason(country="BD"),
            home_country=home,
        )
        for subscriber, home in homes.items()
    )
    batch = AlertBatch(
        batch_id=batch_id_for(case.event_id, 0, language, 0),
        event_id=case.event_id,
        language=language,
        case=case.public(),
        follow_up=follow_up,
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
        recipients=recipients,
    )
    return batch.alerts()


def by_subscriber(alerts: list[Alert]) -> dict[str, Alert]:
    return {alert.subscriber_id: alert for alert in alerts}


def acted_link(text: str) -> str:
    (url,) = [word for word in text.split() if "/acted/" in word]
    return url


# -- the call as each person gets it ---------------------------------------------------------


def test_each_person_of_one_batch_sees_the_call_for_where_they_live(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered: list[str | None] = []
    real = rendering.render_shared

    def counting(*args: Any, **kwargs: Any) -> rendering.SharedEmail:
        rendered.append(kwargs.get("home_country"))
        return real(*args, **kwargs)

    monkeypatch.setattr(rendering, "render_shared", counting)
    monkeypatch.setattr(rendering, "_shared_cache", {})
    homes = {"noor": "NL", "daan": "NL", "rahima": "BD", "anna": "DE", "sam": None, "lee": "CA"}
    alerts = by_subscriber(make_batch(make_case(), homes))
    emails = {subscriber: render_alert(alert, IDENTITY) for subscriber, alert in alerts.items()}

    for dutch in ("noor", "daan"):
        text, html = emails[dutch].text, emails[dutch].html
        assert "ACTION: Protest at the store — H&M Kalverstraat" in text
        assert "Protest at the Amsterdam store on Saturday." in text
        assert "Address: Kalverstraat 125, Amsterdam" in text
        assert "Deadline: 2026-12-05 10:00 UTC" in text
        assert "Email the CEO." not in text and "ceo@example.com" not in text
        assert "Act now: Protest at the store — H&amp;M Kalverstraat" in html
    for elsewhere in ("rahima", "anna", "sam"):  # no variant for them: the call itself
        text, html = emails[elsewhere].text, emails[elsewhere].html
        assert "ACTION: Email the brand — H&M Group" in text and "Email the CEO." in text
        assert "Write to: ceo@example.com" in text and "Link: https://example.com/hm" in text
        assert '<a href="mailto:ceo@example.com">ceo@example.com</a>' in html
        assert "Kalverstraat" not in text and "Deadline" not in text
    assert "ACTION: Call — H&M Group" in emails["lee"].text  # by region: Northern America
    assert "Call the US office." in emails["lee"].text

    # Rendered once per variant, not per person nor per country.
    assert sorted(rendered, key=str) == ["BD", "CA", "NL"]
    assert {action_variant(alert) for alert in alerts.values()} == {0, 1, None}


def test_the_variant_of_a_person_is_the_one_for_place_gives() -> None:
    call = make_case().action_call
    assert call is not None
    representative: dict[int | None, str | None] = {None: None}
    for country in sorted(known_countries()):
        alert = make_batch(make_case(), {"x": country})[0]
        index = action_variant(alert)
        expected = call.for_place(representative.setdefault(index, country))
        assert call.for_place(country) == expected, country
    assert set(representative) == {None, 0, 1}
    # An unknown code (a validated subscription cannot hold one) gets the call itself.
    stranger = make_batch(make_case(), {"x": None})[0].model_copy(update={"home_country": "XX"})
    assert action_variant(stranger) is None
    assert "ACTION: Email the brand" in render_alert(stranger, IDENTITY).text


@pytest.mark.parametrize(
    ("language", "lines"),
    [
        (
            "en",
            ("Suggested message (copy it as it is):", "Goal: 5,000 emails to H&M"),
        ),
        (
            "fr",
            ("Message proposé (à copier tel quel)\u00a0:", "Objectif\u00a0: 5\u202f000 courriels à H&M"),
        ),
        ("es", ("Mensaje sugerido (cópialo tal cual):", "Objetivo: 5000 emails to H&M")),
    ],
)
def test_the_suggested_message_is_set_apart_and_the_goal_shown(language: str, lines: tuple[str, ...]) -> None:
    alert = make_batch(make_case(), {"rahima": "BD"}, language)[0]
    email = render_alert(alert, IDENTITY)
    message = CALL["suggested_message"][language]
    for line in lines:
        assert line in email.text
    # Between two rules of its own, line for line, so that it copies cleanly.
    rule = "-" * 60
    assert f"\n{rule}\n{message}\n{rule}\n" in email.text
    escaped = message.replace("<", "&lt;").replace(">", "&gt;")
    assert f'margin: 0 0 1em 0;">{escaped}</pre>' in email.html


def test_a_goal_without_a_label_counts_actions_and_a_call_without_extras_shows_none() -> None:
    bare = {key: CALL[key] for key in ("kind", "instructions", "target")}
    email = render_alert(make_batch(make_case(action_call=bare), {"s": None})[0], IDENTITY)
    assert "Suggested message" not in email.text and "Goal" not in email.text and "<pre" not in email.html
    counted = {**bare, "goal": {"count": 12000}}
    for language, line in (("en", "Goal: 12,000 actions"), ("es", "Objetivo: 12\u202f000 acciones")):
        alert = make_batch(make_case(action_call=counted), {"s": None}, language)[0]
        assert line in render_alert(alert, IDENTITY).text


# -- the "I did this" link ------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "fr", "es"])
def test_every_email_with_a_call_has_the_persons_signed_i_did_this_link(language: str) -> None:
    case = make_case()
    alerts = by_subscriber(make_batch(case, {"noor": "NL", "rahima": "BD"}, language))
    action_id = action_id_for(case.case_id, case.action_call)  # type: ignore[arg-type]  # the case has one
    signer = LinkSigner(SECRET)
    for subscriber, alert in alerts.items():
        email = render_alert(alert, LINKED)
        url = acted_link(email.text)
        parts = urlsplit(url)
        _, page, in_path, token = parts.path.split("/")
        assert (f"{parts.scheme}://{parts.netloc}", page, in_path) == (PUBLIC_URL, "acted", action_id)
        assert parse_qs(parts.query) == {"event": [case.event_id], "lang": [language]}
        # Signed for "acted" and bound to this action, for this person only.
        assert signer.verify(token, "acted", scope=action_id) == subscriber
        for wrong in ({"scope": "another-action"}, {}):
            with pytest.raises(InvalidLink):
                signer.verify(token, "acted", **wrong)
        with pytest.raises(InvalidLink):
            signer.verify(token, "unsubscribe")
        assert url == LINKED.links.acted_url(subscriber, action_id, case.event_id, language)  # type: ignore[union-attr]
        assert f'<a href="{url.replace("&", "&amp;")}"' in email.html
    # Each person's own link; the variant a person got does not change the action it counts for.
    links = {acted_link(render_alert(alert, LINKED).text) for alert in alerts.values()}
    assert len(links) == 2 and all(f"/acted/{action_id}/" in link for link in links)


def test_the_acted_url_has_the_documented_shape() -> None:
    links = PublicLinks(PUBLIC_URL + "/", SECRET)
    url = links.acted_url("sub-1", "hm-ceo-letter", "evt-1", "fr")
    token = links.signer.sign("acted", "sub-1", scope="hm-ceo-letter")
    assert url == f"{PUBLIC_URL}/acted/hm-ceo-letter/{token}?event=evt-1&lang=fr"
    assert token.split(".")[2] == "0"  # never expires


def test_no_i_did_this_link_without_a_public_url_or_without_a_call() -> None:
    alert = make_batch(make_case(), {"rahima": "BD"})[0]
    plain = render_alert(alert, IDENTITY)
    assert "/acted/" not in plain.text + plain.html and "Done it?" not in plain.text
    assert "ACTION: Email the brand" in plain.text  # the call is still there
    assert not any("acted" in token for token in rendering.personal_substitutions(alert, IDENTITY))
    no_call = make_batch(make_case(action_call=None), {"rahima": "BD"})[0]
    linked = render_alert(no_call, LINKED)
    assert "/acted/" not in linked.text + linked.html and "/unsubscribe/" in linked.text
    assert not any("acted" in token for token in rendering.personal_substitutions(no_call, LINKED))


# -- follow-ups ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "status", "subject", "opening", "helped"),
    [
        (
            "en",
            "remedy_won",
            "Thank you — Remedy won: Fired for organising",
            "Thank you for taking action on this case: the workers have won remedy.",
            "Your action helped: Twelve leaders dismissed.",
        ),
        (
            "en",
            "closed",
            "Thank you — Case closed: Fired for organising",
            "Thank you for taking action on this case: it is now closed.",
            "Your action helped: Twelve leaders dismissed.",
        ),
        (
            "fr",
            "remedy_won",
            "Merci — Réparation obtenue : Licenciés",
            "Merci d'avoir agi pour ce cas\u00a0: les travailleuses et travailleurs ont obtenu réparation.",
            "Votre action a compté\u00a0: Douze dirigeants renvoyés.",
        ),
        (
            "fr",
            "closed",
            "Merci — Cas clos : Licenciés",
            "Merci d'avoir agi pour ce cas\u00a0: il est désormais clos.",
            "Votre action a compté\u00a0: Douze dirigeants renvoyés.",
        ),
        (
            "es",
            "remedy_won",
            "Gracias — Reparación conseguida: Despedidos",
            "Gracias por actuar en este caso: las trabajadoras y los trabajadores han conseguido reparación.",
            "Tu acción ayudó: Twelve leaders dismissed.",
        ),
        (
            "es",
            "closed",
            "Gracias — Caso cerrado: Despedidos",
            "Gracias por actuar en este caso: ya está cerrado.",
            "Tu acción ayudó: Twelve leaders dismissed.",
        ),
    ],
)
def test_a_follow_up_thanks_and_says_what_the_case_reached(
    language: str, status: str, subject: str, opening: str, helped: str
) -> None:
    case = make_case(status=status, action_call=None)
    follow_up = make_batch(case, {"rahima": "BD"}, language, follow_up=True)[0]
    email = render_alert(follow_up, LINKED)
    assert email.subject == subject
    assert opening in email.text and helped in email.text
    assert opening.replace("\u00a0", "&nbsp;") in email.html  # template text: not escaped
    assert helped.replace("\u00a0", "&nbsp;") in email.html
    assert "ACTION" not in email.text and "ACCIÓN" not in email.text and "/acted/" not in email.text
    # The same update as an alert to someone who did not act: the usual subject and opening.
    alert = make_batch(case, {"rahima": "BD"}, language)[0]
    plain = render_alert(alert, LINKED)
    assert plain.subject != subject and opening not in plain.text and helped not in plain.text


def test_a_follow_up_shows_a_call_only_when_the_update_has_one() -> None:
    case = make_case(status="remedy_won")
    follow_up = by_subscriber(make_batch(case, {"noor": "NL", "rahima": "BD"}, follow_up=True))
    emails = {subscriber: render_alert(alert, LINKED) for subscriber, alert in follow_up.items()}
    assert "ACTION: Protest at the store" in emails["noor"].text
    assert "ACTION: Email the brand" in emails["rahima"].text
    assert all(email.subject.startswith("Thank you — Remedy won") for email in emails.values())
    assert all("/acted/" in email.text for email in emails.values())


# -- through the sinks -----------------------------------------------------------------------


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def test_the_outbox_writes_each_person_their_variant_and_link(tmp_path: Path) -> None:
    case = make_case()
    alerts = [
        *make_batch(case, {"noor": "NL", "rahima": "BD", "sam": None}),
        *make_batch(case, {"adele": "NL", "zoe": "FR"}, "fr"),
        *make_batch(make_case(status="remedy_won"), {"omar": "NL"}, "es", follow_up=True),
    ]
    config = OutboxConfig(
        outbox_dir=tmp_path / "out",
        from_email="Network <alerts@example.net>",
        unsubscribe_email="stop@example.net",
        public_url=PUBLIC_URL,
        secret_key=SECRET,
    )
    sink = OutboxSink(config)

    async def run() -> list[Any]:
        await sink.setup()
        try:
            return list(await sink.deliver(alerts))
        finally:
            await sink.close()

    assert all(outcome.accepted for outcome in asyncio.run(run()))
    identity = config.identity()
    signer = LinkSigner(SECRET)
    for alert in alerts:
        raw = (tmp_path / "out" / f"{alert.alert_id}.eml").read_bytes()
        message = _parse(raw)
        text, html = message.get_body(("plain",)), message.get_body(("html",))
        assert text is not None and html is not None
        expected = render_alert(alert, identity)
        assert (message["Subject"], text.get_content(), html.get_content()) == (
            expected.subject,
            expected.text,
            expected.html,
        )
        token = urlsplit(acted_link(expected.text)).path.rsplit("/", 1)[1]
        action_id = action_id_for(alert.case.case_id, alert.case.action_call)  # type: ignore[arg-type]
        assert signer.verify(token, "acted", scope=action_id) == alert.subscriber_id
        assert not any(secret in raw.decode("ascii") + expected.text for secret in INTERNAL)
    texts = {alert.subscriber_id: render_alert(alert, identity).text for alert in alerts}
    assert "Kalverstraat" in texts["noor"] and "Kalverstraat" not in texts["sam"]
    assert "Gracias por actuar" in texts["omar"]


def test_sendgrid_sends_one_body_per_variant_with_each_persons_link_in_the_substitutions() -> None:
    case = make_case()
    alerts = make_batch(case, {"noor": "NL", "daan": "NL", "rahima": "BD", "sam": None, "lee": "US"})
    requests, failed = plan_requests(alerts, LINKED)
    assert failed == [] and len(requests) == 3  # the protest, the email, the call
    subjects_and_asks = set()
    for request in requests:
        assert validate_mail_send(request.body) == []
        everything = json.dumps(request.body)
        assert not any(secret in everything for secret in INTERNAL)
        text, html = (part["value"] for part in request.body["content"])
        assert "/acted/" not in text  # the link is each person's own: a substitution
        for personalization in request.body["personalizations"]:
            values = personalization["substitutions"]
            alert = by_subscriber(alerts)[personalization["custom_args"]["subscriber_id"]]
            expected = render_alert(alert, LINKED)
            assert (fill(text, values), fill(html, values)) == (expected.text, expected.html)
            assert values["%mobilise_acted_url_text%"] == acted_link(expected.text)
            subjects_and_asks.add((alert.subscriber_id, text.split("\nACTION: ")[1].split("\n")[0]))
    assert subjects_and_asks == {
        ("noor", "Protest at the store — H&M Kalverstraat"),
        ("daan", "Protest at the store — H&M Kalverstraat"),
        ("rahima", "Email the brand — H&M Group"),
        ("sam", "Email the brand — H&M Group"),
        ("lee", "Call — H&M Group"),
    }
    # Without a public URL: no link, no slot for it.
    plain, _ = plan_requests(alerts, IDENTITY)
    bodies = json.dumps([r.body for r in plain])
    assert "/acted/" not in bodies and "acted_url" not in bodies


def test_sendgrid_delivers_follow_ups_apart_from_alerts(monkeypatch: pytest.MonkeyPatch) -> None:
    case = make_case(status="remedy_won")
    alerts = [
        *make_batch(case, {"rahima": "BD", "noor": "NL"}, "fr", follow_up=True),
        *make_batch(case, {"sam": "BD"}, "fr"),
    ]
    monkeypatch.setenv("MOBILISE_PUBLIC_URL", PUBLIC_URL)
    monkeypatch.setenv("MOBILISE_SECRET_KEY", SECRET.get_secret_value())

    async def test(sink: SendGridSink, fake: FakeSendGrid, time: FakeTime) -> None:
        outcomes = await sink.deliver(alerts)
        assert all(outcome.accepted for outcome in outcomes) and len(fake.accepted) == 3
        received = {email.custom_args["subscriber_id"]: email for email in fake.emails()}
        for alert in alerts:
            email, expected = received[alert.subscriber_id], render_alert(alert, LINKED)
            assert (email.subject, email.text, email.html) == (expected.subject, expected.text, expected.html)
        thanks = "Merci — Réparation obtenue : Licenciés"
        assert received["rahima"].subject == received["noor"].subject == thanks
        assert received["sam"].subject == "Réparation obtenue : Licenciés"

    with_sink(test)
