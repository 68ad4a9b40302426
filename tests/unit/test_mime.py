"""The MIME builder: what mail readers parse out of it is exactly what was rendered."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from connectors.mime import to_bytes, to_message
from connectors.rendering import render_alert

from .test_rendering_and_outbox import IDENTITY, make_alert


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def test_readers_get_back_the_rendered_text_html_and_headers() -> None:
    alert = make_alert("fr").model_copy(update={"name": "Adèle Müller-Ñúñez"})
    email = render_alert(alert, IDENTITY)
    raw = to_bytes(email, IDENTITY, date_source=alert)
    message = _parse(raw)

    assert raw.isascii()  # 7-bit clean: any mail server takes it
    assert max(len(line) for line in raw.split(b"\n")) <= 998
    assert message["Subject"] == email.subject and not email.subject.isascii()
    assert message["To"].addresses[0].display_name == "Adèle Müller-Ñúñez"
    assert message["To"].addresses[0].addr_spec == "person@example.org"
    assert message["From"].addresses[0].addr_spec == "alerts@example.net"
    assert message["Message-ID"] == f"<{alert.alert_id}@example.net>"
    assert message["Content-Language"] == "fr"
    for name, value in email.headers.items():
        assert " ".join(str(message[name]).split()) == " ".join(value.split())
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content() == email.text
    assert html.get_content() == email.html
    assert not message.defects and not text.defects and not html.defects


def test_the_same_alert_gives_the_same_bytes() -> None:
    alert = make_alert()
    email = render_alert(alert, IDENTITY)
    assert to_bytes(email, IDENTITY, date_source=alert) == to_bytes(email, IDENTITY, date_source=alert)
    assert to_message(email, IDENTITY, date_source=alert).as_bytes().count(b"Subject:") == 1


def test_a_name_cannot_add_headers() -> None:
    alert = make_alert().model_copy(update={"name": "Eve\nBcc: everyone@example.com"})
    message = _parse(to_bytes(render_alert(alert, IDENTITY), IDENTITY, date_source=alert))
    assert message["Bcc"] is None
    assert message["To"].addresses[0].addr_spec == "person@example.org"


def test_long_subjects_are_folded_not_cut() -> None:
    alert = make_alert(title={"en": "Workers at the factory " * 12})
    email = render_alert(alert, IDENTITY)
    raw = to_bytes(email, IDENTITY, date_source=alert)
    assert all(len(line) <= 998 for line in raw.split(b"\n"))
    assert _parse(raw)["Subject"] == email.subject
