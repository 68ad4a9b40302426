"""OsdiSource: subscribers from an OSDI people collection (Action Network, and others).

Walks the collection page by page (``_links.next``), reads each person's tags through their
taggings (``_links["osdi:taggings"]``, each tagging linking to its tag), turns the people
whose address is subscribed and who carry mobilise tags into Subscriptions
(:mod:`connectors.osdi_people`), and emits them page by page. Later walks ask only for the
people modified since the last one (``filter=modified_date gt '…'``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import aiohttp
import structlog
from pydantic import Field, SecretStr, field_validator
from yarl import URL

from mobilise.errors import ConfigurationError, FatalError, RetryableError

from .base import ConnectorConfig
from .osdi_people import (
    Skipped,
    body_excerpt,
    check_tag_map,
    filter_time,
    format_time,
    osdi_session,
    parse_time,
    person_to_subscription,
    primary_email,
)
from .retry_after import retry_after
from .source import Checkpoint, Source, SourceContext, SourceRecord

__all__ = ["OsdiSource", "OsdiSourceConfig"]

log = structlog.get_logger(__name__)

_MAX_RECENT = 1000
"""People remembered at the edge of a checkpoint; past that, some are emitted again (harmlessly)."""
_HAL = "application/hal+json, application/json"


class OsdiSourceConfig(ConnectorConfig):
    """Settings of the OSDI source."""

    url: str
    """The people collection, e.g. ``https://actionnetwork.org/api/v2/people``."""
    api_token: SecretStr = Field(min_length=1)
    """The API key, sent as the ``OSDI-API-Token`` header (give it as ``${ENV_VAR}``)."""
    confirmed: bool
    """Whether these people count as having confirmed their address (double opt-in) — only
    confirmed subscribers get alerts. Required: say yes only if the list is opt-in."""
    tag_map: dict[str, str] = Field(default_factory=dict)
    """Tags of that system that stand for a mobilise choice, e.g.
    ``{"Garment workers": "mobilise:interest:wages"}``; other foreign tags are ignored."""
    page_size: int = Field(default=25, ge=1, le=100)
    """People asked for per page (``per_page``; Action Network gives at most 25)."""
    poll_seconds: float = Field(default=3600.0, ge=1)
    """Seconds between walks, each asking for the people modified since the last."""
    once: bool = False
    """Walk once and return (an import) instead of polling."""
    default_language: str = Field(default="en", pattern=r"^[a-z]{2,3}$")
    """The language of people whose ``languages_spoken`` names none."""
    timeout: float = Field(default=30.0, gt=0, le=600)
    """Seconds to wait for one answer before calling the server unreachable."""

    @field_validator("url")
    @classmethod
    def _is_http(cls, value: str) -> str:
        parsed = URL(value)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(
                f"must be the http(s) URL of the people collection, such as "
                f"'https://actionnetwork.org/api/v2/people', not {value!r}"
            )
        return value

    @field_validator("tag_map")
    @classmethod
    def _maps_to_mobilise_tags(cls, value: dict[str, str]) -> dict[str, str]:
        check_tag_map(value)
        return value


@dataclass
class _Walk:
    """Where a walk of the collection is: what a checkpoint holds, as objects."""

    since: datetime | None
    """The walk asks for people modified after this (None: everyone)."""
    recent: dict[str, str]
    """Person → modified_date already emitted at the edge of ``since``: not emitted again."""
    next_url: str | None = None
    """The page to read next, when resuming a walk."""
    high: datetime | None = None
    """The latest modified_date seen in this walk."""
    started: datetime | None = None
    """The server's time (its Date header) when the walk began."""
    fresh: dict[str, str] = field(default_factory=dict)
    """Person → modified_date seen in this walk near its end: the next ``recent``."""

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint | None) -> _Walk:
        checkpoint = checkpoint or {}
        walk = checkpoint.get("walk") or {}
        return cls(
            since=parse_time(checkpoint.get("modified_since")),
            recent=dict(checkpoint.get("recent") or {}),
            next_url=walk.get("next"),
            high=parse_time(walk.get("high")),
            started=parse_time(walk.get("started")),
            fresh=dict(walk.get("fresh") or {}),
        )

    def watermark(self) -> datetime | None:
        """What the next walk asks from: the latest change seen, but no later than the walk began.

        A person modified while the walk was going on may have moved to a page already
        read; capping at the walk's start asks for them again next time.
        """
        latest = max((t for t in (self.high, self.since) if t is not None), default=None)
        known = [t for t in (latest, self.started) if t is not None]
        return min(known) if known else None

    def edge(self) -> datetime | None:
        """People modified after this are asked for again by the next walk."""
        mark = self.watermark()
        return None if mark is None else parse_time(filter_time(mark))

    def saw(self, key: str, modified: datetime | None) -> None:
        if modified is not None and (self.high is None or modified > self.high):
            self.high = modified
        edge = self.edge()
        if modified is not None and (edge is None or modified > edge):
            self.fresh[key] = format_time(modified)
        if edge is not None and len(self.fresh) > _MAX_RECENT:
            kept = {k: v for k, v in self.fresh.items() if (parse_time(v) or edge) > edge}
            # Any subset is safe to keep: a person left out is only emitted once more.
            self.fresh = dict(sorted(kept.items(), key=lambda item: item[1])[-_MAX_RECENT:])

    def already_emitted(self, key: str, modified: datetime | None) -> bool:
        stamp = None if modified is None else format_time(modified)
        return stamp is not None and stamp in (self.recent.get(key), self.fresh.get(key))

    def checkpoint(self, next_url: str | None) -> Checkpoint:
        """The checkpoint after this page: the walk in progress, or (no next page) done."""
        if next_url is not None:
            return {
                "modified_since": None if self.since is None else format_time(self.since),
                "recent": self.recent,
                "walk": {
                    "next": next_url,
                    "high": None if self.high is None else format_time(self.high),
                    "started": None if self.started is None else format_time(self.started),
                    "fresh": self.fresh,
                },
            }
        mark, edge = self.watermark(), self.edge()
        recent = {
            key: stamp
            for key, stamp in {**self.recent, **self.fresh}.items()
            if edge is not None and (parse_time(stamp) or edge) > edge
        }
        # Any subset is safe to keep: a person left out is only emitted once more.
        recent = dict(sorted(recent.items(), key=lambda item: item[1])[-_MAX_RECENT:])
        return {"modified_since": None if mark is None else format_time(mark), "recent": recent}

    def done(self) -> _Walk:
        """The next walk, after this one completed."""
        checkpoint = self.checkpoint(None)
        return _Walk(since=parse_time(checkpoint["modified_since"]), recent=checkpoint["recent"])


@dataclass
class _Counts:
    emitted: int = 0
    rejected: int = 0
    unsubscribed: int = 0
    not_subscribers: int = 0
    unchanged: int = 0


def _person_key(person: dict[str, Any]) -> str:
    """The person's own id on that system: their self link, else an identifier, else the address."""
    self_link = (person.get("_links") or {}).get("self") or {}
    if isinstance(self_link, dict) and self_link.get("href"):
        return str(self_link["href"])
    identifiers = person.get("identifiers") or []
    if identifiers:
        return str(identifiers[0])
    entry = primary_email(person)
    return str(entry["address"]).casefold() if entry else ""


def _href(resource: dict[str, Any], rel: str) -> str | None:
    link = (resource.get("_links") or {}).get(rel)
    href = link.get("href") if isinstance(link, dict) else None
    return href if isinstance(href, str) else None


def _embedded(resource: dict[str, Any], rel: str) -> list[dict[str, Any]] | None:
    items = (resource.get("_embedded") or {}).get(rel)
    if items is None:
        return None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


class OsdiSource(Source[OsdiSourceConfig]):
    """Reads subscribers from an OSDI people collection onto the subscriptions topic.

    Delivery guarantee: at least once. Each page is emitted with a checkpoint that says how
    far the walk got, so a restarted source continues with the next page. The filter of a
    later walk starts a second before the last change seen (or before the last walk began,
    if someone changed meanwhile), and the checkpoint remembers which people it already
    emitted at that edge, so they are not emitted again unless they changed. A repeat
    after a crash between a page and its checkpoint is harmless: records are keyed by
    subscriber id. Action Network does not order people by modified date, which is why a
    walk's progress is its next page and not the latest date seen.

    People whose primary address is not subscribed are skipped (and counted). Erasing a
    person who unsubscribed there is the job of a tombstone on the subscriptions topic;
    this source does not do it. People without mobilise tags are skipped too: they are on
    that list, not subscribers of mobilise. Tag removals on that system only reach
    mobilise if they change the person's modified_date.

    Errors: 429, 5xx and unreachable servers are retryable (:class:`RetryableError`, with
    the server's Retry-After); a refused token (401/403) or a missing collection (404) is a
    :class:`ConfigurationError`; any other refusal a :class:`FatalError`.
    """

    name = "osdi-source"
    produces: ClassVar[tuple[str, ...]] = ("subscriptions",)
    Config = OsdiSourceConfig

    def __init__(self, config: OsdiSourceConfig) -> None:
        super().__init__(config)
        self._session: aiohttp.ClientSession | None = None
        self._tag_names: dict[str, str] = {}
        self._origin = URL(config.url).origin()

    async def setup(self) -> None:
        """Open the HTTP client (the token goes in every request's header)."""
        if self._session is None:
            self._session = osdi_session(self.config.api_token, self.config.timeout)

    async def close(self) -> None:
        """Close the HTTP client."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def run(self, context: SourceContext) -> None:
        """Walk the collection (then every ``poll_seconds`` unless ``once``) until stopping."""
        walk = _Walk.from_checkpoint(context.checkpoint)
        while not context.stopping.is_set():
            walk = await self._walk(context, walk)
            if self.config.once or not await context.sleep(self.config.poll_seconds):
                return

    def _first_url(self, since: datetime | None) -> str:
        url = URL(self.config.url).update_query(per_page=self.config.page_size)
        if since is not None:
            url = url.update_query(filter=f"modified_date gt '{filter_time(since)}'")
        return str(url)

    async def _walk(self, context: SourceContext, walk: _Walk) -> _Walk:
        url: str | None = walk.next_url or self._first_url(walk.since)
        counts = _Counts()
        log.info(
            "osdi_source.walk",
            modified_since=walk.since and format_time(walk.since),
            resumed=bool(walk.next_url),
        )
        while url is not None:
            page, server_time = await self._get(url)
            if walk.started is None:
                walk.started = server_time
            people = _embedded(page, "osdi:people") or []
            records = [record async for record in self._records(people, walk, counts)]
            next_url = _href(page, "next")
            if next_url is not None:
                next_url = str(URL(url).join(URL(next_url)))
            if not people or next_url == url:
                next_url = None  # an empty page ends the walk, whatever its links say
            report = await context.emit(records, checkpoint=walk.checkpoint(next_url))
            counts.emitted += len(report.accepted)
            counts.rejected += len(report.rejected)
            for rejection in report.rejected:
                log.warning("osdi_source.rejected", origin=rejection.origin, reason=rejection.reason)
            url = walk.next_url = next_url
            if url is not None and context.stopping.is_set():
                return walk
        log.info(
            "osdi_source.walk_done",
            emitted=counts.emitted,
            rejected=counts.rejected,
            skipped_unsubscribed=counts.unsubscribed,
            skipped_without_mobilise_tags=counts.not_subscribers,
            skipped_unchanged=counts.unchanged,
        )
        return walk.done()

    async def _records(
        self, people: list[dict[str, Any]], walk: _Walk, counts: _Counts
    ) -> AsyncIterator[SourceRecord]:
        for person in people:
            key = _person_key(person)
            modified = parse_time(person.get("modified_date"))
            if walk.already_emitted(key, modified):
                counts.unchanged += 1
                walk.saw(key, modified)
                continue
            entry = primary_email(person)
            if entry is None or entry.get("status") != "subscribed":
                # Decided before fetching their tags: those would be requests for nothing.
                counts.unsubscribed += 1
                walk.saw(key, modified)
                continue
            tags = await self._tags(person)
            value = person_to_subscription(
                person,
                tags,
                confirmed=self.config.confirmed,
                tag_map=self.config.tag_map,
                default_language=self.config.default_language,
            )
            walk.saw(key, modified)
            if isinstance(value, Skipped):
                if value.unsubscribed:
                    counts.unsubscribed += 1
                else:
                    counts.not_subscribers += 1
                continue
            yield SourceRecord(value=value, origin=key)

    async def _tags(self, person: dict[str, Any]) -> list[str]:
        """The names of the person's tags: embedded taggings, or their taggings collection."""
        taggings = _embedded(person, "osdi:taggings")
        if taggings is None:
            taggings = []
            url = _href(person, "osdi:taggings")
            while url is not None:
                page, _ = await self._get(url, missing_ok=True)
                items = _embedded(page, "osdi:taggings") or []
                taggings += items
                next_url = _href(page, "next")
                next_url = None if next_url is None else str(URL(url).join(URL(next_url)))
                url = next_url if items and next_url != url else None
        names = []
        for tagging in taggings:
            tag = (tagging.get("_embedded") or {}).get("osdi:tag")
            if isinstance(tag, dict) and isinstance(tag.get("name"), str):
                names.append(tag["name"])
                continue
            href = _href(tagging, "osdi:tag")
            if href is not None:
                name = await self._tag_name(href)
                if name is not None:
                    names.append(name)
        return names

    async def _tag_name(self, href: str) -> str | None:
        # A list has a few hundred tags and thousands of people: each tag is asked for once.
        if href not in self._tag_names:
            tag, _ = await self._get(href, missing_ok=True)
            name = tag.get("name")
            if not isinstance(name, str):
                return None
            self._tag_names[href] = name
        return self._tag_names[href]

    async def _get(self, url: str, *, missing_ok: bool = False) -> tuple[dict[str, Any], datetime | None]:
        """GET ``url`` (on the configured server only); the JSON body and the server's Date.

        With ``missing_ok`` a 404 is an empty body: a person's taggings or a tag deleted
        while the walk went on.
        """
        if self._session is None:
            raise RuntimeError("OsdiSource.run() was called before setup()")
        target = URL(url)
        if target.origin() != self._origin:
            # The token goes with every request: never to a host a link points elsewhere.
            raise FatalError(
                f"the OSDI server at {self._origin} linked to {target.origin()}; the source follows "
                "links on the server of its url setting only"
            )
        try:
            async with self._session.get(target, allow_redirects=False) as response:
                text = await response.text()
                status, headers = response.status, response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryableError(f"no answer from the OSDI server at {self._origin}: {exc!r}") from None
        excerpt = body_excerpt(text, self.config.api_token.get_secret_value()) if status >= 300 else ""
        if status == 429 or status >= 500:
            log.warning("osdi_source.unavailable", status=status, url=str(target.with_query(None)))
            raise RetryableError(
                f"the OSDI server answered {status} for {target.with_query(None)}: {excerpt}",
                retry_after(headers),
            )
        if status in (401, 403):
            raise ConfigurationError(
                f"the OSDI server at {self._origin} refused the api_token ({status}): {excerpt}; check "
                "the api_token setting (a key of the group whose list this is, not revoked)"
            )
        if status == 404 and target.with_query(None) == URL(self.config.url).with_query(None):
            raise ConfigurationError(
                f"there is no people collection at url {self.config.url!r} (404); use the collection's "
                "URL, such as https://actionnetwork.org/api/v2/people"
            )
        if status == 404 and missing_ok:
            return {}, None
        if status != 200:
            raise FatalError(f"the OSDI server answered {status} for {target.with_query(None)}: {excerpt}")
        try:
            body = json.loads(text)
        except ValueError:
            raise FatalError(
                f"the OSDI server's answer for {target.with_query(None)} is not JSON: {body_excerpt(text)}"
            ) from None
        if not isinstance(body, dict):
            raise FatalError(f"the OSDI server's answer for {target.with_query(None)} is not a JSON object")
        return body, _server_time(headers.get("Date"))


def _server_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
