"""FeedSource: case news from an RSS or Atom feed, as case updates.

A coordinators' site that already publishes its cases as a feed can feed the pipeline
without anyone retyping them. Each poll fetches the feed with a conditional GET (the
ETag and Last-Modified of the last answer travel in the checkpoint, so an unchanged feed
costs one ``304``), parses it with feedparser, and turns every item not emitted before
into a case update: its categories say the status, country, brands and issues (``status:
urgent_action``, ``country:BD``…), its link the case id, its title and summary (HTML
stripped) the text, its date when it happened; the connector's ``defaults`` fill in what
items do not say. The mapping itself (:func:`map_item`) is pure.
"""

from __future__ import annotations

import asyncio
import calendar
import io
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from types import ModuleType
from typing import Annotated, Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from mobilise.errors import ConfigurationError, RetryableError
from schemas import CaseUpdate
from schemas._base import stable_id
from schemas.vocabulary import Language

from .base import ConnectorConfig
from .retry_after import retry_after
from .source import Checkpoint, Source, SourceContext, SourceRecord

__all__ = ["MAX_SEEN", "CategoryPrefixes", "FeedConfig", "FeedSource", "MappedItem", "map_item", "strip_html"]

log = structlog.get_logger(__name__)

MAX_SEEN = 2000
"""Event ids of emitted items the checkpoint keeps; older ones fall out (oldest first)."""
_MAX_BODY_BYTES = 20 * 1024 * 1024
_MAX_TEXT_CHARS = 20_000  # CaseUpdate's ceiling on one language's title or summary
_ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
_TEMPORARY_CLIENT_ERRORS = frozenset({408, 425, 429})
# Fields never taken from defaults: the id is derived, the version is the schema's, the
# publisher is the setting published_by.
_NOT_DEFAULTABLE = frozenset({"event_id", "schema_version", "published_by"})


class CategoryPrefixes(BaseModel):
    """Prefixes of the item categories (RSS ``<category>``, Atom ``<category term>``) that carry fields.

    Matched without regard to case; the rest of the category is the value, e.g.
    ``status:urgent_action``, ``country:BD``, ``brand:Acme Apparel``, ``issue:wages``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    status: Annotated[str, Field(min_length=1)] = "status:"
    """Prefix of the category giving the case status (``urgent_action``, ``remedy won``…)."""
    country: Annotated[str, Field(min_length=1)] = "country:"
    """Prefix of the category giving the ISO 3166-1 alpha-2 country code."""
    brand: Annotated[str, Field(min_length=1)] = "brand:"
    """Prefix of the categories naming brands (one category per brand)."""
    issue: Annotated[str, Field(min_length=1)] = "issue:"
    """Prefix of the categories naming issues from the interest vocabulary (one per issue)."""


class FeedConfig(ConnectorConfig):
    """Settings of the feed source."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+", max_length=2000)]
    """The RSS or Atom feed to poll (http or https)."""
    poll_seconds: Annotated[float, Field(ge=1, le=86_400)] = 300.0
    """Seconds between two polls."""
    timeout: Annotated[float, Field(gt=0, le=600)] = 30.0
    """Seconds one fetch of the feed may take before it counts as a temporary failure."""
    language: Language = "en"
    """Language code of the items' titles and summaries."""
    published_by: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """The case updates' ``published_by``; ``feed:<host of url>`` when left out."""
    defaults: dict[str, Any] = Field(default_factory=dict)
    """CaseUpdate fields for items that do not give them, e.g. ``{status: opened, issues: [wages]}``."""
    prefixes: CategoryPrefixes = CategoryPrefixes()
    """Which item categories carry the status, country, brands and issues."""
    case_id_pattern: str | None = None
    """Regex finding the case id in an item's link (its ``case_id`` group, else its first group, else
    the whole match); the link's last path segment when left out. Items without a link (or whose
    link does not match) use the item id."""
    once: bool = False
    """Poll a single time and return (for tests and cron jobs) instead of polling forever."""

    @field_validator("case_id_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(
                    f"is not a valid regular expression ({exc}); e.g. '/cases/([^/?#]+)'"
                ) from exc
        return value

    @field_validator("defaults")
    @classmethod
    def _valid_defaults(cls, value: dict[str, Any]) -> dict[str, Any]:
        fields = CaseUpdate.model_fields
        problems = []
        for name, default in value.items():
            if name not in fields or name in _NOT_DEFAULTABLE:
                known = ", ".join(sorted(set(fields) - _NOT_DEFAULTABLE))
                problems.append(f"{name!r} is not a field a case update can take from defaults ({known})")
                continue
            try:
                _field_adapter(name).validate_json(json.dumps(default, default=str))
            except ValidationError as exc:
                reason = "; ".join(e["msg"] for e in exc.errors(include_url=False))
                problems.append(f"{name}: {reason}")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    def publisher(self) -> str:
        """The case updates' ``published_by``."""
        return self.published_by or f"feed:{urlsplit(self.url).hostname}"


def _field_adapter(name: str) -> TypeAdapter[Any]:
    """Validates one CaseUpdate field as the model does (strict, from JSON)."""
    info = CaseUpdate.model_fields[name]
    annotation: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return TypeAdapter(annotation, config=ConfigDict(strict=True))


# -- mapping an item -------------------------------------------------------------------


class _TextExtractor(HTMLParser):
    _SKIPPED = frozenset({"script", "style", "head", "title", "template"})
    _BLOCKS = frozenset(
        {"p", "div", "br", "li", "ul", "ol", "tr", "table", "blockquote", "pre", "section", "article"}
        | {"h1", "h2", "h3", "h4", "h5", "h6", "hr", "header", "footer", "figure", "figcaption"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIPPED:
            self._skipping += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def strip_html(markup: str) -> str:
    """The text of an HTML fragment: tags dropped, entities decoded, one blank line between blocks."""
    extractor = _TextExtractor()
    extractor.feed(markup)
    extractor.close()
    lines = (" ".join(line.split()) for line in "".join(extractor.parts).split("\n"))
    text = "\n".join(lines)
    return re.sub(r"\n{2,}", "\n\n", text).strip()


def _raw(entry: Mapping[str, Any], key: str) -> Any:
    # feedparser's dict answers "updated" with "published" when an item has only the
    # latter (and warns); the plain dict says what the item really has.
    if isinstance(entry, dict):
        return dict.get(entry, key)
    return entry.get(key)


def _text(entry: Mapping[str, Any], key: str) -> str:
    value = _raw(entry, key)
    if not isinstance(value, str):
        return ""
    text = strip_html(value) if "<" in value or "&" in value else " ".join(value.split())
    if len(text) > _MAX_TEXT_CHARS:
        text = text[: _MAX_TEXT_CHARS - 1] + "…"
    return text


def _summary(entry: Mapping[str, Any]) -> str:
    summary = _text(entry, "summary")
    if summary:
        return summary
    for content in _raw(entry, "content") or ():
        if isinstance(content, Mapping):
            text = _text(content, "value")
            if text:
                return text
    return ""


def _when(entry: Mapping[str, Any]) -> datetime | None:
    # An edited item's updated date is when its new state came to be.
    for key in ("updated_parsed", "published_parsed"):
        parsed = _raw(entry, key)
        if isinstance(parsed, time.struct_time):
            return datetime.fromtimestamp(calendar.timegm(parsed), UTC)
    return None


def _slug(value: str) -> str:
    return re.sub(r"[\s-]+", "_", value.strip().lower())


def _categories(entry: Mapping[str, Any]) -> Iterable[str]:
    for tag in _raw(entry, "tags") or ():
        if isinstance(tag, Mapping):
            term = tag.get("term") or tag.get("label")
            if isinstance(term, str) and term.strip():
                yield term.strip()


def _dedupe(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _case_id(link: str, item_id: str, pattern: re.Pattern[str] | None) -> str | None:
    if link:
        if pattern is None:
            segments = [s for s in urlsplit(link).path.split("/") if s]
            if segments:
                return segments[-1]
        else:
            match = pattern.search(link)
            if match:
                if "case_id" in match.groupdict():
                    return match.group("case_id")
                return match.group(1) if match.re.groups else match.group(0)
    return item_id or None


@dataclass(frozen=True)
class MappedItem:
    """A feed item as the fields of a case update (valid or not)."""

    event_id: str
    """A hash of the feed URL, the item's id (or link) and its updated date."""
    record: SourceRecord
    """What to emit; its origin is the item's link."""
    occurred_at: datetime
    """The item's updated (else published) date; the time it was read when it has neither."""
    dated: bool
    """The item had a date."""


def map_item(
    entry: Mapping[str, Any],
    config: FeedConfig,
    *,
    now: datetime,
    pattern: re.Pattern[str] | None = None,
) -> MappedItem:
    """Turn one feedparser entry into the fields of a case update. Pure.

    Args:
        entry: The item as feedparser gives it.
        config: The source's settings (mapping, defaults, language).
        now: The time to use as ``occurred_at`` for an item without a date.
        pattern: ``config.case_id_pattern`` compiled (compiled here when not given).

    Returns:
        The item's event id (the same item read again gives the same id, an edited one
        a new id) and the record to emit, whose fields may be invalid: the framework
        then dead-letters it, naming them.

    """
    if pattern is None and config.case_id_pattern is not None:
        pattern = re.compile(config.case_id_pattern)
    link = _raw(entry, "link") or ""
    item_id = _raw(entry, "id") or ""
    link = link if isinstance(link, str) else ""
    item_id = item_id if isinstance(item_id, str) else ""
    stamp = _raw(entry, "updated") or _raw(entry, "published") or ""
    title = _text(entry, "title")
    summary = _summary(entry)
    identity = item_id or link or stable_id(title, summary)
    event_id = "feed-" + stable_id(config.url, identity, stamp, length=24)

    fields: dict[str, Any] = dict(config.defaults)
    prefixes = config.prefixes
    statuses: list[str] = []
    countries: list[str] = []
    brands: list[str] = []
    issues: list[str] = []
    for term in _categories(entry):
        folded = term.casefold()
        for prefix, found in (
            (prefixes.status, statuses),
            (prefixes.country, countries),
            (prefixes.brand, brands),
            (prefixes.issue, issues),
        ):
            if folded.startswith(prefix.casefold()):
                value = term[len(prefix) :].strip()
                if value:
                    found.append(value)
                break
    # The first category of a kind wins; more would be a feed's own inconsistency.
    if statuses:
        fields["status"] = _slug(statuses[0])
    if countries:
        fields["country"] = countries[0]
    if brands:
        fields["brands"] = _dedupe(brands)
    if issues:
        fields["issues"] = _dedupe(_slug(issue) for issue in issues)
    case_id = _case_id(link, item_id, pattern)
    if case_id is not None:
        fields["case_id"] = case_id
    if title:
        fields["title"] = {config.language: title}
    if summary:
        fields["summary"] = {config.language: summary}
    dated = _when(entry)
    occurred_at = dated or now
    fields["occurred_at"] = occurred_at
    fields["event_id"] = event_id
    fields["published_by"] = config.publisher()
    record = SourceRecord(fields, origin=link or item_id or f"item {event_id}")
    return MappedItem(event_id, record, occurred_at, dated is not None)


# -- the checkpoint ----------------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    url: str
    seen: tuple[str, ...] = ()
    etag: str | None = None
    modified: str | None = None

    @classmethod
    def resume(cls, checkpoint: Checkpoint | None, url: str) -> _State:
        if not checkpoint:
            return cls(url)
        seen = tuple(str(i) for i in checkpoint.get("seen", ()))[-MAX_SEEN:]
        if checkpoint.get("url") != url:
            # The validators belong to another URL's answers; the seen ids are kept (they
            # hash the URL, so they cannot hide another feed's items).
            return cls(url, seen)
        return cls(url, seen, checkpoint.get("etag"), checkpoint.get("modified"))

    def checkpoint(self) -> Checkpoint:
        return {"url": self.url, "seen": list(self.seen), "etag": self.etag, "modified": self.modified}


# -- the source --------------------------------------------------------------------------


def _require_feedparser() -> ModuleType:
    try:
        import feedparser
    except ImportError as exc:
        raise ConfigurationError(
            "the feed connector needs the feedparser library, which is not installed; "
            "install it with: pip install 'mobilise[feeds]'"
        ) from exc
    module: ModuleType = feedparser
    return module


def _display(url: str) -> str:
    """The URL without any user and password in it, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def _retry_after(headers: Mapping[str, str]) -> float | None:
    seconds = retry_after(headers)
    return None if seconds is None else max(1.0, seconds)


class FeedSource(Source[FeedConfig]):
    """Polls an RSS or Atom feed and emits its new items as case updates.

    Delivery guarantee: at least once per item, and duplicates are harmless downstream.
    Each poll's new items are emitted as one batch together with the checkpoint that
    marks them done (the event ids of the last 2,000 items emitted, and the feed's ETag
    and Last-Modified), so a restart re-reads the feed without emitting them again; a
    crash between the batch and its checkpoint emits it again with the same event ids
    (the hash of the feed URL, the item's id or link, and its updated date), which the
    pipeline recognises as the same events. An edited item (a new updated date) is a
    new case update. An item whose fields do not make a valid case update is emitted
    anyway, so that it is dead-lettered with the reason, and marked done like the others.

    Failures: a 5xx, 408 or 429 answer, a timeout or a connection error raise
    :class:`RetryableError` (the framework runs the source again after a backoff); any
    other 4xx answer, or a body that is not an RSS or Atom feed, raise
    :class:`ConfigurationError` naming the URL and what it answered.
    """

    name = "feed"
    produces = ("case-updates",)
    Config = FeedConfig

    def __init__(self, config: FeedConfig) -> None:
        super().__init__(config)
        self._session: aiohttp.ClientSession | None = None
        self._feedparser: ModuleType | None = None
        self._pattern = re.compile(config.case_id_pattern) if config.case_id_pattern else None

    async def setup(self) -> None:
        """Load feedparser and open the HTTP client."""
        self._feedparser = _require_feedparser()
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                headers={"User-Agent": "mobilise-feed/1", "Accept": _ACCEPT},
            )
        log.info("feed.ready", url=_display(self.config.url), poll_seconds=self.config.poll_seconds)

    async def close(self) -> None:
        """Close the HTTP client."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def run(self, context: SourceContext) -> None:
        """Poll until stopping (or once, with ``once``); emit each poll's new items with their checkpoint."""
        state = _State.resume(context.checkpoint, self.config.url)
        while not context.stopping.is_set():
            state = await self._poll(context, state)
            if self.config.once or not await context.sleep(self.config.poll_seconds):
                return

    async def _poll(self, context: SourceContext, state: _State) -> _State:
        fetched = await self._fetch(state)
        if fetched is None:
            log.debug("feed.unchanged", url=_display(self.config.url))
            return state
        body, etag, modified, content_type = fetched
        entries = await asyncio.to_thread(self._parse, body, content_type)
        now = datetime.now(UTC)
        seen = set(state.seen)
        fresh: list[MappedItem] = []
        for entry in entries:
            item = map_item(entry, self.config, now=now, pattern=self._pattern)
            if item.event_id in seen:
                continue
            seen.add(item.event_id)
            fresh.append(item)
            if not item.dated:
                log.warning(
                    "feed.item_undated",
                    origin=item.record.origin,
                    event_id=item.event_id,
                    detail="the item has no published or updated date; occurred_at is the time it was read",
                )
        # Feeds list the newest first; the topic should get a case's updates in the order they happened.
        fresh.reverse()
        fresh.sort(key=lambda item: item.occurred_at)
        new_state = _State(
            self.config.url,
            (*state.seen, *(item.event_id for item in fresh))[-MAX_SEEN:],
            etag,
            modified,
        )
        if not fresh and new_state == state:
            return state
        report = await context.emit([item.record for item in fresh], checkpoint=new_state.checkpoint())
        for rejection in report.rejected:
            log.warning("feed.item_rejected", origin=rejection.origin, reason=rejection.reason)
        log.info(
            "feed.polled",
            url=_display(self.config.url),
            items=len(entries),
            new=len(fresh),
            accepted=len(report.accepted),
            rejected=len(report.rejected),
        )
        return new_state

    async def _fetch(self, state: _State) -> tuple[bytes, str | None, str | None, str] | None:
        """GET the feed, conditionally; None when it has not changed (304)."""
        if self._session is None:
            raise RuntimeError("FeedSource.run() was called before setup()")
        url = self.config.url
        headers = {}
        if state.etag:
            headers["If-None-Match"] = state.etag
        if state.modified:
            headers["If-Modified-Since"] = state.modified
        try:
            async with self._session.get(url, headers=headers) as response:
                if response.status == 304:
                    return None
                if response.status >= 500 or response.status in _TEMPORARY_CLIENT_ERRORS:
                    answered = f"{response.status} {response.reason or ''}".rstrip()
                    raise RetryableError(
                        f"the feed {_display(url)} answered {answered}",
                        retry_after=_retry_after(response.headers),
                    )
                if response.status >= 300:
                    raise ConfigurationError(
                        f"the feed {_display(url)} answered {response.status} {response.reason or ''}; "
                        "check the setting url (is it the feed's address, and public?)"
                    )
                body = await response.content.read(_MAX_BODY_BYTES + 1)
                if len(body) > _MAX_BODY_BYTES:
                    raise ConfigurationError(
                        f"the feed {_display(url)} is larger than {_MAX_BODY_BYTES // (1024 * 1024)} MiB; "
                        "check the setting url, or ask its publisher for a shorter feed"
                    )
                return (
                    body,
                    response.headers.get("ETag"),
                    response.headers.get("Last-Modified"),
                    response.headers.get("Content-Type", ""),
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RetryableError(f"cannot fetch the feed {_display(url)}: {exc!r}") from exc

    def _parse(self, body: bytes, content_type: str) -> Sequence[Mapping[str, Any]]:
        assert self._feedparser is not None  # set by setup(), which run() needs anyway
        # A file object, never bytes: feedparser would fetch a body that reads as a URL.
        parsed = self._feedparser.parse(
            io.BytesIO(body),
            response_headers={"content-type": content_type, "content-location": self.config.url},
        )
        entries: Sequence[Mapping[str, Any]] = parsed.get("entries") or []
        if not entries and (parsed.get("bozo") or not parsed.get("version")):
            why = parsed.get("bozo_exception")
            raise ConfigurationError(
                f"the feed {_display(self.config.url)} did not answer with an RSS or Atom feed"
                + (f" ({why})" if why else "")
                + "; check the setting url"
            )
        return entries
