"""Subscription: what an activist wants to hear about (topic ``subscriptions``, compacted)."""

from __future__ import annotations

import contextlib
from typing import Annotated, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, AwareDatetime, EmailStr, Field, model_validator

from ._base import Event, stable_id
from .geography import Country, Region
from .vocabulary import CaseStatus, Interest, Language
from .wave import TimeZoneName, check_time_zone

__all__ = ["Frequency", "Subscription", "subscriber_id_for"]

Frequency = Literal["immediate", "daily", "weekly"]
"""How often alerts are sent: each at once, or gathered into one digest email a day or a week,
sent at the person's local morning (an urgent action marked ``bypass_digests`` still goes at once)."""


def subscriber_id_for(email: str) -> str:
    """The subscriber id an address gets when none is given: stable, and not the address.

    Subscribing the same address twice therefore updates one subscription instead of
    creating a second one, and the id can travel in logs where the address may not. An
    internationalised domain gives one id in either form: a subscription keeps the Unicode
    one, while mail systems, and people typing it, may use the ASCII one (``xn--``).
    """
    return "sub-" + stable_id(_comparable(email), length=24)


def _comparable(email: str) -> str:
    address = email.strip()
    if address.isascii() and "xn--" not in address.casefold():
        return address.casefold()  # nothing of it has another form
    # Not an address: an id all the same, which matches no subscription.
    with contextlib.suppress(EmailNotValidError):
        address = validate_email(address, check_deliverability=False).normalized
    return address.casefold()


class Subscription(Event):
    """One activist's subscription. Key on the topic: ``subscriber_id``.

    A subscription names where (at least one region or country, or ``worldwide``) and
    what (at least one interest or brand). A tombstone (null value) for the key erases
    the person: they get nothing more and their data leaves every table.
    """

    schema_version: Literal[1] = 1
    """Version of this schema; a reader rejects versions it does not know."""
    subscriber_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")] = Field(
        default="", validate_default=False
    )
    """Stable id of the person; derived from the email address when left out."""
    email: EmailStr
    """Where alerts go. Never logged at info level."""
    name: Annotated[str, Field(max_length=200)] | None = None
    """How to greet the person."""
    language: Language = "en"
    """Language for alerts; English is the fallback when a case has no text in it."""
    regions: tuple[Region, ...] = ()
    """UN M49 regions to follow."""
    countries: tuple[Country, ...] = ()
    """Countries to follow."""
    worldwide: bool = False
    """Follow cases everywhere."""
    interests: tuple[Interest, ...] = ()
    """Violations to follow."""
    brands: tuple[Annotated[str, Field(min_length=1, max_length=200)], ...] = ()
    """Brands to follow, whatever the violation."""
    statuses: tuple[CaseStatus, ...] = tuple(CaseStatus)
    """Case statuses to be alerted about; all of them unless narrowed."""
    frequency: Frequency = "immediate"
    """When alerts are sent: ``immediate``, or a ``daily`` or ``weekly`` digest (Mondays) at
    the person's local morning, in their ``time_zone`` (else their home country's)."""
    home_country: Country | None = None
    """Where the person lives, if they said: picks the regional variant of an action call
    (a protest in their city) and their local morning; never used for matching."""
    time_zone: Annotated[TimeZoneName, AfterValidator(check_time_zone)] | None = None
    """The person's IANA time zone (``Asia/Dhaka``): a wave at "09:00 local" reaches them at
    9 there. Left out: their home country's zone when it has only one, else UTC."""
    confirmed: bool = False
    """Whether the person confirmed the address (double opt-in); only confirmed people get alerts."""
    created_at: AwareDatetime
    """When the person subscribed."""

    @model_validator(mode="after")
    def _check(self) -> Subscription:
        if not (self.worldwide or self.regions or self.countries):
            raise ValueError(
                "a subscription must say where: name at least one region or country, or set worldwide"
            )
        if not (self.interests or self.brands):
            raise ValueError("a subscription must say what: name at least one interest or brand")
        if not self.statuses:
            raise ValueError("statuses must not be empty; leave it out to get every status")
        if not self.subscriber_id:
            object.__setattr__(self, "subscriber_id", subscriber_id_for(self.email))
        return self
