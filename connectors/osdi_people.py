"""An OSDI person and a mobilise Subscription, each as the other: the mapping, pure.

OSDI 1.x (the Open Supporter Data Interface, which Action Network's API v2 implements) has
no field for "cases in Bangladesh about union busting", so a subscription's choices travel
as tags on the person, one per choice::

    mobilise:interest:<interest>   mobilise:brand:<brand>     mobilise:country:<CC>
    mobilise:region:<region>       mobilise:worldwide         mobilise:frequency:<f>
    mobilise:status:<status>       (only when the subscription narrows the statuses)

The person carries the rest: the address (``email_addresses``), the name (all of it in
``given_name``), the language (``languages_spoken``), the subscriber id (the identifier
``mobilise:<subscriber_id>``) and when the person subscribed to mobilise (the custom field
``mobilise_created_at``; OSDI's own ``created_date`` is read-only, and is when the person
reached that system). Tags of other systems are ignored, unless a ``tag_map`` names the
mobilise tag each stands for; tag names compare without case, as in Action Network. Also
here: the parts of an OSDI server's answers both connectors read (Retry-After, an excerpt
of a body). No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from pydantic import SecretStr

from schemas import CaseStatus, Subscription

__all__ = [
    "CREATED_AT_FIELD",
    "IDENTIFIER_PREFIX",
    "TAG_KINDS",
    "TAG_PREFIX",
    "Skipped",
    "body_excerpt",
    "check_tag_map",
    "filter_time",
    "format_time",
    "osdi_session",
    "parse_time",
    "person_to_subscription",
    "primary_email",
    "signup_body",
    "subscription_tags",
]

TAG_PREFIX = "mobilise:"
"""What every tag carrying a subscription's choice starts with."""
IDENTIFIER_PREFIX = "mobilise:"
"""The OSDI identifier of a person exported from mobilise is ``mobilise:<subscriber_id>``."""
CREATED_AT_FIELD = "mobilise_created_at"
"""The custom field holding when the person subscribed to mobilise (ISO 8601)."""
TAG_KINDS = frozenset({"interest", "brand", "country", "region", "worldwide", "status", "frequency"})
"""The choices a ``mobilise:<kind>:<value>`` tag can carry (``worldwide`` has no value)."""

_SUBSCRIBED = "subscribed"
_MAX_NAME = 200  # Subscription.name's limit
_MAX_EXCERPT = 500
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


@dataclass(frozen=True)
class Skipped:
    """A person who is not (or not any more) a mobilise subscriber, and why."""

    reason: str
    """One line, without the address."""
    unsubscribed: bool = False
    """The person's address is not subscribed (unsubscribed, bouncing…)."""


# -- times ------------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """An OSDI datetime (``2014-03-20T21:04:31Z``; a bare date is midnight) as aware UTC, or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    # A time without an offset is read as UTC, which is what OSDI servers send.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """``value`` in UTC, as ISO 8601 with a ``Z``: how checkpoints and custom fields spell times."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def filter_time(since: datetime) -> str:
    """The time an OSDI ``modified_date gt '…'`` filter asks from, to catch everything after ``since``.

    One second earlier than ``since`` cut to the second: servers report and may compare
    modified dates to the second, so a person changed later within the same second as
    ``since`` must still match. The caller skips the people it already has at that edge.
    """
    edge = since.astimezone(UTC).replace(microsecond=0) - timedelta(seconds=1)
    return edge.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- Subscription → person --------------------------------------------------------------------


def subscription_tags(subscription: Subscription) -> list[str]:
    """The tags carrying ``subscription``'s choices, in a stable order."""
    tags = [f"{TAG_PREFIX}interest:{interest}" for interest in subscription.interests]
    tags += [f"{TAG_PREFIX}brand:{brand}" for brand in subscription.brands]
    tags += [f"{TAG_PREFIX}country:{country}" for country in subscription.countries]
    tags += [f"{TAG_PREFIX}region:{region.value}" for region in subscription.regions]
    if subscription.worldwide:
        tags.append(f"{TAG_PREFIX}worldwide")
    if set(subscription.statuses) != set(CaseStatus):
        tags += [f"{TAG_PREFIX}status:{status.value}" for status in subscription.statuses]
    tags.append(f"{TAG_PREFIX}frequency:{subscription.frequency}")
    return list(dict.fromkeys(tags))


def signup_body(subscription: Subscription) -> dict[str, Any]:
    """The body to POST to a person signup helper for ``subscription``.

    The address goes without a ``status``: Action Network subscribes a person new to the
    list, and leaves an existing person's status alone unless one is given. Sending
    ``subscribed`` would re-subscribe someone who had unsubscribed there, every time a
    subscription is exported again. No postal address either: the countries a person
    follows are not where they live, and the helper would overwrite their address.
    """
    person: dict[str, Any] = {
        "email_addresses": [{"address": str(subscription.email), "primary": True}],
        "languages_spoken": [subscription.language],
        "identifiers": [IDENTIFIER_PREFIX + subscription.subscriber_id],
        "custom_fields": {CREATED_AT_FIELD: format_time(subscription.created_at)},
    }
    if subscription.name:
        # Splitting at the last space would guess wrong for "Maria de la Cruz".
        person["given_name"] = subscription.name
    return {"person": person, "add_tags": subscription_tags(subscription)}


# -- person → Subscription --------------------------------------------------------------------


def primary_email(person: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The person's primary email address entry (the first one when none is marked primary)."""
    entries = [e for e in person.get("email_addresses") or () if isinstance(e, Mapping) and e.get("address")]
    for entry in entries:
        if entry.get("primary") is True:
            return entry
    return entries[0] if entries else None


def check_tag_map(tag_map: Mapping[str, str]) -> None:
    """Raise ValueError naming the first entry of ``tag_map`` whose target is not a mobilise tag."""
    for foreign, target in tag_map.items():
        kind = target[len(TAG_PREFIX) :].partition(":")[0] if target.startswith(TAG_PREFIX) else ""
        if kind not in TAG_KINDS or (kind != "worldwide" and not target.partition(f"{kind}:")[2]):
            raise ValueError(
                f"tag_map maps {foreign!r} to {target!r}, which is not a mobilise tag; map it to one of "
                "'mobilise:interest:<interest>', 'mobilise:brand:<brand>', 'mobilise:country:<CC>', "
                "'mobilise:region:<region>', 'mobilise:worldwide', 'mobilise:status:<status>' or "
                "'mobilise:frequency:<frequency>'"
            )


def _name(person: Mapping[str, Any]) -> str | None:
    given = person.get("given_name")
    family = person.get("family_name")
    given = given.strip() if isinstance(given, str) else ""
    family = family.strip() if isinstance(family, str) else ""
    if given and family and given.endswith(" " + family):
        # What exporting "Jane Doe" leaves on a person who already had the family name Doe.
        family = ""
    name = " ".join(part for part in (given, family) if part)
    # A greeting is not worth rejecting the subscription over.
    return name[:_MAX_NAME].rstrip() or None


def _language(person: Mapping[str, Any], default: str) -> str:
    for code in person.get("languages_spoken") or ():
        if isinstance(code, str) and _LANGUAGE.match(code.strip().lower()):
            return code.strip().lower()
    return default


def _created_at(person: Mapping[str, Any]) -> datetime | None:
    custom = person.get("custom_fields")
    if isinstance(custom, Mapping):
        exported = parse_time(custom.get(CREATED_AT_FIELD))
        if exported is not None:
            return exported
    return parse_time(person.get("created_date")) or parse_time(person.get("modified_date"))


def _subscriber_id(person: Mapping[str, Any]) -> str | None:
    for identifier in person.get("identifiers") or ():
        if isinstance(identifier, str) and identifier.startswith(IDENTIFIER_PREFIX):
            return identifier[len(IDENTIFIER_PREFIX) :]
    return None


def person_to_subscription(
    person: Mapping[str, Any],
    tags: Iterable[str],
    *,
    confirmed: bool,
    tag_map: Mapping[str, str] | None = None,
    default_language: str = "en",
) -> dict[str, Any] | Skipped:
    """The Subscription (as its JSON fields) an OSDI person stands for, or why there is none.

    Args:
        person: The person resource.
        tags: The names of the person's tags.
        confirmed: Whether the people of this system count as having confirmed their address.
        tag_map: Foreign tag name → the mobilise tag it stands for.
        default_language: The language of a person who names none (or none mobilise can use).

    Returns:
        The Subscription's fields, choices sorted so that the same person always gives the
        same record; it is validated by whoever emits it. :class:`Skipped` when the
        primary address is not subscribed, or when no tag carries a mobilise choice.

    """
    entry = primary_email(person)
    if entry is None:
        return Skipped("no email address")
    status = entry.get("status")
    if status != _SUBSCRIBED:
        return Skipped(f"the address is {status or 'without a status'}, not subscribed", unsubscribed=True)
    choices: dict[str, set[str]] = {kind: set() for kind in TAG_KINDS}
    # Action Network compares tag names without case, and may give back "MOBILISE:Country:bd".
    mapping = {foreign.casefold(): target for foreign, target in (tag_map or {}).items()}
    for raw in tags:
        tag = mapping.get(raw.casefold(), raw).strip()
        if tag[: len(TAG_PREFIX)].casefold() != TAG_PREFIX:
            continue
        kind, _, value = tag[len(TAG_PREFIX) :].partition(":")
        kind = kind.lower()
        if kind in choices and (value or kind == "worldwide"):
            choices[kind].add(value.strip())
    if not any(choices.values()):
        return Skipped("no mobilise: tag says what the person follows")
    created_at = _created_at(person)
    if created_at is None:
        return Skipped("neither created_date nor modified_date says when the person subscribed")
    record: dict[str, Any] = {
        "email": str(entry["address"]).strip(),
        "language": _language(person, default_language),
        "interests": sorted({v.lower() for v in choices["interest"]}),
        "brands": sorted(choices["brand"]),
        "countries": sorted({v.upper() for v in choices["country"]}),
        "regions": sorted({v.lower() for v in choices["region"]}),
        "worldwide": bool(choices["worldwide"]),
        "confirmed": confirmed,
        "created_at": format_time(created_at),
    }
    if choices["status"]:
        record["statuses"] = sorted({v.lower() for v in choices["status"]})
    if choices["frequency"]:
        # More than one is an error the schema reports (a list is not a frequency).
        frequencies = sorted({v.lower() for v in choices["frequency"]})
        record["frequency"] = frequencies[0] if len(frequencies) == 1 else frequencies
    name = _name(person)
    if name is not None:
        record["name"] = name
    subscriber_id = _subscriber_id(person)
    if subscriber_id is not None:
        record["subscriber_id"] = subscriber_id
    return record


# -- the HTTP client -------------------------------------------------------------------------

_HAL = "application/hal+json, application/json"


def osdi_session(api_token: SecretStr, timeout: float) -> aiohttp.ClientSession:
    """An HTTP client for an OSDI server: the token in every request's header, HAL+JSON wanted."""
    return aiohttp.ClientSession(
        headers={"OSDI-API-Token": api_token.get_secret_value(), "Accept": _HAL},
        timeout=aiohttp.ClientTimeout(total=timeout),
    )


# -- answers ----------------------------------------------------------------------------------


def body_excerpt(body: str, secret: str = "") -> str:
    """The start of a response body on one line, ``secret`` blanked out should the server echo it."""
    text = " ".join(body.split())
    if secret:
        text = text.replace(secret, "[api_token]")
    if len(text) > _MAX_EXCERPT:
        text = text[: _MAX_EXCERPT - 1] + "…"
    return text or "(no body)"
