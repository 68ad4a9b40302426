"""Reading records off topics into models, and dead-lettering what cannot be read."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any, Protocol, TypeAlias, TypeVar

import faust
import structlog
from pydantic import ValidationError

from schemas import DeadLetter, FieldError
from schemas._base import Event

from .metrics import PipelineMetrics

__all__ = [
    "Carrier",
    "DeadLetters",
    "RawEvent",
    "dead_letter",
    "dead_letter_of",
    "field_errors",
    "read_model",
    "summarise",
]

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=Event)

RawEvent: TypeAlias = "faust.EventT[bytes]"
"""A record as read from a topic: key and value are the bytes on the wire."""


def field_errors(exc: ValidationError) -> tuple[FieldError, ...]:
    """Pydantic's errors as FieldErrors naming each field by its dotted path."""
    return tuple(
        FieldError(loc=".".join(str(part) for part in e["loc"]), msg=e["msg"], type=e["type"])
        for e in exc.errors(include_url=False)
    )


def summarise(exc: ValidationError) -> str:
    """One line naming every bad field."""
    parts = []
    for error in field_errors(exc)[:5]:
        parts.append(f"{error.loc or '(record)'}: {error.msg}")
    more = exc.error_count() - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def read_model(model: type[M], value: bytes | None) -> M:
    """Validate a record's value as ``model`` (strict JSON).

    Raises:
        ValidationError: the bytes are not JSON, or not a valid ``model``.

    """
    return model.model_validate_json(value if value is not None else b"null")


def dead_letter(
    *,
    stage: str,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    errors: tuple[FieldError, ...] = (),
) -> DeadLetter:
    """A dead letter of the record ``key``/``value`` read at ``topic[partition]@offset``, kept byte for byte.

    A record that never was on a topic (one a source connector could not validate) has
    partition and offset -1 and the topic it was meant for.
    """
    return DeadLetter(
        stage=stage,
        reason=reason,
        errors=errors,
        topic=topic,
        partition=partition,
        offset=offset,
        key=base64.b64encode(key) if key is not None else None,
        value=base64.b64encode(value) if value is not None else None,
        at=datetime.now(UTC),
    )


class _Read(Protocol):
    """A record as read: faust's and aiokafka's messages both have these."""

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any


class Carrier(Protocol):
    """What carries a record as read: a faust event, or a stand-in for a record read earlier."""

    @property
    def message(self) -> _Read:
        """The record."""
        ...


def dead_letter_of(
    message: _Read,
    *,
    stage: str,
    reason: str,
    errors: tuple[FieldError, ...] = (),
    key: bytes | None = None,
    value: bytes | None = None,
) -> DeadLetter:
    """The dead letter of ``message`` (or of ``key`` and ``value`` in its place), logged.

    The original key and value travel byte for byte, with the topic, partition and
    offset, so the record can be found, fixed and replayed.
    """
    raw_key = key if key is not None else message.key if isinstance(message.key, bytes) else None
    raw_value = value if value is not None else message.value
    letter = dead_letter(
        stage=stage,
        reason=reason,
        errors=errors,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=raw_key,
        value=raw_value if isinstance(raw_value, bytes) else None,
    )
    log.warning(
        "record.dead_lettered",
        stage=stage,
        reason=reason,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
    )
    return letter


class DeadLetters:
    """Sends unprocessable records to the dead-letters topic and logs them."""

    def __init__(self, topic: faust.TopicT, *, metrics: PipelineMetrics | None = None) -> None:
        self._topic = topic
        self._metrics = metrics

    async def send(
        self,
        event: Carrier,
        *,
        stage: str,
        reason: str,
        errors: tuple[FieldError, ...] = (),
        key: bytes | None = None,
        value: bytes | None = None,
    ) -> None:
        """Dead-letter ``event`` (or ``key`` and ``value`` in its place) and wait for the broker's ack.

        The original key and value travel byte for byte, with the topic, partition and
        offset, so the record can be found, fixed and replayed.
        """
        letter = dead_letter_of(
            event.message, stage=stage, reason=reason, errors=errors, key=key, value=value
        )
        future = await self._topic.send(key=letter.key, value=letter.model_dump_json().encode("utf-8"))
        await future
        if self._metrics is not None:
            self._metrics.dead_letters.labels(stage).inc()

    async def invalid(self, event: RawEvent, *, stage: str, exc: ValidationError) -> None:
        """Dead-letter a record that failed its schema, naming the fields."""
        await self.send(event, stage=stage, reason=summarise(exc), errors=field_errors(exc))

    async def read(self, model: type[M], event: RawEvent, *, stage: str) -> M | None:
        """``event``'s value as ``model``; None if it is not one, once dead-lettered naming the fields."""
        try:
            return read_model(model, event.message.value)
        except ValidationError as exc:
            await self.invalid(event, stage=stage, exc=exc)
            return None
