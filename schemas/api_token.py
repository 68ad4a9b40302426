"""ApiToken: a coordinator's API token, stored hashed (topic ``api-tokens``, compacted, key token_id)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from ._base import Event

__all__ = ["TOKEN_ID_PATTERN", "ApiToken", "TokenRole"]

TOKEN_ID_PATTERN = r"^[a-z0-9]{8,32}$"
"""A token id: lower-case letters and digits, never ``_`` (the token's separator)."""


class TokenRole(StrEnum):
    """What a token may do."""

    COORDINATOR = "coordinator"
    """Publish case updates; read cases and their counts."""
    ADMIN = "admin"
    """Everything a coordinator may, and create, list and revoke tokens."""


class ApiToken(Event):
    """One API token as stored: who holds it, its role and the SHA-256 of its secret.

    The token itself (``mob_<token_id>_<secret>``) is shown once when it is made and never
    stored: whoever can read this topic cannot act with what they read. A token is revoked
    by publishing its record again with ``revoked_at`` set; a revocation is final, a later
    record without it does not bring the token back.
    """

    schema_version: Literal[1] = 1
    """Version of this schema; a reader rejects versions it does not know."""
    token_id: Annotated[str, Field(pattern=TOKEN_ID_PATTERN)]
    """Public identifier of the token, the key on the topic; safe to log and to show."""
    name: Annotated[str, Field(min_length=1, max_length=200)]
    """Who holds it; case updates published with the token carry it as ``published_by``."""
    role: TokenRole
    """What the token may do."""
    secret_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    """Hex SHA-256 of the token's secret part. The secret has 256 random bits, so a fast
    hash is enough: nobody can search that space."""
    created_at: AwareDatetime
    """When the token was made."""
    revoked_at: AwareDatetime | None = None
    """When it stopped working; None while it works."""
