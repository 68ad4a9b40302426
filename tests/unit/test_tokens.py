"""API tokens: their format, what is stored of them, constant-time checks, final revocations."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from mobilise.snapshot import StoredRecord
from mobilise.web.tokens import TokenRegistry, hash_secret, issue_token, parse_token
from schemas import ApiToken, TokenRole

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def stored(token: ApiToken | None, key: str, offset: int = 0) -> StoredRecord:
    value = token.model_dump_json().encode() if token is not None else None
    return StoredRecord("t-api-tokens", 0, offset, NOW, key.encode(), value)


def test_a_token_has_its_id_and_32_random_bytes_and_only_the_hash_is_stored() -> None:
    issued = issue_token("coordinator-asia", TokenRole.COORDINATOR, now=NOW)
    prefix, token_id, secret = issued.token.split("_", 2)
    assert prefix == "mob" and token_id == issued.record.token_id
    assert len(secret) >= 43  # 32 bytes in URL-safe base64
    assert parse_token(issued.token) == (token_id, secret)
    assert issued.record.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest() == hash_secret(secret)
    assert secret not in issued.record.model_dump_json()
    other = issue_token("coordinator-asia", TokenRole.COORDINATOR, now=NOW)
    assert other.token != issued.token and other.record.token_id != token_id
    with pytest.raises(ValidationError):
        issue_token("", TokenRole.ADMIN, now=NOW)


@pytest.mark.parametrize(
    "text", ["", "mob_", "mob_ABCDEF0123456789_" + "x" * 43, "mob_0123456789abcdef_short", "tok"]
)
def test_text_that_is_not_shaped_like_a_token_is_malformed(text: str) -> None:
    assert parse_token(text) is None
    assert TokenRegistry().authenticate(text).failure == "malformed"


def test_authentication_tells_unknown_wrong_revoked_and_valid_tokens_apart() -> None:
    registry = TokenRegistry()
    issued = issue_token("Admin Ada", TokenRole.ADMIN, now=NOW)
    stranger = issue_token("Nobody", TokenRole.ADMIN, now=NOW)
    registry.fold(stored(issued.record, issued.record.token_id))

    valid = registry.authenticate(issued.token)
    assert valid.token == issued.record and valid.failure is None
    assert registry.authenticate(stranger.token).failure == "unknown"
    forged = f"mob_{issued.record.token_id}_{stranger.token.split('_', 2)[2]}"
    wrong = registry.authenticate(forged)
    assert (wrong.token, wrong.failure, wrong.token_id) == (None, "mismatch", issued.record.token_id)

    revoked = issued.record.model_copy(update={"revoked_at": NOW + timedelta(hours=1)})
    registry.fold(stored(revoked, issued.record.token_id, 1))
    assert registry.authenticate(issued.token).failure == "revoked"
    assert registry.get(issued.record.token_id) == revoked


def test_a_revocation_is_final_and_a_tombstone_forgets_the_token() -> None:
    registry = TokenRegistry()
    issued = issue_token("coordinator-asia", TokenRole.COORDINATOR, now=NOW)
    token_id = issued.record.token_id
    revoked_at = NOW + timedelta(hours=1)
    registry.apply(issued.record.model_copy(update={"revoked_at": revoked_at}))
    registry.apply(issued.record)  # an old copy read again
    registry.apply(issued.record.model_copy(update={"revoked_at": revoked_at + timedelta(days=1)}))
    known = registry.get(token_id)
    assert known is not None and known.revoked_at == revoked_at
    assert registry.authenticate(issued.token).failure == "revoked"

    registry.fold(stored(None, token_id))
    assert registry.get(token_id) is None and len(registry) == 0


def test_records_that_cannot_be_read_or_sit_under_another_key_are_skipped() -> None:
    registry = TokenRegistry()
    issued = issue_token("coordinator-asia", TokenRole.COORDINATOR, now=NOW)
    registry.fold(StoredRecord("t", 0, 0, NOW, b"abc", b"{not json"))
    registry.fold(stored(issued.record, "0000000000000000"))
    assert len(registry) == 0
    assert registry.authenticate(issued.token).failure == "unknown"


def test_tokens_are_listed_oldest_first() -> None:
    registry = TokenRegistry()
    later = issue_token("b", TokenRole.COORDINATOR, now=NOW + timedelta(minutes=5))
    earlier = issue_token("a", TokenRole.ADMIN, now=NOW)
    registry.apply(later.record)
    registry.apply(earlier.record)
    assert [t.name for t in registry.all()] == ["a", "b"]
