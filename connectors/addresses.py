"""Email addresses as mail transports take them: an internationalised domain in ASCII.

The schemas accept every address email-validator accepts, and keep its normal form: a
domain in Unicode (``ana@exämple.org``, even when it was given as ``ana@xn--exmple-cua.org``)
and a local part that may hold letters beyond ASCII (``josé@example.org``). SMTP envelopes,
message headers and provider APIs want ASCII: the domain goes as its IDNA form
(``ana@xn--exmple-cua.org``), which every server takes. A local part beyond ASCII has no
ASCII form: it needs a server with SMTPUTF8 (RFC 6531) and UTF-8 in the header (RFC 6532).
"""

from __future__ import annotations

from email.charset import SHORTEST, Charset
from email.utils import formataddr
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

__all__ = ["HEADER_CHARSET", "header_address", "needs_smtputf8", "transport_address"]

HEADER_CHARSET = Charset("utf-8")
"""UTF-8 for encoded words in headers (RFC 2047), the shorter of Q and B for each.

Set here rather than read from :mod:`email.charset`'s registry, which other libraries change
for the whole process (apprise, which the chat connector loads, makes it quoted-printable):
the same alert gives the same bytes whatever else the worker runs.
"""
HEADER_CHARSET.header_encoding = SHORTEST


def transport_address(address: str) -> str:
    """``address`` with its domain in ASCII; the local part as it is.

    Raises:
        ValueError: it is no address email-validator accepts (the schemas let none through).

    """
    return address if address.isascii() else _transport_address(address)


@lru_cache(maxsize=4096)
def _transport_address(address: str) -> str:
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"cannot send to {address!r}: {exc}") from exc
    return checked.ascii_email or f"{checked.local_part}@{checked.ascii_domain}"


def needs_smtputf8(address: str) -> bool:
    """Whether a transport address (see :func:`transport_address`) can only go with SMTPUTF8."""
    return not address.isascii()


def header_address(name: str | None, address: str) -> str:
    """A To or From value: the display name on one line (quoted, or encoded beyond ASCII), the address.

    The address is its transport form; a local part beyond ASCII stays UTF-8 (RFC 6532).
    """
    address = transport_address(address)
    shown = " ".join((name or "").split())
    if address.isascii():
        return formataddr((shown, address), charset=HEADER_CHARSET)
    if not shown:
        return address
    # formataddr refuses an address beyond ASCII: it formats the name, the address goes after it.
    return formataddr((shown, "_@_"), charset=HEADER_CHARSET).removesuffix("<_@_>") + f"<{address}>"
