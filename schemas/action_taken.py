"""ActionTaken: a person says they did what an action call asked (topic ``actions-taken``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from ._base import Event, stable_id
from .geography import Country, Region

__all__ = ["ActionTaken", "taken_id_for"]


def taken_id_for(action_id: str, subscriber_id: str) -> str:
    """Deterministic: one id per person and action, so a person counts once per action."""
    return stable_id("taken", action_id, subscriber_id)


class ActionTaken(Event):
    """One person's "I did this" for one action call.

    Topic ``actions-taken``: key ``subscriber_id``, so it is on the partition of the
    person's subscription (the worker keeps who acted on which case with their shard).
    The same person clicking twice gives the same ``taken_id``; counters count ids.
    """

    schema_version: Literal[1] = 1
    """Version of this schema; a reader rejects versions it does not know."""
    taken_id: str
    """``taken_id_for(action_id, subscriber_id)``."""
    action_id: str
    """The action call (``schemas.action_id_for``)."""
    case_id: str
    """The case it was about."""
    event_id: str
    """The case update whose email carried the link."""
    subscriber_id: str
    """Who acted."""
    what: Literal["as_asked", "something_else"] = "as_asked"
    """Did they do what was asked, or something else for the case."""
    note: Annotated[str, Field(max_length=1000)] | None = None
    """What they did, in their words (shown to coordinators only)."""
    home_country: Country | None = None
    """Where they live, if they said (for the counters per region)."""
    region: Region | None = None
    """The UN M49 region of ``home_country``."""
    at: AwareDatetime
    """When they said so."""
