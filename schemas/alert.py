"""Alert: one case update for one subscriber (topic ``alerts``, key subscriber_id)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, StringConstraints

from ._base import Event, stable_id
from .case_update import PublicCase
from .geography import Region
from .vocabulary import Language

__all__ = ["Alert", "MatchReason", "alert_id_for"]


def alert_id_for(event_id: str, subscriber_id: str) -> str:
    """The alert id of (event, subscriber): the same on every replay, on every worker."""
    return "alr-" + stable_id(event_id, subscriber_id, length=32)


class MatchReason(Event):
    """Why the person got the alert, shown to them in the email."""

    worldwide: bool = False
    """They follow cases everywhere."""
    region: Region | None = None
    """The followed region the case is in."""
    country: str | None = None
    """The followed country the case is in."""
    interests: tuple[str, ...] = ()
    """Followed interests among the case's issues."""
    brands: tuple[str, ...] = ()
    """Followed brands among the case's brands (as the case spells them)."""


class Alert(Event):
    """A case update addressed to one subscriber, ready for a sink to deliver."""

    schema_version: Literal[1] = 1
    """Version of this schema; a reader rejects versions it does not know."""
    alert_id: str
    """Deterministic: ``alert_id_for(event_id, subscriber_id)``; sinks deduplicate on it."""
    event_id: str
    """The case update's idempotency key."""
    subscriber_id: str
    """Who it is for."""
    email: Annotated[
        str,
        StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320),
        Field(json_schema_extra={"format": "email"}),
    ]
    """Where it goes: the subscription's address, fully checked when the subscription was
    read; here only its shape is checked, as this runs once per alert at every stage."""
    name: str | None = None
    """How to greet them."""
    language: Language
    """Their language."""
    case: PublicCase
    """What changed (the public projection: internal fields are not here)."""
    reason: MatchReason
    """Why it matched."""
    created_at: AwareDatetime
    """When the match was made."""
