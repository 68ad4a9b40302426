"""The connector API: a Connector has a Config model; a Sink delivers records somewhere.

Sources (which produce events) are in :mod:`connectors.source`. The framework around a
connector (:mod:`connectors.runtime` for connectors declared in a file, the pipeline's
delivery stage for the email sinks) does the batching, retries with backoff, dead letters
and metrics, so a connector only says what it did with each record.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas._base import trusted

__all__ = [
    "INTERRUPTED",
    "Connector",
    "ConnectorConfig",
    "Sink",
    "SinkConfig",
    "SinkOutcome",
    "describe_config",
]


class ConnectorConfig(BaseModel):
    """Base of the settings of a connector declared in a connectors file.

    Unknown settings are errors (a typo must not pass silently); secrets are ``SecretStr``
    fields, given in the file as ``${ENV_VAR}`` so that they stay out of it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class SinkConfig(BaseSettings):
    """Base of the settings of the email sinks: read from ``MOBILISE_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="MOBILISE_", extra="ignore", frozen=True, use_attribute_docstrings=True
    )


class SinkOutcome(BaseModel):
    """What a sink did with one record of a batch.

    Exactly one of: accepted (``accepted=True``), a temporary failure (``retryable=True``,
    the framework tries again with backoff) or a permanent failure (the record goes to
    dead-letters with ``error``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_id: str
    """The record this outcome is about (:meth:`Sink.record_id` of it; an alert's alert_id)."""
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

    @classmethod
    def accept(
        cls, record_id: str, *, provider_message_id: str | None = None, duplicate: bool = False
    ) -> SinkOutcome:
        """An acceptance, built without validating: a sink makes one per record it delivered."""
        return trusted(
            cls,
            record_id=record_id,
            accepted=True,
            provider_message_id=provider_message_id,
            duplicate=duplicate,
            retryable=False,
            retry_after=None,
            error=None,
        )

    @classmethod
    def interrupted(cls, record_id: str) -> SinkOutcome:
        """The record was not sent because the worker is stopping (:meth:`Sink.interrupt`): retryable."""
        return trusted(
            cls,
            record_id=record_id,
            accepted=False,
            provider_message_id=None,
            duplicate=False,
            retryable=True,
            retry_after=None,
            error=INTERRUPTED,
        )


INTERRUPTED = "not sent: the worker is stopping, and the next worker to read the batch sends it"
"""The error of a record a sink left unsent after :meth:`Sink.interrupt`."""

ConfigT = TypeVar("ConfigT", bound=BaseModel)
RecordT = TypeVar("RecordT", bound=BaseModel)


class Connector(ABC, Generic[ConfigT]):
    """What every connector is: a name, a Config model, and setup / close hooks.

    Subclasses set ``Config``. The constructor does no I/O; :meth:`setup` opens clients
    and :meth:`close` releases them. The class docstring states the delivery guarantee.
    """

    name: ClassVar[str]
    """The connector's type name, the same as its entry point's."""
    Config: ClassVar[type[BaseModel]]
    """Its settings model."""

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    async def setup(self) -> None:  # optional hook, empty by default
        """Open clients, create directories: anything that may fail belongs here."""

    async def close(self) -> None:  # optional hook, empty by default
        """Release what :meth:`setup` opened."""


class Sink(Connector[ConfigT], Generic[ConfigT, RecordT]):
    """A destination for the records of one topic.

    ``accepts`` is the record model the sink takes; a sink may be declared on any topic
    whose records are of that model (``BaseModel``: any topic). The framework around it
    never hands a sink a record it already accepted when it keeps sent records (the
    delivery stage does, by alert id), and hands records again after a crash otherwise
    (at least once); a sink that passes :meth:`record_id` on to its destination as an
    idempotency key lets the destination drop those repeats.
    """

    accepts: ClassVar[type[BaseModel]] = BaseModel
    """The model of the records this sink takes."""
    interrupted: bool = False
    """:meth:`interrupt` was called: the worker is stopping."""

    def record_id(self, record: RecordT) -> str:
        """The deterministic id of ``record``, the key of its :class:`SinkOutcome`."""
        from .records import record_id

        return record_id(record)

    async def prepare(self, records: Sequence[RecordT]) -> None:  # optional hook, empty by default
        """Begin what delivering ``records`` takes that has no effect outside: rendering, encoding.

        Called with the next batch while the batch before is still in :meth:`deliver`, so
        that this work overlaps the waiting on the destination; a :meth:`deliver` of the
        same records then uses it (:class:`connectors.lookahead.Lookahead`). Return at
        once. Nothing may be sent, written or recorded here: the batch may never be
        delivered, or be delivered in part.
        """

    async def interrupt(self) -> None:
        """The worker is stopping: end the :meth:`deliver` under way soon, not once its batch is done.

        A sink that sends record by record checks :attr:`interrupted` between records:
        what is in flight finishes (a message half handed over cannot be taken back), the
        rest of the batch comes back as :meth:`SinkOutcome.interrupted`, and so does every
        later batch. The delivery stage records what was sent and leaves the rest to the
        next worker. A sink that waited for its batch instead would keep a stopping worker
        as long as the batch takes, and a process manager that kills the worker then leaves
        the whole batch unrecorded, to be sent again to everyone it reached.
        """
        self.interrupted = True

    @abstractmethod
    async def deliver(self, records: Sequence[RecordT]) -> Sequence[SinkOutcome]:
        """Deliver a batch and say what became of each record, in any order.

        Raise :class:`mobilise.errors.RetryableError` when the whole batch failed for a
        temporary reason; return per-record outcomes otherwise. A record missing from
        the outcomes counts as a retryable failure.
        """


def describe_config(config_class: type[BaseModel]) -> list[dict[str, Any]]:
    """The settings of a Config model: name, type, required, default, description."""
    rows = []
    for field_name, info in config_class.model_fields.items():
        annotation = info.annotation
        type_name = getattr(annotation, "__name__", None) or re.sub(
            r"\b(?:\w+\.)+(\w+)", r"\1", str(annotation)
        )
        rows.append(
            {
                "name": field_name,
                "type": type_name,
                "required": info.is_required(),
                "default": None if info.is_required() else info.get_default(call_default_factory=True),
                "description": info.description or "",
            }
        )
    return rows
