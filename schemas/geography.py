"""Countries (ISO 3166-1 alpha-2) and the UN M49 regions they belong to.

The table in ``data/countries.json`` maps every ISO 3166-1 alpha-2 code to its English
short name and its UN M49 geographic sub-region (for Africa and the Americas the
intermediate region: Caribbean, Central America, South America, Eastern Africa, ...),
as published by the UN Statistics Division. Regions are slugs such as
``south-eastern-asia``.
"""

from __future__ import annotations

import json
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

__all__ = ["Country", "Region", "country_name", "known_countries", "region_of"]


class Region(StrEnum):
    """UN M49 geographic regions used for subscriptions and derived for every case."""

    AUSTRALIA_AND_NEW_ZEALAND = "australia-and-new-zealand"
    CARIBBEAN = "caribbean"
    CENTRAL_AMERICA = "central-america"
    CENTRAL_ASIA = "central-asia"
    EASTERN_AFRICA = "eastern-africa"
    EASTERN_ASIA = "eastern-asia"
    EASTERN_EUROPE = "eastern-europe"
    MELANESIA = "melanesia"
    MICRONESIA = "micronesia"
    MIDDLE_AFRICA = "middle-africa"
    NORTHERN_AFRICA = "northern-africa"
    NORTHERN_AMERICA = "northern-america"
    NORTHERN_EUROPE = "northern-europe"
    POLYNESIA = "polynesia"
    SOUTH_AMERICA = "south-america"
    SOUTH_EASTERN_ASIA = "south-eastern-asia"
    SOUTHERN_AFRICA = "southern-africa"
    SOUTHERN_ASIA = "southern-asia"
    SOUTHERN_EUROPE = "southern-europe"
    WESTERN_AFRICA = "western-africa"
    WESTERN_ASIA = "western-asia"
    WESTERN_EUROPE = "western-europe"
    ANTARCTICA = "antarctica"

    @property
    def label(self) -> str:
        """The UN's English name, e.g. ``South-eastern Asia``."""
        return _REGION_LABELS.get(self.value) or self.value.replace("-", " ").title()


_REGION_LABELS = {
    "australia-and-new-zealand": "Australia and New Zealand",
    "south-eastern-asia": "South-eastern Asia",
}


@cache
def _countries() -> dict[str, tuple[str, Region]]:
    raw = json.loads(resources.files("schemas").joinpath("data/countries.json").read_text("utf-8"))
    return {code: (entry["name"], Region(entry["region"])) for code, entry in raw.items()}


def known_countries() -> frozenset[str]:
    """Every accepted ISO 3166-1 alpha-2 code."""
    return frozenset(_countries())


def country_name(code: str) -> str:
    """English short name of a validated country code."""
    return _countries()[code][0]


def region_of(code: str) -> Region:
    """The UN M49 region of a validated country code."""
    return _countries()[code][1]


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _known_country(code: str) -> str:
    if code not in _countries():
        raise ValueError(
            f"{code!r} is not an ISO 3166-1 alpha-2 country code; use two letters such as "
            "'BD' for Bangladesh or 'KH' for Cambodia"
        )
    return code


Country = Annotated[
    str,
    BeforeValidator(_upper),
    Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 country code, e.g. BD."),
    AfterValidator(_known_country),
]
"""An ISO 3166-1 alpha-2 code; lower case is accepted and upper-cased."""
