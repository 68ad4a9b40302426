"""The source API: a Source reads events from elsewhere and emits them onto a topic.

A source runs as long as it likes (a feed polls, a webhook serves, an import reads a file
and returns) and hands batches to :meth:`SourceContext.emit`. The framework validates each
record against the topic's schema (invalid ones go to dead-letters with the reason, the
rest go on), produces the valid ones, and only then stores the batch's checkpoint in Kafka,
so a restarted source resumes from the last batch that is safely on the topic. A crash
between the two can emit that batch again: the records' own ids (a case update's event_id,
a subscription's subscriber_id key) make the repeat harmless downstream.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, ClassVar, Generic

from pydantic import BaseModel, ValidationError

from schemas import CaseUpdate, FieldError, Subscription
from streams.records import field_errors, summarise

from .base import ConfigT, Connector

__all__ = ["EmitReport", "Rejection", "Source", "SourceContext", "SourceRecord", "validate_record"]

Checkpoint = dict[str, Any]


@dataclass(frozen=True)
class SourceRecord:
    """One event a source read, before validation."""

    value: Mapping[str, Any] | BaseModel
    """The event's fields (as JSON would spell them), or an already built model."""
    origin: str = ""
    """Where it came from, for people: ``row 12``, a feed item's link, a request id."""


@dataclass(frozen=True)
class Rejection:
    """A record that failed its schema, and why."""

    origin: str
    """The record's :attr:`SourceRecord.origin`."""
    reason: str
    """One line: the fields and what is wrong with them."""
    errors: tuple[FieldError, ...] = ()
    """Field by field."""


@dataclass
class EmitReport:
    """What :meth:`SourceContext.emit` did with a batch."""

    accepted: list[CaseUpdate | Subscription] = field(default_factory=list)
    """The records produced, validated, in order."""
    rejected: list[Rejection] = field(default_factory=list)
    """The records dead-lettered, with their reasons."""


class SourceContext(ABC):
    """What a running source is given by the framework."""

    checkpoint: Checkpoint | None
    """The checkpoint of the last batch safely emitted by an earlier run, or None."""
    stopping: asyncio.Event
    """Set when the source should return."""

    @abstractmethod
    async def emit(self, records: Sequence[SourceRecord], checkpoint: Checkpoint | None = None) -> EmitReport:
        """Validate and produce ``records``; then store ``checkpoint`` (if given).

        Returns once the valid records are acknowledged by the broker and the invalid
        ones are dead-lettered. Raises :class:`mobilise.errors.RetryableError` when the
        broker cannot be reached; nothing of the batch is checkpointed then.
        """

    async def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` or until stopping; True when the source should go on."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False


class Source(Connector[ConfigT], Generic[ConfigT]):
    """A connector that brings events into the pipeline.

    ``produces`` names the topics it may be declared on (``case-updates``,
    ``subscriptions``); the records it emits must validate as that topic's schema.
    """

    produces: ClassVar[tuple[str, ...]] = ("case-updates",)
    """Topic kinds this source may emit to."""

    @abstractmethod
    async def run(self, context: SourceContext) -> None:
        """Read and emit until done or until ``context.stopping`` is set.

        Raise :class:`mobilise.errors.RetryableError` for a temporary failure (the
        framework runs the source again after a backoff, from the last checkpoint) and
        anything else for a permanent one (the connector stops; the others go on).
        """


def _json_default(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot represent {type(value).__name__} as JSON")


def validate_record(
    model: type[CaseUpdate] | type[Subscription], record: SourceRecord
) -> CaseUpdate | Subscription | Rejection:
    """The record as a valid ``model``, or why it is not one."""
    if isinstance(record.value, model):
        return record.value
    try:
        if isinstance(record.value, BaseModel):
            text = record.value.model_dump_json()
        else:
            text = json.dumps(dict(record.value), default=_json_default)
        return model.model_validate_json(text)
    except (TypeError, ValueError) as exc:
        if not isinstance(exc, ValidationError):
            return Rejection(record.origin, f"not representable as JSON: {exc}")
        return Rejection(record.origin, summarise(exc), field_errors(exc))
