"""An alert as an RFC 5322 / MIME message: bytes for files, a message for SMTP.

The bytes are written directly rather than through :class:`email.message.EmailMessage`:
with ``policy.default`` that class parses and refolds every header through its header
registry, which cost milliseconds per alert, more than everything else an alert goes
through. The format is fixed and small (a few headers, a text and an HTML alternative),
so it is spelled out here: UTF-8 bodies in quoted-printable (7-bit clean, so any mail
server takes them), non-ASCII headers in RFC 2047 encoded words, the recipient's domain in
ASCII (:mod:`connectors.addresses`). Only an address whose local part goes beyond ASCII is
written in UTF-8 (RFC 6532): no other form of it exists.

Everyone who gets an update in one language gets the same message but for a few header
values and the lines of the bodies that hold a per-person slot. A
:class:`MessageTemplate` encodes the rest once; per person only those lines are filled
and encoded. Quoted-printable encodes each line on its own (soft breaks never cross a
line end), so a message put together line by line is byte for byte the message encoded
whole.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.parser import Parser
from email.utils import format_datetime, parseaddr
from functools import lru_cache

from schemas import Alert
from schemas._base import stable_id

from .addresses import HEADER_CHARSET, header_address, transport_address
from .rendering import (
    ONE_CLICK,
    PLACEHOLDER_MARK,
    EmailIdentity,
    SharedEmail,
    fill_split,
    personal_substitutions,
    shared_email,
    split_slots,
    unsubscribe_headers,
)

__all__ = [
    "MessageTemplate",
    "alert_bytes",
    "alert_message",
    "message_id",
    "message_template",
    "sender_domain",
]

_PARSER = Parser(policy=policy.default)


@dataclass(frozen=True, slots=True)
class _Body:
    """A body as runs of lines: encoded once where they have no slot, raw where they do."""

    runs: tuple[str | tuple[str, ...], ...]
    """Lines without a slot, quoted-printable already; lines with one, cut at the slots."""
    open_end: bool
    """The last line has a slot and no line end: whether it needs one is known once filled."""

    @classmethod
    def of(cls, text: str) -> _Body:
        lines = text.split("\n")
        last = lines.pop()  # "" when the text ends with a line end
        open_end = PLACEHOLDER_MARK in last
        # The line end before a boundary belongs to the boundary: the body keeps its own last
        # one, added here unless a slot's value may bring it.
        pieces = [line + "\n" for line in lines]
        if last or not lines:  # a text without a line end, the empty one included
            pieces.append(last if open_end else last + "\n")
        runs: list[tuple[bool, str]] = []
        for piece in pieces:
            slotted = PLACEHOLDER_MARK in piece
            if runs and runs[-1][0] == slotted:
                runs[-1] = (slotted, runs[-1][1] + piece)
            else:
                runs.append((slotted, piece))
        return cls(
            runs=tuple(split_slots(run) if slotted else _quoted_printable(run) for slotted, run in runs),
            open_end=open_end,
        )

    def render(self, values: dict[str, str]) -> str:
        texts = [run if isinstance(run, str) else fill_split(run, values) for run in self.runs]
        # Every run before the last ends with a line end; an empty last value leaves it there.
        if self.open_end and not texts[-1].endswith("\n") and (texts[-1] or len(texts) == 1):
            texts[-1] += "\n"
        return "".join(
            text if isinstance(run, str) else _quoted_printable(text)
            for run, text in zip(self.runs, texts, strict=True)
        )


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """The message of one update in one language, all but the per-person parts encoded."""

    head: str
    """From, up to the To header."""
    middle: str
    """Subject and Date, between To and Message-ID."""
    domain: str
    """The sender's domain, for the Message-ID."""
    tail: str
    """Every header after the alert id, the MIME headers and the text part's header."""
    text: _Body
    between: str
    """The end of the text part and the header of the HTML part."""
    html: _Body
    end: str
    """The closing boundary."""

    def render(self, alert: Alert, identity: EmailIdentity, values: dict[str, str]) -> bytes:
        """The message of ``alert`` with ``values`` (its personal substitutions) in its slots.

        Raises:
            ValueError: the address has no ``@``, or is no address at all.

        """
        if "@" not in alert.email:
            raise ValueError(f"the recipient address of {alert.alert_id} has no '@'")
        unsubscribe = unsubscribe_headers(identity, alert.subscriber_id)["List-Unsubscribe"]
        return "".join(
            (
                self.head,
                f"To: {header_address(alert.name, alert.email)}\n",
                self.middle,
                f"Message-ID: {_message_id(alert.alert_id, self.domain)}\n",
                _header("List-Unsubscribe", unsubscribe),
                _header("X-Mobilise-Alert-Id", alert.alert_id),
                self.tail,
                self.text.render(values),
                self.between,
                self.html.render(values),
                self.end,
            )
        ).encode("utf-8")  # ASCII but for a local part beyond it, which the header must carry


@lru_cache(maxsize=256)
def message_template(
    shared: SharedEmail, identity: EmailIdentity, event_id: str, case_id: str, created_at: datetime
) -> MessageTemplate:
    """The :class:`MessageTemplate` of ``shared`` (cached: one per update, language and batch time)."""
    from_line, domain = _sender(identity.from_email)
    # "=_" cannot occur in quoted-printable text ("=" is always "=XX" there), so no body
    # line can be mistaken for the boundary.
    boundary = f"=_mobilise_{stable_id(event_id, shared.language, shared.subject, length=24)}"
    one_click = "".join(_header(name, value) for name, value in ONE_CLICK.items()) if identity.links else ""
    return MessageTemplate(
        head=from_line,
        middle=_header("Subject", shared.subject) + f"Date: {format_datetime(created_at.astimezone(UTC))}\n",
        domain=domain,
        tail="".join(
            (
                one_click,
                _header("X-Mobilise-Case-Id", case_id),
                _header("X-Mobilise-Event-Id", event_id),
                f"Content-Language: {shared.language}\n",
                "MIME-Version: 1.0\n",
                # Folded: on one line it would be 82 characters, over RFC 5322's 78.
                f'Content-Type: multipart/alternative;\n boundary="{boundary}"\n',
                "\n",
                f"--{boundary}\n",
                'Content-Type: text/plain; charset="utf-8"\n',
                "Content-Transfer-Encoding: quoted-printable\n",
                "\n",
            )
        ),
        text=_Body.of(shared.text),
        # The line end before a boundary belongs to the boundary, not to the body.
        between="".join(
            (
                f"\n--{boundary}\n",
                'Content-Type: text/html; charset="utf-8"\n',
                "Content-Transfer-Encoding: quoted-printable\n",
                "\n",
            )
        ),
        html=_Body.of(shared.html),
        end=f"\n--{boundary}--\n",
    )


def alert_bytes(alert: Alert, identity: EmailIdentity) -> bytes:
    """The message of ``alert`` (text and HTML alternatives), with LF line ends.

    It says what :func:`connectors.rendering.render_alert` renders. The Message-ID, the
    Date and the MIME boundary derive from the alert, so the same alert always gives the
    same bytes.

    Raises:
        ValueError: the address has no ``@``, or a case text holds a reserved token.
        jinja2.TemplateError: a template is broken.

    """
    shared = shared_email(alert, identity)
    template = message_template(shared, identity, alert.event_id, alert.case.case_id, alert.created_at)
    return template.render(alert, identity, personal_substitutions(alert, identity))


def message_id(alert: Alert, identity: EmailIdentity) -> str:
    """The Message-ID header of ``alert``'s message, angle brackets included."""
    return _message_id(alert.alert_id, sender_domain(identity.from_email))


def sender_domain(from_email: str) -> str:
    """The domain of the configured sender, in ASCII, for Message-IDs (``mobilise.local`` if none)."""
    return _sender(from_email)[1]


def _message_id(alert_id: str, domain: str) -> str:
    return f"<{alert_id}@{domain}>"


def alert_message(alert: Alert, identity: EmailIdentity) -> EmailMessage:
    """The same message as :func:`alert_bytes`, parsed, for transports that take a message."""
    # Parsed from text: the bytes parser reads UTF-8 in a header (RFC 6532) as unknown bytes.
    message = _PARSER.parsestr(alert_bytes(alert, identity).decode("utf-8"))
    assert isinstance(message, EmailMessage)  # what policy.default parses into
    return message


@lru_cache(maxsize=16)
def _sender(from_email: str) -> tuple[str, str]:
    # The same configured sender for every alert: parse and format it once.
    sender = parseaddr(from_email)
    domain = transport_address(sender[1]).partition("@")[2]  # for the Message-ID: in ASCII
    return f"From: {header_address(*sender)}\n", domain or "mobilise.local"


def _header(name: str, value: str) -> str:
    """The header line(s) of ``name: value``, with its line end."""
    flat = " ".join(value.split())
    if not flat.isascii():
        return _encoded_header(name, flat)
    if len(name) + 2 + len(flat) <= 78:
        return f"{name}: {flat}\n"
    # Fold at spaces to keep lines near 78 characters (RFC 5322 §2.2.3); a longer word
    # (a URL) stays whole, on a line of its own, under the hard limit of 998.
    words = flat.split(" ")
    lines = [f"{name}: {words[0]}"]
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) > 78:
            lines.append(" " + word)
        else:
            lines[-1] += " " + word
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=1024)
def _encoded_header(name: str, flat: str) -> str:
    # Cached: encoding a non-ASCII value (RFC 2047) costs more than the rest of a message,
    # and such values (the subject of an update in French) repeat for everyone.
    return f"{name}: " + Header(flat, HEADER_CHARSET, header_name=name).encode(linesep="\n") + "\n"


def _quoted_printable(text: str) -> str:
    return binascii.b2a_qp(text.encode("utf-8"), istext=True).decode("ascii")
