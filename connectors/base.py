"""The connector API: a Sink takes alerts and delivers them somewhere."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import Alert

__all__ = ["Sink", "SinkConfig", "SinkOutcome"]


class SinkConfig(BaseSettings):
    """Base of every sink's settings: read from ``MOBILISE_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="MOBILISE_", extra="ignore", frozen=True)


class SinkOutcome(BaseModel):
    """What a sink did with one alert of a batch.

    Exactly one of: accepted (``accepted=True``), a temporary failure (``retryable=True``,
    the framework tries again with backoff) or a permanent failure (the alert goes to
    dead-letters with ``error``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_id: str
    """The alert this outcome is about."""
    accepted: bool
    """The destination took it."""
    provider_message_id: str | None = None
    """The destination's id for it, when accepted."""
    duplicate: bool = False
    """The destination already had it: accepted earlier, nothing sent now."""
    retryable: bool = False
    """A temporary failure: try again later."""
    retry_after: float | None = None
    """Seconds the destination asked us to wait, if it said."""
    error: str | None = None
    """What went wrong, for failures."""


ConfigT = TypeVar("ConfigT", bound=SinkConfig)


class Sink(ABC, Generic[ConfigT]):
    """A destination for alerts.

    Subclasses set ``Config`` (their settings model) and implement :meth:`deliver`.
    The constructor does no I/O; :meth:`setup` opens clients and :meth:`close` releases
    them. The delivery stage around a sink records every accepted alert id and never
    hands the sink an alert it already accepted, so a sink that is itself idempotent by
    alert id (as the outbox is) delivers each alert exactly once; one that is not can
    duplicate only the batch in flight when a worker dies.
    """

    name: ClassVar[str]
    Config: ClassVar[type[SinkConfig]]

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    async def setup(self) -> None:  # optional hook, empty by default
        """Open clients, create directories: anything that may fail belongs here."""

    @abstractmethod
    async def deliver(self, alerts: Sequence[Alert]) -> Sequence[SinkOutcome]:
        """Deliver a batch and say what became of each alert, in any order.

        Raise :class:`mobilise.errors.RetryableError` when the whole batch failed for a
        temporary reason; return per-alert outcomes otherwise. An alert missing from the
        outcomes counts as a retryable failure.
        """

    async def close(self) -> None:  # optional hook, empty by default
        """Release what :meth:`setup` opened."""
