"""The settings every email sink shares: the sender, the unsubscribe mailbox, signed links.

A sink that sends email subclasses :class:`EmailSinkConfig` for its own settings and
builds its :class:`~connectors.rendering.EmailIdentity` with :meth:`EmailSinkConfig.identity`,
so the variables mean the same for every email sink and are validated in one place.
"""

from __future__ import annotations

from email.utils import parseaddr
from typing import Any, ClassVar

from pydantic import Field, ValidationError, field_validator

from mobilise.errors import ConfigurationError
from mobilise.links import LinkSettings
from mobilise.settings import describe_problems

from .base import SinkConfig
from .rendering import EmailIdentity

__all__ = ["EmailSinkConfig"]


class EmailSinkConfig(SinkConfig, LinkSettings):
    """The email part of a sink's settings, and the signed-link settings it shares with the web.

    ``MOBILISE_FROM_EMAIL``, ``MOBILISE_UNSUBSCRIBE_EMAIL``, ``MOBILISE_PUBLIC_URL``,
    ``MOBILISE_SECRET_KEY``. With ``MOBILISE_PUBLIC_URL`` (and the secret key, which it
    requires) every email carries a signed one-click unsubscribe link (RFC 8058) in
    ``List-Unsubscribe`` and in its footer; without it, the mailto: address only.
    """

    settings_name: ClassVar[str] = "email sink"
    """How error messages name these settings."""
    secret_fields: ClassVar[frozenset[str]] = frozenset({"secret_key"})
    """Fields whose values never appear in error messages."""

    from_email: str = Field(default="Mobilise alerts <alerts@example.org>", min_length=3)
    """The From header, e.g. ``Network alerts <alerts@example.org>``."""
    unsubscribe_email: str = Field(default="unsubscribe@example.org", pattern=r"@")
    """The mailbox named in List-Unsubscribe and in the footer."""

    def __init__(self, **values: Any) -> None:
        """Read the settings; a bad one raises ConfigurationError naming its variable."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            problems = describe_problems(exc, hidden=self.secret_fields)
            raise ConfigurationError(
                f"invalid {self.settings_name} settings: " + "; ".join(problems)
            ) from exc

    @field_validator("from_email")
    @classmethod
    def _has_a_mailbox(cls, value: str) -> str:
        if "@" not in parseaddr(value)[1]:
            raise ValueError("must be an address, e.g. 'Network alerts <alerts@example.org>'")
        return value

    def identity(self) -> EmailIdentity:
        """Who the emails come from, and how people leave, as rendering needs it."""
        return EmailIdentity(
            from_email=self.from_email, unsubscribe_email=self.unsubscribe_email, links=self.public_links()
        )
