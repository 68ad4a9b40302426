"""The base every event model shares: strict, frozen, versioned."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["Event", "stable_id"]


class Event(BaseModel):
    """A record that crosses a topic or a process boundary.

    Strict (no silent coercion), frozen (a model is a fact, not a scratchpad) and closed
    (an unknown field is an error, so a typo in a producer is caught at the edge).
    Validate external input with ``model_validate_json``: strict mode then accepts the
    JSON spellings of datetimes and tuples and nothing looser.
    """

    model_config = ConfigDict(
        strict=True,
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        str_strip_whitespace=True,
    )


def stable_id(*parts: Any, length: int = 32) -> str:
    """Return a deterministic hex id for ``parts``.

    The same parts give the same id in every process and on every run, which is what
    makes retried effects recognisable as retries.
    """
    canonical = _CANONICAL.encode(parts)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:length]


# What json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str) uses, made once:
# dumps builds a new encoder on every call with those arguments, and ids are made per alert.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
