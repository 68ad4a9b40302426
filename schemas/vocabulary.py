"""Controlled vocabularies: case statuses, interests, action kinds and languages."""

from __future__ import annotations

import os
import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

__all__ = [
    "BASE_INTERESTS",
    "ActionKind",
    "CaseStatus",
    "Interest",
    "Language",
    "brand_key",
    "known_interests",
]


class CaseStatus(StrEnum):
    """Where a case stands. New statuses are added here with a schema_version bump."""

    OPENED = "opened"
    ESCALATED = "escalated"
    BRAND_CONTACTED = "brand_contacted"
    BRAND_RESPONDED = "brand_responded"
    URGENT_ACTION = "urgent_action"
    REMEDY_WON = "remedy_won"
    CLOSED = "closed"


class ActionKind(StrEnum):
    """What an action call asks people to do."""

    EMAIL_BRAND = "email_brand"
    SIGN = "sign"
    POST_PUBLICLY = "post_publicly"
    CALL = "call"
    PROTEST_AT_STORE = "protest_at_store"
    DONATE_STRIKE_FUND = "donate_strike_fund"


BASE_INTERESTS: tuple[str, ...] = (
    "wages",
    "severance",
    "union_busting",
    "freedom_of_association",
    "health_and_safety",
    "building_safety",
    "gender_based_violence",
    "forced_labour",
    "child_labour",
    "living_wage",
    "working_hours",
    "migrant_workers",
    "social_security",
    "factory_closure",
    "repression_of_protest",
)
"""The interests every deployment understands."""

_EXTRA_INTERESTS_ENV = "MOBILISE_EXTRA_INTERESTS"
_SLUG = re.compile(r"^[a-z][a-z0-9_]{1,63}$")


def known_interests() -> frozenset[str]:
    """The base vocabulary plus the comma-separated slugs in ``MOBILISE_EXTRA_INTERESTS``.

    Read on every call (it is cheap) so that a deployment's vocabulary is whatever its
    environment says, in the worker and in the CLI alike.
    """
    extra = {item.strip() for item in os.environ.get(_EXTRA_INTERESTS_ENV, "").split(",") if item.strip()}
    return frozenset(BASE_INTERESTS) | extra


def _known_interest(value: str) -> str:
    vocabulary = known_interests()
    if value not in vocabulary:
        raise ValueError(
            f"unknown interest {value!r}; use one of {', '.join(sorted(vocabulary))} "
            f"(a deployment can add more through {_EXTRA_INTERESTS_ENV})"
        )
    return value


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


Interest = Annotated[
    str,
    BeforeValidator(_lower),
    Field(
        pattern=_SLUG.pattern,
        description="An interest from the controlled vocabulary: "
        + ", ".join(BASE_INTERESTS)
        + ", or one a deployment added.",
        examples=list(BASE_INTERESTS[:3]),
    ),
    AfterValidator(_known_interest),
]
"""A slug from the interest vocabulary."""

Language = Annotated[
    str,
    BeforeValidator(_lower),
    Field(
        pattern=r"^[a-z]{2,3}$",
        description="ISO 639-1 (or 639-3) language code, e.g. en, fr, es, bn, km.",
    ),
]
"""A language code."""


def brand_key(name: str) -> str:
    """The form of a brand name used for matching: case-folded, single-spaced.

    "H&M", "h&m " and "H&amp;M" are different strings to a person typing them; the first
    two must meet in the index. (HTML entities are not decoded: input is not HTML.)
    """
    return " ".join(name.casefold().split())
