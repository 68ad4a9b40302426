"""The MIME builder: what mail readers parse out of it is exactly what was rendered."""

from __future__ import annotations

import email.charset
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import mime
from connectors.mime import alert_bytes, alert_message, message_template
from connectors.rendering import render_alert

from .test_rendering_and_outbox import IDENTITY, make_alert


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def test_readers_get_back_the_rendered_text_html_and_headers() -> None:
    alert = make_alert("fr").model_copy(update={"name": "Adèle Müller-Ñúñez"})
    email = render_alert(alert, IDENTITY)
    raw = alert_bytes(alert, IDENTITY)
    message = _parse(raw)

    assert raw.isascii()  # 7-bit clean: any mail server takes it
    assert max(len(line) for line in raw.split(b"\n")) <= 998
    # RFC 5322's recommended 78 too, the headers of the parts and the boundaries included.
    assert max(len(line) for line in raw.split(b"\n")) <= 78
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


def test_the_bytes_do_not_depend_on_what_another_library_set_for_utf_8(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # apprise (the chat connector's library) makes UTF-8 headers quoted-printable for the
    # whole process when it is imported; encoded words of the name and subject must not follow.
    alert = make_alert("fr").model_copy(update={"name": "Adèle Müller-Ñúñez"})
    before = alert_bytes(alert, IDENTITY)
    monkeypatch.setitem(email.charset.CHARSETS, "utf-8", (email.charset.QP, email.charset.QP, "utf-8"))
    for cached in (message_template, mime._encoded_header):
        cached.cache_clear()
    assert email.charset.Charset("utf-8").header_encoding == email.charset.QP  # as apprise leaves it
    assert alert_bytes(alert, IDENTITY) == before


def test_the_networks_own_internationalised_domain_goes_in_ascii() -> None:
    identity = IDENTITY.model_copy(
        update={"from_email": "Réseau <alertes@réseau.org>", "unsubscribe_email": "stop@réseau.org"}
    )
    alert = make_alert()
    raw = alert_bytes(alert, identity)
    message = _parse(raw)
    assert raw.isascii()
    assert message["From"].addresses[0].addr_spec == "alertes@xn--rseau-bsa.org"
    assert message["From"].addresses[0].display_name == "Réseau"
    assert message["Message-ID"] == f"<{alert.alert_id}@xn--rseau-bsa.org>"
    assert message["List-Unsubscribe"] == "<mailto:stop@xn--rseau-bsa.org?subject=unsubscribe%20sub-1>"


def test_the_same_alert_gives_the_same_bytes() -> None:
    alert = make_alert()
    assert alert_bytes(alert, IDENTITY) == alert_bytes(alert.model_copy(), IDENTITY)
    assert alert_message(alert, IDENTITY).as_bytes().count(b"Subject:") == 1


def test_a_name_cannot_add_headers() -> None:
    alert = make_alert().model_copy(update={"name": "Eve\nBcc: everyone@example.com"})
    message = _parse(alert_bytes(alert, IDENTITY))
    assert message["Bcc"] is None
    assert message["To"].addresses[0].addr_spec == "person@example.org"


def test_long_subjects_are_folded_not_cut() -> None:
    alert = make_alert(title={"en": "Workers at the factory " * 12})
    email = render_alert(alert, IDENTITY)
    raw = alert_bytes(alert, IDENTITY)
    assert all(len(line) <= 998 for line in raw.split(b"\n"))
    assert _parse(raw)["Subject"] == email.subject


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"),
        max_size=300,
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=80),
)
def test_a_body_encoded_line_by_line_is_the_body_encoded_whole(body: str, value: str) -> None:
    from connectors.mime import _Body, _quoted_printable
    from connectors.rendering import PersonalParts, fill

    token = PersonalParts.placeholders["why_text"]
    # A slot somewhere in the body, on a line of its own or inside one.
    cut = len(body) // 2
    shared = body[:cut] + token + body[cut:]
    values = {token: value}
    whole = fill(shared, values)
    expected = _quoted_printable(whole if whole.endswith("\n") else whole + "\n")
    assert _Body.of(shared).render(values) == expected


def test_every_shipped_template_encodes_the_same_line_by_line() -> None:
    from connectors.mime import _Body, _quoted_printable
    from connectors.rendering import fill, personal_substitutions, shared_email

    for language in ("en", "fr", "es", "km"):
        alert = make_alert(language).model_copy(update={"name": "Adèle  =Ñ= trailing "})
        shared = shared_email(alert, IDENTITY)
        values = personal_substitutions(alert, IDENTITY)
        for body in (shared.text, shared.html):
            filled = fill(body, values)
            assert _Body.of(body).render(values) == _quoted_printable(
                filled if filled.endswith("\n") else filled + "\n"
            )


@pytest.mark.parametrize("layout", ["{t}", "{t}\n", "x\n{t}", "x\n{t}\n{t}", "{t}{t}", "", "\n\n", "a {t} b"])
@pytest.mark.parametrize("value", ["", "\n", "trailing ", "two\n\n"])
def test_the_last_line_end_is_the_one_the_whole_body_would_get(layout: str, value: str) -> None:
    # A slot on the last line, without a line end after it: whether the body ends with one
    # is known only once the value is in (found by the property test above).
    from connectors.mime import _Body, _quoted_printable
    from connectors.rendering import PersonalParts, fill

    token = PersonalParts.placeholders["why_text"]
    shared = layout.format(t=token)
    whole = fill(shared, {token: value})
    expected = _quoted_printable(whole if whole.endswith("\n") else whole + "\n")
    assert _Body.of(shared).render({token: value}) == expected
