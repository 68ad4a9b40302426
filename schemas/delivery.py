"""DeliveryEvent: what happened to an alert at a sink (topic ``deliveries``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime

from ._base import Event

__all__ = ["DeliveryEvent", "DeliveryOutcome"]


class DeliveryOutcome(StrEnum):
    """The fate of one alert at one sink."""

    ACCEPTED = "accepted"
    """The sink (or the provider behind it) took the message."""
    DUPLICATE = "duplicate"
    """Already delivered earlier; nothing was sent this time."""
    FAILED = "failed"
    """A retryable failure; the alert will be tried again."""
    DEAD_LETTERED = "dead_lettered"
    """A permanent failure; the alert went to dead-letters."""


class DeliveryEvent(Event):
    """One outcome of one alert at one sink. Key on the topic: ``subscriber_id``."""

    schema_version: Literal[1] = 1
    """Version of this schema; a reader rejects versions it does not know."""
    alert_id: str
    """The alert concerned."""
    event_id: str
    """The case update behind the alert."""
    case_id: str
    """The case, for per-case counts."""
    subscriber_id: str
    """The recipient's id (never the address)."""
    sink: str
    """Name of the sink connector."""
    outcome: DeliveryOutcome
    """What happened."""
    provider_message_id: str | None = None
    """The provider's id for the message, or the outbox file name."""
    attempts: int = 1
    """How many attempts it took."""
    detail: str | None = None
    """The error, for failures."""
    at: AwareDatetime
    """When it happened."""
