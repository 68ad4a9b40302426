"""Signed links: round trip, tampering, purpose binding, expiry, and their settings."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from pydantic import SecretStr

from connectors.outbox import OutboxConfig
from mobilise.errors import ConfigurationError
from mobilise.links import InvalidLink, LinkSigner, PublicLinks, check_public_url
from mobilise.settings import load_settings

KEY = "k" * 16 + "an-honest-test-key-of-some-length"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_token_round_trips_to_its_subscriber() -> None:
    signer = LinkSigner(KEY)
    token = signer.sign("unsubscribe", "sub-0123abcd")
    assert signer.verify(token, "unsubscribe") == "sub-0123abcd"
    assert token.startswith("1.") and all(c.isalnum() or c in "._-" for c in token)  # URL-safe
    assert "sub-0123abcd" not in token  # encoded, not a readable id people could edit
    assert signer.sign("unsubscribe", "sub-0123abcd") == token  # deterministic: the same link in every email
    assert signer.verify(signer.sign("unsubscribe", "ext:a.b_c-1"), "unsubscribe") == "ext:a.b_c-1"


def test_any_change_to_a_token_is_refused() -> None:
    signer = LinkSigner(KEY)
    token = signer.sign("unsubscribe", "sub-1")
    version, encoded_id, expires, mac = token.split(".")
    other_id = base64.urlsafe_b64encode(b"sub-2").rstrip(b"=").decode()
    altered = [
        f"{version}.{other_id}.{expires}.{mac}",  # someone else
        f"{version}.{encoded_id}.1900000000.{mac}",  # an expiry added
        f"{version}.{encoded_id}.{expires}.{'B' if mac[0] == 'A' else 'A'}{mac[1:]}",  # a MAC character
    ]
    for bad in altered:
        with pytest.raises(InvalidLink) as refused:
            signer.verify(bad, "unsubscribe")
        assert refused.value.reason == "signature"
    for broken in ("", "nonsense", token[:-5], token + "x", "2." + token[2:], token.replace(".", "..", 1)):
        with pytest.raises(InvalidLink) as refused:
            signer.verify(broken, "unsubscribe")
        assert refused.value.reason == "malformed"


def test_a_token_is_bound_to_its_purpose_and_its_key() -> None:
    signer = LinkSigner(KEY)
    for_preferences = signer.sign("preferences", "sub-1")
    with pytest.raises(InvalidLink, match="not valid for 'unsubscribe'"):
        signer.verify(for_preferences, "unsubscribe")
    assert signer.verify(for_preferences, "preferences") == "sub-1"
    with pytest.raises(InvalidLink):
        LinkSigner("another-key-that-is-also-long-enough!!").verify(
            signer.sign("unsubscribe", "sub-1"), "unsubscribe"
        )
    with pytest.raises(ValueError, match="unknown link purpose"):
        signer.sign("delete_everything", "sub-1")  # type: ignore[arg-type]  # the mistake tested


def test_expiry_follows_the_injected_clock_and_unsubscribe_links_never_expire() -> None:
    clock = Clock()
    signer = LinkSigner(KEY, clock=clock)
    confirm = signer.sign("confirm", "sub-1", expires_in=timedelta(days=2))
    forever = signer.sign("unsubscribe", "sub-1")
    clock.now += 2 * 86_400 - 1
    assert signer.verify(confirm, "confirm") == "sub-1"
    clock.now += 1
    with pytest.raises(InvalidLink) as refused:
        signer.verify(confirm, "confirm")
    assert refused.value.reason == "expired"
    clock.now += 50 * 365 * 86_400
    assert signer.verify(forever, "unsubscribe") == "sub-1"
    with pytest.raises(ValueError, match="positive"):
        signer.sign("confirm", "sub-1", expires_in=timedelta(0))


def test_keys_and_subscriber_ids_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        LinkSigner("short")
    with pytest.raises(ValueError, match="not a subscriber id"):
        LinkSigner(KEY).sign("unsubscribe", "a@example.org")


def test_public_urls_need_https_except_on_loopback() -> None:
    assert check_public_url("https://alerts.example.org/") == "https://alerts.example.org"
    assert check_public_url("https://example.org/mobilise") == "https://example.org/mobilise"
    for local in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):
        assert check_public_url(local) == local
    for bad in (
        "http://alerts.example.org",
        "ftp://x",
        "alerts.example.org",
        "https://x/?a=1",
        "https://x/%41",
    ):
        with pytest.raises(ValueError):
            check_public_url(bad)
    links = PublicLinks("https://alerts.example.org/", SecretStr(KEY))
    url = links.unsubscribe_url("sub-1")
    assert url.startswith("https://alerts.example.org/unsubscribe/1.")
    assert LinkSigner(KEY).verify(url.rsplit("/", 1)[1], "unsubscribe") == "sub-1"
    assert KEY not in repr(links)


def test_link_settings_name_both_variables_and_hide_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILISE_PUBLIC_URL", "https://alerts.example.org")
    monkeypatch.delenv("MOBILISE_SECRET_KEY", raising=False)
    with pytest.raises(ConfigurationError) as missing:
        load_settings()
    assert "MOBILISE_PUBLIC_URL is set but MOBILISE_SECRET_KEY is not" in str(missing.value)
    monkeypatch.setenv("MOBILISE_SECRET_KEY", "password123")
    with pytest.raises(ConfigurationError) as short:
        load_settings()
    assert "MOBILISE_SECRET_KEY: must be at least 32 characters" in str(short.value)
    assert "password123" not in str(short.value)
    monkeypatch.setenv("MOBILISE_PUBLIC_URL", "http://alerts.example.org")
    monkeypatch.setenv("MOBILISE_SECRET_KEY", KEY)
    with pytest.raises(ConfigurationError, match=r"MOBILISE_PUBLIC_URL='http://alerts.example.org': .*HTTPS"):
        load_settings()
    # The same variables reach the outbox sink's settings.
    with pytest.raises(ConfigurationError, match=r"MOBILISE_PUBLIC_URL='http://alerts\.example\.org'"):
        OutboxConfig()
    monkeypatch.setenv("MOBILISE_PUBLIC_URL", "https://alerts.example.org")
    settings = load_settings()
    assert KEY not in repr(settings) and settings.public_links() == PublicLinks(
        settings.public_url or "", SecretStr(KEY)
    )
    assert OutboxConfig().identity().links == settings.public_links()
    monkeypatch.delenv("MOBILISE_PUBLIC_URL")
    assert (
        load_settings().public_links() is None
    )  # the key alone: the web process verifies, emails carry no link
    assert OutboxConfig().identity().links is None


def test_every_email_sink_reads_the_same_link_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.sendgrid_mail import SendGridConfig
    from connectors.smtp import SmtpConfig

    monkeypatch.setenv("MOBILISE_SENDGRID_API_KEY", "SG.key")
    monkeypatch.setenv("MOBILISE_SMTP_HOST", "mail.example.org")
    monkeypatch.setenv("MOBILISE_PUBLIC_URL", "https://alerts.example.org")
    monkeypatch.setenv("MOBILISE_SECRET_KEY", "short-secret")
    for config in (SmtpConfig, SendGridConfig):
        with pytest.raises(ConfigurationError, match="MOBILISE_SECRET_KEY: must be at least 32") as refused:
            config()
        assert "short-secret" not in str(refused.value)
    monkeypatch.setenv("MOBILISE_SECRET_KEY", KEY)
    expected = PublicLinks("https://alerts.example.org", SecretStr(KEY))
    assert SmtpConfig().identity().links == SendGridConfig().identity().links == expected
