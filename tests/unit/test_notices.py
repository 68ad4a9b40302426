"""Signed links in emails: the web process's notices (rendered, and sent through each email sink's
transport to real loopback servers) and the "Manage your alerts" link of every alert."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser, Parser
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from connectors.mime import alert_message
from connectors.rendering import EmailIdentity, render_alert
from connectors.sendgrid_mail import plan_requests
from mobilise.errors import ConfigurationError
from mobilise.links import InvalidLink, LinkSigner, PublicLinks
from mobilise.web.notices import CONFIRMATION_VALID_FOR, Notice, NoticeNotSent, notice_sender, render_notice
from schemas import Subscription
from tests.fakes.sendgrid_server import API_KEY, FakeSendGrid, validate_mail_send
from tests.unit.test_sendgrid_sink import make_alerts
from tests.unit.test_smtp_sink import SmtpServer

SECRET = SecretStr("notice-tests-secret-key-0123456789abcdef")
NOW = 1_800_000_000.0


def clock() -> float:
    return NOW


LINKS = PublicLinks("https://alerts.example.net", SECRET, clock=clock)


def person(language: str = "en", name: str | None = "Adèle") -> Subscription:
    return Subscription(
        email="adele@example.org",
        name=name,
        language=language,
        worldwide=True,
        interests=("wages",),
        created_at=datetime.fromtimestamp(NOW, UTC),
    )


def tokens(text: str, page: str) -> list[tuple[str, str]]:
    return re.findall(rf"https://alerts\.example\.net/{page}/([^?\s\"]+)\?lang=(\w+)", text)


def test_the_confirmation_notice_carries_a_link_that_expires_in_seven_days() -> None:
    notice = render_notice("confirm", person(), LINKS)
    assert (notice.subject, notice.to_email, notice.language) == (
        "Confirm your subscription to the alerts",
        "adele@example.org",
        "en",
    )
    assert notice.text.startswith("Hello Adèle,\n")
    ((token, language),) = tokens(notice.text, "confirm")
    assert language == "en" and tokens(notice.html, "confirm") == [(token, "en")] * 2  # the button, and shown
    subscriber = person().subscriber_id
    assert LinkSigner(SECRET, clock=clock).verify(token, "confirm") == subscriber
    later = LinkSigner(SECRET, clock=lambda: NOW + CONFIRMATION_VALID_FOR.total_seconds())
    with pytest.raises(InvalidLink) as refused:
        later.verify(token, "confirm")
    assert refused.value.reason == "expired"
    assert "/preferences/" not in notice.text


@pytest.mark.parametrize(
    ("language", "subject", "label"),
    [
        ("en", "You already get the alerts", "Manage your alerts"),
        ("fr", "Vous recevez déjà les alertes", "Gérer mes alertes"),
        ("es", "Ya recibes las alertas", "Gestionar mis alertas"),
        ("km", "You already get the alerts", "Manage your alerts"),
    ],
)
def test_the_already_subscribed_notice_links_to_preferences_and_my_data(
    language: str, subject: str, label: str
) -> None:
    notice = render_notice("manage", person(language, name=None), LINKS)
    assert notice.subject == subject and f">{label}</a>" in notice.html
    shown = "en" if language == "km" else language
    assert f'<html lang="{shown}">' in notice.html
    ((preferences, query),) = tokens(notice.text, "preferences")
    ((my_data, _),) = tokens(notice.text, "my-data")
    signer = LinkSigner(SECRET)
    assert query == shown
    assert signer.verify(preferences, "preferences") == signer.verify(my_data, "preferences")
    assert "/confirm/" not in notice.text + notice.html


def test_names_are_escaped_in_the_html_of_a_notice() -> None:
    notice = render_notice("confirm", person(name="<b>Ada</b>"), LINKS)
    assert "<b>Ada" not in notice.html and "&lt;b&gt;Ada" in notice.html
    assert "Hello <b>Ada</b>," in notice.text  # plain text is not HTML


def read(path: Path) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(message, EmailMessage)
    return message


def test_the_outbox_gets_one_complete_eml_file_per_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOBILISE_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("MOBILISE_FROM_EMAIL", "Network <alerts@example.net>")
    sender = notice_sender("outbox", clock=clock)
    assert sender is not None
    notice = render_notice("confirm", person("fr"), LINKS)
    asyncio.run(sender.send(notice))
    (written,) = (tmp_path / "outbox").iterdir()  # no temporary file left behind
    assert written.name == f"notice-{notice.notice_id}.eml"
    message = read(written)
    assert message["From"] == "Network <alerts@example.net>" and message["To"] == "Adèle <adele@example.org>"
    assert message["Subject"] == "Confirmez votre abonnement aux alertes"
    assert message["Auto-Submitted"] == "auto-generated" and message["Content-Language"] == "fr"
    assert message["Message-ID"] == f"<notice-{notice.notice_id}@example.net>"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert text.get_content() == notice.text and html.get_content().rstrip("\n") == notice.html
    assert written.read_bytes().isascii()  # quoted-printable: any mail server takes it


def test_smtp_notices_reach_the_server_and_a_dead_server_is_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with SmtpServer("none", login=False) as server:
        for name, value in server.env(None, login=False).items():
            monkeypatch.setenv(name, value)
        sender = notice_sender("smtp", clock=clock)
        assert sender is not None
        notice = render_notice("manage", person("es"), LINKS)
        asyncio.run(sender.send(notice))
        (received,) = server.mailbox.messages
        assert received.rcpt_tos == ["adele@example.org"] and received.mail_from == "alerts@example.net"
        message = received.message()
        assert message["Subject"] == "Ya recibes las alertas" and message["X-Mobilise-Notice"] == "manage"
    with pytest.raises(NoticeNotSent, match="did not take the notice") as failed:
        asyncio.run(sender.send(notice))
    assert "adele@example.org" not in str(failed.value)


def test_a_sendgrid_notice_is_one_valid_mail_send_request(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> tuple[dict[str, Any], Notice]:
        async with FakeSendGrid() as fake:
            monkeypatch.setenv("MOBILISE_SENDGRID_API_KEY", API_KEY)
            monkeypatch.setenv("MOBILISE_SENDGRID_HOST", fake.url)
            monkeypatch.setenv("MOBILISE_FROM_EMAIL", "Network <alerts@example.net>")
            sender = notice_sender("sendgrid", clock=clock)
            assert sender is not None
            notice = render_notice("confirm", person(), LINKS)
            await sender.send(notice)
            (body,) = fake.accepted
            (email,) = fake.emails()
            assert (email.subject, email.text, email.html) == (notice.subject, notice.text, notice.html)
            monkeypatch.setenv("MOBILISE_SENDGRID_API_KEY", "SG.wrong")
            refused = notice_sender("sendgrid", clock=clock)
            assert refused is not None
            with pytest.raises(NoticeNotSent, match="SendGrid answered 401"):
                await refused.send(notice)
            return body, notice

    body, notice = asyncio.run(scenario())
    assert validate_mail_send(body) == []
    (personalization,) = body["personalizations"]
    assert personalization["to"] == [{"email": "adele@example.org", "name": "Adèle"}]
    assert personalization["custom_args"] == {"subscriber_id": notice.subscriber_id}
    assert body["from"] == {"email": "alerts@example.net", "name": "Network"}
    assert body["tracking_settings"] == {"click_tracking": {"enable": False}}
    assert body["categories"] == ["mobilise", "notice:confirm"]


def test_only_the_email_sinks_can_send_notices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert notice_sender("webhook-sink", clock=clock) is None
    monkeypatch.delenv("MOBILISE_SMTP_HOST", raising=False)
    with pytest.raises(ConfigurationError, match="MOBILISE_SMTP_HOST"):
        notice_sender("smtp", clock=clock)


# -- the "Manage your alerts" link of every alert --------------------------------------------

LINKED = EmailIdentity(
    from_email="Network <alerts@example.net>", unsubscribe_email="stop@example.net", links=LINKS
)
PLAIN = EmailIdentity(from_email="Network <alerts@example.net>", unsubscribe_email="stop@example.net")


@pytest.mark.parametrize(
    ("language", "label"),
    [("en", "Manage your alerts"), ("fr", "Gérer mes alertes"), ("es", "Gestionar mis alertas")],
)
def test_every_alert_links_to_the_persons_preferences_page(language: str, label: str) -> None:
    (alert,) = make_alerts(1, language=language)
    email = render_alert(alert, LINKED)
    ((token, query),) = tokens(email.text, "preferences")
    assert query == language and LinkSigner(SECRET).verify(token, "preferences") == alert.subscriber_id
    assert label in email.text
    assert (
        f'<a href="https://alerts.example.net/preferences/{token}?lang={language}">{label}</a>' in email.html
    )
    # On its own line, between the reason and the unsubscribe link.
    lines = email.text.splitlines()
    at = next(i for i, line in enumerate(lines) if "/preferences/" in line)
    assert "/unsubscribe/" in lines[at + 1] and lines[at - 1].strip()
    # The outbox and SMTP message says the same.
    message = alert_message(alert, LINKED)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content() == email.text


def test_sendgrid_fills_the_preferences_link_per_person_through_substitutions() -> None:
    alerts = make_alerts(3)
    (request,), failed = plan_requests(alerts, LINKED)
    assert failed == []
    text = request.body["content"][0]["value"]
    assert "/preferences/" not in text and "%mobilise_manage_text%" in text  # one body for everyone
    for alert, personalization in zip(alerts, request.body["personalizations"], strict=True):
        values = personalization["substitutions"]
        ((token, _),) = tokens(values["%mobilise_manage_text%"], "preferences")
        assert LinkSigner(SECRET).verify(token, "preferences") == alert.subscriber_id
        assert token in values["%mobilise_manage_html%"]
    assert validate_mail_send(request.body) == []


def test_without_public_links_there_is_no_manage_link() -> None:
    (alert,) = make_alerts(1)
    email = render_alert(alert, PLAIN)
    assert "Manage your alerts" not in email.text + email.html and "%mobilise_" not in email.text + email.html
    (request,), _ = plan_requests([alert], PLAIN)
    assert "manage" not in json.dumps(request.body["personalizations"][0]["substitutions"])


@pytest.mark.parametrize(
    ("address", "sent_as"),
    [("adele@exämple.org", "adele@xn--exmple-cua.org"), ("adèle@exämple.org", "adèle@xn--exmple-cua.org")],
    ids=["domain-beyond-ascii", "local-part-beyond-ascii"],
)
def test_a_notice_to_an_internationalised_address_goes_in_the_form_mail_systems_take(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, address: str, sent_as: str
) -> None:
    subscription = person().model_copy(update={"email": address})
    notice = render_notice("confirm", subscription, LINKS)
    monkeypatch.setenv("MOBILISE_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("MOBILISE_FROM_EMAIL", "Network <alerts@example.net>")
    outbox = notice_sender("outbox", clock=clock)
    assert outbox is not None
    asyncio.run(outbox.send(notice))
    (written,) = (tmp_path / "outbox").iterdir()
    data = written.read_bytes()
    # Only an address beyond ASCII before its @ makes the file other than 7-bit (RFC 6532).
    assert data.isascii() == sent_as.isascii()
    parsed = Parser(policy=policy.default).parsestr(data.decode("utf-8"))
    assert parsed["To"].addresses[0].addr_spec == sent_as
    assert parsed["To"].addresses[0].display_name == "Adèle"

    with SmtpServer("none", login=False, smtputf8=True) as server:
        for name, value in server.env(None, login=False).items():
            monkeypatch.setenv(name, value)
        smtp = notice_sender("smtp", clock=clock)
        assert smtp is not None
        asyncio.run(smtp.send(notice))
        (received,) = server.mailbox.messages
        assert received.rcpt_tos == [sent_as]
        assert received.message()["To"].addresses[0].addr_spec == sent_as

    async def through_sendgrid() -> list[dict[str, str]]:
        async with FakeSendGrid() as fake:
            monkeypatch.setenv("MOBILISE_SENDGRID_API_KEY", API_KEY)
            monkeypatch.setenv("MOBILISE_SENDGRID_HOST", fake.url)
            sendgrid = notice_sender("sendgrid", clock=clock)
            assert sendgrid is not None
            if sent_as.isascii():
                await sendgrid.send(notice)
            else:  # SendGrid would take it and drop the message as invalid
                with pytest.raises(NoticeNotSent, match="SendGrid does not deliver"):
                    await sendgrid.send(notice)
            return [email.to for email in fake.emails()]

    sent = asyncio.run(through_sendgrid())
    assert sent == ([{"email": sent_as, "name": "Adèle"}] if sent_as.isascii() else [])
