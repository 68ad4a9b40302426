"""Wave: when an action call lands; WaveCancellation: a coordinator calling a wave off.

A wave holds an update's alerts back until one moment (``send_at``) or until the same
local time on one day in each subscriber's time zone (``local_time`` + ``local_date``:
"09:00 on 12 March, wherever you are"), so that a day of action lands everywhere together.

Which zone is a person's (:func:`zone_for`): the subscription's ``time_zone`` when given;
else, when their ``home_country`` has exactly one zone in the IANA ``zone.tab``
(Bangladesh, the Netherlands), that zone; else UTC (no country, or one with several
zones such as the United States, where a guess would be hours off for many).
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, Field, model_validator

from ._base import Event, stable_id

__all__ = [
    "LocalTime",
    "TimeZoneName",
    "Wave",
    "WaveCancellation",
    "check_time_zone",
    "country_zone",
    "local_instant",
    "release_at",
    "wave_id_for",
    "zone_for",
]

LocalTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
"""A wall-clock time, ``HH:MM`` on 24 hours."""

TimeZoneName = Annotated[str, Field(min_length=1, max_length=64)]
"""An IANA time zone name such as ``Asia/Dhaka``."""

_Slug = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


def check_time_zone(name: str) -> str:
    """``name`` if it is an IANA time zone this system knows.

    Raises:
        ValueError: naming the value and the fix.

    """
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"{name!r} is not an IANA time zone; use a name such as 'Asia/Dhaka' or 'Europe/Amsterdam'"
        ) from exc
    return name


class Wave(Event):
    """When an action call's alerts are released: at one instant, or at one local time everywhere.

    Give either ``send_at``, or ``local_time`` with ``local_date``.
    """

    wave_id: _Slug | None = None
    """Names the wave, to cancel it; derived from the case and the wave when left out
    (:func:`wave_id_for`)."""
    send_at: AwareDatetime | None = None
    """The instant every alert is released, whatever the subscriber's zone."""
    local_time: LocalTime | None = None
    """The wall-clock time (``HH:MM``) at which each subscriber gets it, in their own zone."""
    local_date: date | None = None
    """The day of ``local_time``, in each subscriber's own zone."""

    @model_validator(mode="after")
    def _one_rule(self) -> Wave:
        local = self.local_time is not None or self.local_date is not None
        if self.send_at is not None and local:
            raise ValueError("a wave has either send_at or local_time + local_date, not both")
        if self.send_at is None and (self.local_time is None or self.local_date is None):
            raise ValueError(
                "a wave needs send_at (an instant with its UTC offset), or both local_time ('09:00') "
                "and local_date ('2026-03-12') to land at that time in each subscriber's zone"
            )
        return self


def wave_id_for(case_id: str, wave: Wave) -> str:
    """The wave's id: the coordinator's ``wave_id``, else one derived from the case and the wave."""
    if wave.wave_id is not None:
        return wave.wave_id
    return "wav-" + stable_id(case_id, wave.model_dump(mode="json", exclude={"wave_id"}), length=20)


def release_at(wave: Wave, zone: str | ZoneInfo | None) -> datetime:
    """When ``wave`` releases an alert for someone in ``zone`` (None: UTC), as an aware UTC datetime.

    A local time that does not exist that day (the hour skipped when clocks go forward)
    is taken with the offset before the change, which lands after the gap, never before;
    one that happens twice (clocks going back) is the first of the two.
    """
    if wave.send_at is not None:
        return wave.send_at.astimezone(UTC)
    assert wave.local_time is not None and wave.local_date is not None  # checked by the validator
    return local_instant(wave.local_date, wave.local_time, zone)


def local_instant(day: date, local_time: str, zone: str | ZoneInfo | None) -> datetime:
    """``local_time`` (``HH:MM``) on ``day`` in ``zone`` (None: UTC), as an aware UTC datetime.

    The rules of :func:`release_at` for clock changes: a skipped time lands after the gap,
    a repeated one is the first.
    """
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone or UTC
    hours, minutes = (int(part) for part in local_time.split(":"))
    local = datetime.combine(day, time(hours, minutes), tzinfo=tz)
    return local.astimezone(UTC)


@functools.cache
def _zones_by_country() -> dict[str, tuple[str, ...]]:
    text = None
    try:
        text = resources.files("tzdata").joinpath("zoneinfo", "zone.tab").read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        system = Path("/usr/share/zoneinfo/zone.tab")
        text = system.read_text("utf-8") if system.exists() else ""
    zones: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) >= 3:
            zones.setdefault(fields[0].upper(), []).append(fields[2])
    return {country: tuple(names) for country, names in zones.items()}


def country_zone(country: str) -> str | None:
    """The one IANA zone of ``country`` (ISO code), or None if it has several or none known."""
    zones = _zones_by_country().get(country.upper(), ())
    return zones[0] if len(zones) == 1 else None


def zone_for(time_zone: str | None, home_country: str | None) -> str:
    """A person's zone: theirs, else their country's only zone, else ``"UTC"`` (module docstring)."""
    if time_zone is not None:
        return time_zone
    if home_country is not None:
        found = country_zone(home_country)
        if found is not None:
            return found
    return "UTC"


class WaveCancellation(Event):
    """A coordinator calls off a wave that has not gone out (topic ``wave-cancellations``).

    The canceller writes one copy to every partition (key: the wave id), so that each
    worker learns it for the partitions whose alerts it holds. Alerts of the wave already
    released stay sent; those still held are dropped, each with a ``cancelled`` delivery event.
    """

    schema_version: Literal[1] = 1
    """Version of this schema; a reader rejects versions it does not know."""
    wave_id: _Slug
    """The wave called off (:func:`wave_id_for`)."""
    case_id: _Slug
    """The case whose update carried the wave."""
    cancelled_by: Annotated[str, Field(min_length=1, max_length=200)]
    """The coordinator who called it off."""
    at: AwareDatetime
    """When it was called off."""
