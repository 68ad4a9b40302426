"""Coordinators' API tokens: made once, stored hashed, checked in constant time, revocable.

A token reads ``mob_<token_id>_<secret>``: ``token_id`` (16 hex digits) names it in logs,
lists and the audit trail; ``secret`` is 32 bytes from :mod:`secrets`, URL-safe base64.
Only the secret's SHA-256 is published (:class:`~schemas.ApiToken` on the compacted
``api-tokens`` topic), so the token is shown once, to whoever made it, and never again.

Every web process keeps a :class:`TokenRegistry`, a fold of that topic: a revocation
(the record again with ``revoked_at``) takes effect in a process as soon as its view has
read it, and at once in the process that published it (:meth:`TokenRegistry.apply`).
A revocation is final: a later record of the same token without ``revoked_at`` (an old
copy replayed, a mistake) does not bring it back.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import structlog
from pydantic import ValidationError

from mobilise.snapshot import StoredRecord
from schemas import ApiToken, TokenRole

__all__ = [
    "TOKEN_PREFIX",
    "Authentication",
    "IssuedToken",
    "TokenRegistry",
    "hash_secret",
    "issue_token",
    "parse_token",
]

log = structlog.get_logger(__name__)

TOKEN_PREFIX = "mob"
"""First part of every token, so that a leaked one is recognisable (secret scanners, logs)."""

_SECRET_BYTES = 32
_TOKEN = re.compile(rf"^{TOKEN_PREFIX}_([a-z0-9]{{8,32}})_([A-Za-z0-9_-]{{43,128}})$")
# Compared with when the token id is unknown, so that an unknown id costs the same as a
# wrong secret and the timing tells nothing about which ids exist.
_NO_SUCH_HASH = hashlib.sha256(b"no such token").hexdigest()

Failure = Literal["malformed", "unknown", "mismatch", "revoked"]


@dataclass(frozen=True)
class IssuedToken:
    """A token just made: the text to hand over once, and the record to publish."""

    token: str
    """``mob_<token_id>_<secret>``; shown once, never stored."""
    record: ApiToken
    """What goes on the ``api-tokens`` topic (the hash, not the secret)."""


@dataclass(frozen=True)
class Authentication:
    """The outcome of checking a presented token: the token's record, or why not."""

    token: ApiToken | None
    """The record of a valid, unrevoked token; None otherwise."""
    failure: Failure | None = None
    """Why the token was refused: not a token at all, an unknown id, a wrong secret, revoked."""
    token_id: str | None = None
    """The id the presented token named, when it had the token's shape (safe to log)."""


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of a token's secret part, as stored in :attr:`ApiToken.secret_sha256`."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_token(presented: str) -> tuple[str, str] | None:
    """``(token_id, secret)`` of a string shaped like a token, else None."""
    match = _TOKEN.fullmatch(presented.strip())
    return (match.group(1), match.group(2)) if match else None


def issue_token(name: str, role: TokenRole, *, now: datetime) -> IssuedToken:
    """A new token for ``name`` with ``role``, made at ``now`` (timezone-aware).

    Raises:
        pydantic.ValidationError: ``name`` is empty or longer than 200 characters.

    """
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    record = ApiToken(
        token_id=token_id, name=name, role=role, secret_sha256=hash_secret(secret), created_at=now
    )
    return IssuedToken(token=f"{TOKEN_PREFIX}_{token_id}_{secret}", record=record)


class TokenRegistry:
    """The tokens known to this process: a fold of the ``api-tokens`` topic.

    Use :meth:`fold` as a :class:`~mobilise.web.topic_view.TopicView`'s fold; readers on the
    same event loop need no lock.
    """

    def __init__(self) -> None:
        self._tokens: dict[str, ApiToken] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def fold(self, record: StoredRecord) -> None:
        """Apply one record of the topic: a token, a revocation, or a tombstone (forget it)."""
        key = (record.key or b"").decode("utf-8", "replace")
        if record.value is None:
            self._tokens.pop(key, None)
            return
        try:
            token = ApiToken.model_validate_json(record.value)
        except ValidationError as exc:
            log.warning("tokens.record_invalid", offset=record.offset, key=key, error_count=exc.error_count())
            return
        if token.token_id != key:
            log.warning("tokens.record_key_mismatch", offset=record.offset, key=key, token_id=token.token_id)
            return
        self.apply(token)

    def apply(self, token: ApiToken) -> None:
        """Record ``token`` (made or revoked here, or read from the topic); a revocation is final."""
        known = self._tokens.get(token.token_id)
        if (
            known is not None
            and known.revoked_at is not None
            and (token.revoked_at is None or token.revoked_at > known.revoked_at)
        ):
            token = token.model_copy(update={"revoked_at": known.revoked_at})
        self._tokens[token.token_id] = token

    def get(self, token_id: str) -> ApiToken | None:
        """The record of ``token_id``, revoked or not; None if unknown."""
        return self._tokens.get(token_id)

    def all(self) -> list[ApiToken]:
        """Every known token, oldest first."""
        return sorted(self._tokens.values(), key=lambda t: (t.created_at, t.token_id))

    def authenticate(self, presented: str) -> Authentication:
        """Check a presented token: its record if it is known, its secret matches and it is not revoked.

        The secret's hash is compared in constant time, and an unknown id is compared
        against a dummy hash, so neither the secret nor the set of ids leaks through timing.
        """
        parsed = parse_token(presented)
        if parsed is None:
            return Authentication(None, "malformed")
        token_id, secret = parsed
        known = self._tokens.get(token_id)
        expected = known.secret_sha256 if known is not None else _NO_SUCH_HASH
        matches = hmac.compare_digest(hash_secret(secret), expected)
        if known is None:
            return Authentication(None, "unknown", token_id)
        if not matches:
            return Authentication(None, "mismatch", token_id)
        if known.revoked_at is not None:
            return Authentication(None, "revoked", token_id)
        return Authentication(known, None, token_id)
