"""Signed links: URLs in emails that act for one subscriber without a login.

A link carries a token that names a subscriber and is bound, by an HMAC-SHA256 under
``MOBILISE_SECRET_KEY``, to one purpose: "unsubscribe", "preferences" (the preferences
and my-data pages), "confirm" (double opt-in) or "acted" (the "I did this" link of an
action call, bound to that one action as well). Whoever holds the token may do that one
thing for that one person, which is what an email link is for; nobody can make a token
for another person or another purpose without the key.

Token format (URL-safe, no padding)::

    1.<base64url(subscriber_id)>.<expiry: Unix seconds, 0 = never>.<base64url(HMAC-SHA256)>

The MAC covers the format version, the purpose, the subscriber id, the expiry and, for a
scoped link ("acted"), its scope, which the URL carries beside the token.
Unsubscribe links never expire: an email read months later must still work (and RFC 8058
one-click requests come from mail providers at any time); nor do preferences links, which
are in every email, nor "I did this" links (people act, and say so, days later).
Confirmation links do (the web process signs them for 7 days).
Changing the secret key invalidates every link in every email already sent, so keep it
stable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Literal, get_args
from urllib.parse import quote, urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import MobiliseError

__all__ = [
    "MIN_SECRET_LENGTH",
    "InvalidLink",
    "LinkSettings",
    "LinkSigner",
    "PublicLinks",
    "Purpose",
    "check_public_url",
]

Purpose = Literal["unsubscribe", "preferences", "confirm", "acted"]
"""What a link may do. A token signed for one purpose is refused for every other."""

MIN_SECRET_LENGTH = 32
"""Shortest accepted ``MOBILISE_SECRET_KEY``, in characters."""

_PURPOSES = frozenset(get_args(Purpose))
_VERSION = "1"
_DOMAIN = b"mobilise.link"
_SUBSCRIBER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_TOKEN = re.compile(r"^1\.([A-Za-z0-9_-]{1,172})\.(\d{1,12})\.([A-Za-z0-9_-]{43})$")
_URL_SAFE = re.compile(r"[A-Za-z0-9_.~:-]+")  # unreserved, and ":" (legal in a path segment and a query)
_LOOPBACK_NAMES = frozenset({"localhost"})
_GENERATE = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"

Clock = Callable[[], float]


class InvalidLink(MobiliseError):
    """A token that must not be acted on.

    Attributes:
        reason: ``malformed`` (not a token of ours, or cut short), ``signature`` (forged,
            altered, or signed for another purpose or with another key) or ``expired``.

    """

    def __init__(self, reason: Literal["malformed", "signature", "expired"], message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Signs and verifies link tokens with one secret key. Pure but for the injected clock.

    Args:
        secret: The key (``MOBILISE_SECRET_KEY``), at least 32 characters.
        clock: Current Unix time, for expiries (tests inject a fake one).

    Raises:
        ValueError: the secret is shorter than :data:`MIN_SECRET_LENGTH`.

    """

    def __init__(self, secret: str | SecretStr, *, clock: Clock = time.time) -> None:
        raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if len(raw) < MIN_SECRET_LENGTH:
            raise ValueError(f"the secret key must be at least {MIN_SECRET_LENGTH} characters")
        # A key of its own for links, so the same secret may later sign other things safely.
        self._key = hmac.new(raw.encode("utf-8"), _DOMAIN, hashlib.sha256).digest()
        self._fingerprint = hashlib.sha256(b"fingerprint\x00" + self._key).hexdigest()[:12]
        self._clock = clock

    @property
    def fingerprint(self) -> str:
        """A short id of the key that reveals nothing about it (to compare signers, or to log)."""
        return self._fingerprint

    def _mac(self, purpose: str, subscriber_id: str, expires: int, scope: str = "") -> bytes:
        parts = [_VERSION.encode(), purpose.encode(), subscriber_id.encode(), str(expires).encode()]
        if scope:  # tokens without a scope keep the MAC they always had
            parts.append(scope.encode())
        # The one-shot digest: an HMAC object per link cost more than the rest of signing it.
        return hmac.digest(self._key, b"\x00".join(parts), "sha256")

    def sign(
        self, purpose: Purpose, subscriber_id: str, *, expires_in: timedelta | None = None, scope: str = ""
    ) -> str:
        """The token that lets its holder do ``purpose`` for ``subscriber_id``.

        Args:
            purpose: What the link does.
            subscriber_id: Whom it acts for.
            expires_in: How long the token stays valid; None (the default, and the only
                right choice for unsubscribe links) for ever.
            scope: What else the token is bound to, e.g. the action of an "I did this"
                link; not in the token, so the link carries it and :meth:`verify` is given it.

        Raises:
            ValueError: an unknown purpose, a malformed subscriber id or a non-positive expiry.

        """
        if purpose not in _PURPOSES:
            raise ValueError(f"unknown link purpose {purpose!r}; known: {', '.join(get_args(Purpose))}")
        if not _SUBSCRIBER_ID.fullmatch(subscriber_id):
            raise ValueError(f"{subscriber_id!r} is not a subscriber id")
        expires = 0
        if expires_in is not None:
            if expires_in <= timedelta(0):
                raise ValueError(f"expires_in must be positive, not {expires_in}")
            expires = int(self._clock() + expires_in.total_seconds())
        mac = self._mac(purpose, subscriber_id, expires, scope)
        return f"{_VERSION}.{_b64encode(subscriber_id.encode())}.{expires}.{_b64encode(mac)}"

    def verify(self, token: str, purpose: Purpose, *, scope: str = "") -> str:
        """The subscriber id ``token`` was signed for, if it is valid for ``purpose``.

        The signature is compared in constant time and checked before the expiry, so a
        forged token learns nothing about which part was wrong.

        Raises:
            InvalidLink: malformed, forged or altered, signed for another purpose, or expired.

        """
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise InvalidLink("malformed", "the link is not a complete mobilise link")
        encoded_id, expires_text, encoded_mac = match.groups()
        try:
            subscriber_id = _b64decode(encoded_id).decode("utf-8")
            mac = _b64decode(encoded_mac)
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidLink("malformed", "the link is not a complete mobilise link") from exc
        expires = int(expires_text)
        expected = self._mac(purpose, subscriber_id, expires, scope)
        if not hmac.compare_digest(mac, expected) or not _SUBSCRIBER_ID.fullmatch(subscriber_id):
            raise InvalidLink("signature", f"the link's signature is not valid for {purpose!r}")
        if expires and self._clock() >= expires:
            raise InvalidLink("expired", "the link has expired")
        return subscriber_id


class PublicLinks:
    """The signed URLs of one deployment: ``{public_url}/{page}/{token}``.

    Args:
        public_url: Where the web process is reached, validated by :func:`check_public_url`.
        secret_key: The signing key.
        clock: Current Unix time, for the expiry of confirmation links (tests inject one).

    """

    def __init__(self, public_url: str, secret_key: SecretStr, *, clock: Clock = time.time) -> None:
        self.public_url = check_public_url(public_url)
        self.signer = LinkSigner(secret_key, clock=clock)

    def __repr__(self) -> str:  # never the key
        return f"PublicLinks({self.public_url!r})"

    def __eq__(self, other: object) -> bool:
        # Equal when they make the same URLs (rendered emails are cached by identity).
        if not isinstance(other, PublicLinks):
            return NotImplemented
        return self.public_url == other.public_url and self.signer.fingerprint == other.signer.fingerprint

    def __hash__(self) -> int:
        return hash((self.public_url, self.signer.fingerprint))

    def unsubscribe_url(self, subscriber_id: str) -> str:
        """The one-click unsubscribe URL of ``subscriber_id`` (never expires)."""
        return f"{self.public_url}/unsubscribe/{self.signer.sign('unsubscribe', subscriber_id)}"

    def preferences_url(self, subscriber_id: str) -> str:
        """The URL of ``subscriber_id``'s preferences page (never expires: it is in every email)."""
        return f"{self.public_url}/preferences/{self.signer.sign('preferences', subscriber_id)}"

    def my_data_url(self, subscriber_id: str) -> str:
        """The URL of the page showing (and erasing) what is stored about ``subscriber_id``.

        Signed for "preferences", as the preferences link: whoever may change someone's
        alerts may see them.
        """
        return f"{self.public_url}/my-data/{self.signer.sign('preferences', subscriber_id)}"

    def confirm_url(self, subscriber_id: str, *, expires_in: timedelta) -> str:
        """The double opt-in URL of ``subscriber_id``'s pending subscription, valid for ``expires_in``."""
        token = self.signer.sign("confirm", subscriber_id, expires_in=expires_in)
        return f"{self.public_url}/confirm/{token}"

    def acted_url(self, subscriber_id: str, action_id: str, event_id: str, language: str) -> str:
        """The "I did this" URL of ``subscriber_id`` for one action (never expires).

        ``{public_url}/acted/{action_id}/{token}?event={event_id}&lang={language}``: the token
        is signed for "acted" with ``scope=action_id``, so it says "this person did this
        action" and nothing else; ``event`` names the update whose email carried the link,
        ``lang`` the language to answer in.

        Raises:
            ValueError: a malformed subscriber id (see :meth:`LinkSigner.sign`).

        """
        token = self.signer.sign("acted", subscriber_id, scope=action_id)
        return (
            f"{self.public_url}/acted/{_quoted(action_id)}/{token}"
            f"?event={_quoted(event_id)}&lang={_quoted(language)}"
        )


def _quoted(text: str) -> str:
    # Ids are slugs and need no escaping; quote() on every link of every email costs more.
    return text if _URL_SAFE.fullmatch(text) else quote(text, safe=":")


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_public_url(value: str) -> str:
    """``value`` without its trailing slash, if it can be the base of links in emails.

    Raises:
        ValueError: not an absolute https:// URL (http:// is allowed for loopback hosts,
            for ``mobilise dev`` and tests), or it has a query or fragment.

    """
    parts = urlsplit(value.strip())
    host = parts.hostname or ""
    plain_ok = parts.scheme == "http" and _is_loopback(host)
    if not host or not (parts.scheme == "https" or plain_ok):
        raise ValueError(
            "must be the https:// address the web process is reached at, e.g. "
            "'https://alerts.example.org' (RFC 8058 one-click unsubscribe needs HTTPS; http:// is "
            "accepted only for loopback hosts such as http://127.0.0.1:8080 in development)"
        )
    if parts.query or parts.fragment or "%" in value:
        raise ValueError("must be a base address without query, fragment or percent-escapes")
    return value.strip().rstrip("/")


class LinkSettings(BaseSettings):
    """The settings of signed links, shared by the web process and every email sink.

    Both or neither: links are put into emails only when ``public_url`` is set, and
    then ``secret_key`` must be too. The key alone is fine (the web process verifies
    links from emails sent elsewhere).
    """

    model_config = SettingsConfigDict(env_prefix="MOBILISE_", extra="ignore", frozen=True)

    public_url: str | None = None
    """Public base URL of the web process (``MOBILISE_PUBLIC_URL``); unset, emails carry only
    the mailto: unsubscribe."""
    secret_key: SecretStr | None = Field(default=None, validate_default=True)
    """Key that signs links (``MOBILISE_SECRET_KEY``, at least 32 characters; masked when printed).
    Keep it stable: changing it breaks the links of every email already sent."""

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        return check_public_url(value) if value else None

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            value = None  # set to nothing
        if value is None:
            if info.data.get("public_url"):
                raise ValueError(
                    "MOBILISE_PUBLIC_URL is set but MOBILISE_SECRET_KEY is not: links in emails must be "
                    f"signed; set MOBILISE_SECRET_KEY to a random string (e.g. `{_GENERATE}`), "
                    "or unset MOBILISE_PUBLIC_URL"
                )
            return None
        if len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"must be at least {MIN_SECRET_LENGTH} characters of random text; "
                f"generate one with `{_GENERATE}`"
            )
        return value

    def public_links(self) -> PublicLinks | None:
        """The deployment's signed URLs, or None when ``public_url`` is not set."""
        if self.public_url is None or self.secret_key is None:
            return None
        return PublicLinks(self.public_url, self.secret_key)

    def link_signer(self) -> LinkSigner | None:
        """A signer for verifying tokens, or None when there is no secret key."""
        return LinkSigner(self.secret_key) if self.secret_key is not None else None
