"""DeadLetter: a record the pipeline could not process, kept with the reason (topic ``dead-letters``)."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Base64Bytes

from ._base import Event

__all__ = ["DeadLetter", "FieldError"]


class FieldError(Event):
    """One validation failure, naming the field."""

    loc: str
    """Dotted path of the field, e.g. ``action_call.deadline``; empty for the whole record."""
    msg: str
    """What is wrong and, where possible, how to fix it."""
    type: str
    """Pydantic's error type, e.g. ``missing`` or ``json_invalid``."""


class DeadLetter(Event):
    """A record that could not be read or delivered, with everything needed to replay it."""

    schema_version: Literal[1] = 1
    """Version of this schema; a reader rejects versions it does not know."""
    stage: str
    """Which part of the pipeline gave up, e.g. ``fanout`` or ``delivery:outbox``."""
    reason: str
    """One line for a person: what went wrong."""
    errors: tuple[FieldError, ...] = ()
    """The validation errors, field by field, when the record failed its schema."""
    topic: str
    """Topic the record was read from."""
    partition: int
    """Its partition."""
    offset: int
    """Its offset."""
    key: Base64Bytes | None = None
    """The record's key, exactly as read (base64 in JSON)."""
    value: Base64Bytes | None = None
    """The record's value, exactly as read (base64 in JSON)."""
    at: AwareDatetime
    """When it was dead-lettered."""
