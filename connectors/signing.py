"""How the webhook connectors sign requests: the sink signs them, the source checks them.

Both sides share a secret (any string; at least 16 characters in the connectors' settings,
``openssl rand -hex 32`` makes a good one). Every request carries two headers; with the
secret ``example-secret-0123456789`` and the body ``{"case_id":"bd-1"}`` signed at
1767225600 (a test vector)::

    X-Mobilise-Timestamp: 1767225600
    X-Mobilise-Signature: v1=de50611ae2508e8211075957b3522c5a439cb9929885c5088e036bcdbee28713

- ``X-Mobilise-Timestamp`` is the time of signing in Unix seconds, written as a decimal
  integer (ASCII digits only: no sign, no fraction, no exponent).
- ``X-Mobilise-Signature`` is ``v1=`` followed by the lowercase hex HMAC-SHA256, keyed with
  the secret's UTF-8 bytes, of the *signed payload*: the timestamp header's exact text, one
  ASCII full stop (``.``), then the raw request body bytes as sent (no decoding, no
  re-serialising, no trimming). In Python::

      payload = timestamp.encode("ascii") + b"." + body
      signature = "v1=" + hmac.new(secret, payload, hashlib.sha256).hexdigest()

  The header may carry several comma-separated values (``v1=<hex>,v1=<hex>``) so that a
  sender can sign with an old and a new secret while the receiver switches from one to the
  other; the request is authentic when any ``v1`` value matches. Values with another scheme
  (``v0=…``) are ignored, which leaves room for a future version.

A receiver recomputes the signature from the body it read, compares it in constant time
(:func:`hmac.compare_digest`) and refuses the request when no value matches, or when the
timestamp is further than a tolerance (five minutes by default) from its own clock, in the
past or in the future: so a captured request cannot be replayed later, and clocks must be
roughly right (NTP) on both sides. Within the tolerance a replay is possible; the
receiver drops it by the record's own idempotency key (``X-Mobilise-Record-Id`` from the
sink, a case update's ``event_id`` for the source).

The functions here are pure: the caller passes the time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

from pydantic import SecretStr

from mobilise.errors import SkippableError

__all__ = [
    "DEFAULT_TOLERANCE",
    "MIN_SECRET_LENGTH",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SignatureError",
    "check_secret",
    "sign",
    "signature",
    "verify",
]

TIMESTAMP_HEADER = "X-Mobilise-Timestamp"
"""The header with the time of signing, in Unix seconds."""
SIGNATURE_HEADER = "X-Mobilise-Signature"
"""The header with the ``v1=<hex>`` signature(s)."""
DEFAULT_TOLERANCE = 300
"""Seconds a timestamp may be away from the receiver's clock, either way."""
MIN_SECRET_LENGTH = 16
"""Fewest characters the connectors accept in a secret."""

_SCHEME = "v1"
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_HOW = (
    f"sign each request with {TIMESTAMP_HEADER}: <Unix seconds> and "
    f"{SIGNATURE_HEADER}: v1=<hex HMAC-SHA256 of the secret over '<timestamp>.' + body>"
)


def check_secret(secret: SecretStr) -> SecretStr:
    """``secret`` if it is long enough to sign with (a settings validator).

    Raises:
        ValueError: it has fewer than :data:`MIN_SECRET_LENGTH` characters (the message
            does not repeat it).

    """
    length = len(secret.get_secret_value())
    if length < MIN_SECRET_LENGTH:
        raise ValueError(
            f"must be at least {MIN_SECRET_LENGTH} characters, not {length}: use a random string, "
            "e.g. the output of `openssl rand -hex 32`"
        )
    return secret


class SignatureError(SkippableError):
    """A request whose signature headers are missing, malformed, stale or wrong."""


def signature(secret: bytes, body: bytes, timestamp: str) -> str:
    """The lowercase hex HMAC-SHA256 of ``timestamp + "." + body`` keyed with ``secret``."""
    payload = timestamp.encode("ascii") + b"." + body
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, timestamp: int) -> dict[str, str]:
    """The signature headers of a request with ``body``, signed at ``timestamp``.

    Args:
        secret: The shared secret (UTF-8 bytes of the configured string).
        body: The exact bytes that will be sent as the request body.
        timestamp: The time of signing, in Unix seconds.

    Returns:
        ``X-Mobilise-Timestamp`` and ``X-Mobilise-Signature``, to add to the request.

    """
    if timestamp < 0:
        raise ValueError(f"timestamp must be Unix seconds (not negative), not {timestamp!r}")
    text = str(int(timestamp))
    return {TIMESTAMP_HEADER: text, SIGNATURE_HEADER: f"{_SCHEME}={signature(secret, body, text)}"}


def verify(
    secret: bytes,
    body: bytes,
    headers: Mapping[str, str],
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> None:
    """Check that ``body`` was signed with ``secret`` less than ``tolerance`` seconds from ``now``.

    Args:
        secret: The shared secret (UTF-8 bytes of the configured string).
        body: The raw request body, as received.
        headers: The request headers; names are matched case-insensitively.
        now: The receiver's current time, in Unix seconds.
        tolerance: How far the timestamp may be from ``now``, in the past or the future.

    Raises:
        SignatureError: a header is missing, the timestamp is not an integer or is out of
            the tolerance, the signature header has no ``v1=`` value, or no value matches.
            The message says which, and what the sender should do; it never contains the
            secret or the expected signature.

    """
    by_name = {name.lower(): value for name, value in headers.items()}
    timestamp = by_name.get(TIMESTAMP_HEADER.lower())
    signatures = by_name.get(SIGNATURE_HEADER.lower())
    missing = [
        name for name, value in ((TIMESTAMP_HEADER, timestamp), (SIGNATURE_HEADER, signatures)) if not value
    ]
    if timestamp is None or signatures is None or missing:
        raise SignatureError(f"missing header {' and '.join(missing)}: {_HOW}")
    timestamp = timestamp.strip()
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError(
            f"malformed {TIMESTAMP_HEADER} {timestamp[:40]!r}: it must be the time of signing in "
            "Unix seconds, as an integer (e.g. 1767225600)"
        )
    age = now - int(timestamp)
    if age > tolerance:
        raise SignatureError(
            f"stale {TIMESTAMP_HEADER} {timestamp}: signed {age:.0f} seconds ago, more than the "
            f"tolerance of {tolerance:g} seconds; sign each request (again) when sending it, "
            "and check that the sender's clock is right"
        )
    if -age > tolerance:
        raise SignatureError(
            f"{TIMESTAMP_HEADER} {timestamp} is {-age:.0f} seconds in the future, more than the "
            f"tolerance of {tolerance:g} seconds: check that the sender's clock is right (NTP)"
        )
    candidates = [
        value.strip()[len(_SCHEME) + 1 :]
        for value in signatures.split(",")
        if value.strip().startswith(f"{_SCHEME}=")
    ]
    if not candidates:
        raise SignatureError(f"malformed {SIGNATURE_HEADER}: no '{_SCHEME}=<hex>' value in it; {_HOW}")
    expected = signature(secret, body, timestamp).encode("ascii")
    # Compared as bytes: compare_digest refuses str with non-ASCII characters.
    if not any(
        hmac.compare_digest(expected, candidate.lower().encode("ascii", "replace"))
        for candidate in candidates
    ):
        raise SignatureError(
            f"bad signature: no {_SCHEME} value of {SIGNATURE_HEADER} matches the body and timestamp; "
            "check that the sender uses the same secret and signs the exact body bytes it sends, "
            f"prefixed with '<{TIMESTAMP_HEADER}>.'"
        )
