"""A rendered alert as an RFC 5322 / MIME message: bytes for files, a message for SMTP.

The bytes are written directly rather than through :class:`email.message.EmailMessage`:
with ``policy.default`` that class parses and refolds every header through its header
registry, which cost milliseconds per alert, more than everything else an alert goes
through. The format is fixed and small (a few headers, a text and an HTML alternative),
so it is spelled out here: UTF-8 bodies in quoted-printable (7-bit clean, so any mail
server takes them), non-ASCII headers in RFC 2047 encoded words.
"""

from __future__ import annotations

import binascii
from datetime import UTC
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache

from schemas import Alert

from .rendering import EmailIdentity, RenderedEmail

__all__ = ["to_bytes", "to_message"]

_PARSER = BytesParser(policy=policy.default)


def to_bytes(email: RenderedEmail, identity: EmailIdentity, *, date_source: Alert) -> bytes:
    """The message of ``email`` (text and HTML alternatives), with LF line ends.

    The Message-ID, the Date and the MIME boundary derive from the alert, so rendering
    the same alert twice gives the same bytes.

    Raises:
        ValueError: an address has no ``@``.

    """
    from_line, sender_domain = _sender(identity.from_email)
    if "@" not in email.to_email:
        raise ValueError(f"the recipient address of {email.alert_id} has no '@'")
    # "=_" cannot occur in quoted-printable text ("=" is always "=XX" there), so no body
    # line can be mistaken for the boundary.
    boundary = f"=_mobilise_{email.alert_id}"
    lines = [
        from_line,
        f"To: {_address(email.to_name or '', email.to_email)}",
        _header("Subject", email.subject),
        f"Date: {format_datetime(date_source.created_at.astimezone(UTC))}",
        f"Message-ID: <{email.alert_id}@{sender_domain}>",
        *(_header(name, value) for name, value in email.headers.items()),
        f"Content-Language: {email.language}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "",
        f"--{boundary}",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
        "",
        _quoted_printable(email.text),
        f"--{boundary}",
        'Content-Type: text/html; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
        "",
        _quoted_printable(email.html),
        f"--{boundary}--",
        "",
    ]
    return "\n".join(lines).encode("ascii")


def to_message(email: RenderedEmail, identity: EmailIdentity, *, date_source: Alert) -> EmailMessage:
    """The same message as :func:`to_bytes`, parsed, for transports that take a message."""
    message = _PARSER.parsebytes(to_bytes(email, identity, date_source=date_source))
    assert isinstance(message, EmailMessage)  # what policy.default parses into
    return message


@lru_cache(maxsize=16)
def _sender(from_email: str) -> tuple[str, str]:
    # The same configured sender for every alert: parse and format it once.
    sender = parseaddr(from_email)
    return f"From: {_address(*sender)}", sender[1].partition("@")[2] or "mobilise.local"


def _address(name: str, address: str) -> str:
    # A display name is one line; formataddr quotes it, or encodes it when not ASCII.
    return formataddr((" ".join(name.split()), address), charset="utf-8")


@lru_cache(maxsize=1024)
def _header(name: str, value: str) -> str:
    # Cached: the subject is the same for everyone who gets an update in one language, and
    # encoding a non-ASCII one (RFC 2047) costs more than the rest of the message.
    flat = " ".join(value.split())
    if not flat.isascii():
        return f"{name}: " + Header(flat, "utf-8", header_name=name).encode(linesep="\n")
    # Fold at spaces to keep lines near 78 characters (RFC 5322 §2.2.3); a longer word
    # (a URL) stays whole, on a line of its own, under the hard limit of 998.
    words = flat.split(" ")
    lines = [f"{name}: {words[0]}"]
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) > 78:
            lines.append(" " + word)
        else:
            lines[-1] += " " + word
    return "\n".join(lines)


def _quoted_printable(text: str) -> str:
    # The line end before a boundary belongs to the boundary: keep the body's own last one.
    body = text if text.endswith("\n") else text + "\n"
    return binascii.b2a_qp(body.encode("utf-8"), istext=True).decode("ascii")
