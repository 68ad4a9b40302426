"""AuditRecord: who published what, when and from where (topic ``audit``, key case_id)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, model_validator

from ._base import Event, stable_id
from .vocabulary import CaseStatus

__all__ = ["AuditAction", "AuditRecord", "audit_id_for"]

AuditAction = Literal["case_update.published", "wave.cancelled"]
"""What was done; new actions are added here."""


def audit_id_for(action: str, event_id: str, actor_token_id: str) -> str:
    """The id of the audit record of ``actor_token_id`` doing ``action`` on ``event_id``.

    For ``wave.cancelled`` the wave id stands in for the event id. A retried request writes
    a record with the same id, so a reader can count each publication once however often
    its client had to try.
    """
    return "aud-" + stable_id(action, event_id, actor_token_id, length=24)


class AuditRecord(Event):
    """One publication by a coordinator (a case update, or a wave called off), through the API or the console.

    Written with the case update it records and acknowledged before the coordinator is
    told the update was published; never compacted or rewritten.
    """

    schema_version: Literal[1] = 1
    """Version of this schema; a reader rejects versions it does not know."""
    audit_id: str
    """Id of the record (:func:`audit_id_for`): the same for every retry of one publication."""
    at: AwareDatetime
    """When the web process accepted the request (its clock)."""
    actor_token_id: str
    """The token that authenticated the request."""
    actor_name: str
    """The token holder's name, as it was when the request was made."""
    action: AuditAction
    """What was done."""
    via: Literal["api", "console"]
    """Through the JSON API or the coordinator console."""
    event_id: str | None = None
    """The case update published (``case_update.published``)."""
    wave_id: str | None = None
    """The wave called off (``wave.cancelled``)."""
    case_id: str
    """The case."""
    status: CaseStatus | None = None
    """The status published (``case_update.published``)."""
    idempotency_key: Annotated[str, Field(max_length=200)] | None = None
    """The request's ``Idempotency-Key`` header (or the console form's key), when it had one."""
    request_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    """Hex SHA-256 of the published update in canonical JSON: a retry under the same
    idempotency key must carry the same update, and this is what it is compared with
    (``case_update.published``)."""
    remote_address: str | None = None
    """The peer address of the request as the web process saw it (a proxy's, behind one)."""

    @model_validator(mode="after")
    def _fields_of_the_action(self) -> AuditRecord:
        if self.action == "case_update.published" and (
            self.event_id is None or self.status is None or self.request_sha256 is None
        ):
            raise ValueError("a case_update.published record names the event_id, status and request_sha256")
        if self.action == "wave.cancelled" and self.wave_id is None:
            raise ValueError("a wave.cancelled record names the wave_id")
        return self
