"""AuditRecord: who published what, when and from where (topic ``audit``, key case_id)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from ._base import Event, stable_id
from .vocabulary import CaseStatus

__all__ = ["AuditAction", "AuditRecord", "audit_id_for"]

AuditAction = Literal["case_update.published"]
"""What was done; new actions are added here."""


def audit_id_for(action: str, event_id: str, actor_token_id: str) -> str:
    """The id of the audit record of ``actor_token_id`` doing ``action`` on ``event_id``.

    A retried request writes a record with the same id, so a reader can count each
    publication once however often its client had to try.
    """
    return "aud-" + stable_id(action, event_id, actor_token_id, length=24)


class AuditRecord(Event):
    """One publication by a coordinator, through the API or the console.

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
    event_id: str
    """The case update published."""
    case_id: str
    """Its case."""
    status: CaseStatus
    """Its status."""
    idempotency_key: Annotated[str, Field(max_length=200)] | None = None
    """The request's ``Idempotency-Key`` header (or the console form's key), when it had one."""
    request_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    """Hex SHA-256 of the published update in canonical JSON: a retry under the same
    idempotency key must carry the same update, and this is what it is compared with."""
    remote_address: str | None = None
    """The peer address of the request as the web process saw it (a proxy's, behind one)."""
