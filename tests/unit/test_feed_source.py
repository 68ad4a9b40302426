"""The feed source against a real HTTP server on 127.0.0.1 serving RSS 2.0 and Atom documents.

The server answers conditional requests the way feed hosts do (ETag / If-None-Match,
Last-Modified / If-Modified-Since → 304), can be told to answer a status instead, and
keeps the headers of every request it got.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError
from structlog.testing import capture_logs

from connectors.feed import MAX_SEEN, FeedConfig, FeedSource, map_item, strip_html
from connectors.registry import load_connector
from connectors.source import Checkpoint, EmitReport
from connectors.testing import MemorySourceContext, run_source
from mobilise.errors import ConfigurationError, RetryableError
from schemas import CaseUpdate
from schemas.vocabulary import CaseStatus

LAST_MODIFIED = "Tue, 07 May 2024 09:00:00 GMT"


@dataclass
class FeedServer:
    """Serves ``body`` at /feed.xml; ``status`` (when set) is answered instead."""

    body: bytes = b""
    content_type: str = "application/rss+xml; charset=utf-8"
    status: int | None = None
    conditional: bool = True
    """Answer If-None-Match / If-Modified-Since with 304 when they match."""
    requests: list[dict[str, str]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    url: str = ""

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        response = self._answer(request)
        self.answers.append(response.status)
        return response

    def _answer(self, request: web.Request) -> web.Response:
        if self.status is not None:
            return web.Response(status=self.status, text="no")
        headers = {"ETag": self.etag, "Last-Modified": LAST_MODIFIED}
        if self.conditional and (
            request.headers.get("If-None-Match") == self.etag
            or (
                "If-None-Match" not in request.headers
                and request.headers.get("If-Modified-Since") == LAST_MODIFIED
            )
        ):
            return web.Response(status=304, headers=headers)
        return web.Response(body=self.body, headers={**headers, "Content-Type": self.content_type})


@asynccontextmanager
async def serving(server: FeedServer) -> AsyncIterator[FeedServer]:
    app = web.Application()
    app.router.add_get("/feed.xml", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started above
    server.url = f"http://127.0.0.1:{port}/feed.xml"
    try:
        yield server
    finally:
        await runner.cleanup()


def serve(server: FeedServer, test: Callable[[FeedServer], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with serving(server):
            return await test(server)

    return asyncio.run(main())


async def poll(
    server: FeedServer, checkpoint: Checkpoint | None = None, **settings: Any
) -> MemorySourceContext:
    config = FeedConfig(url=server.url, once=True, **settings)
    return await run_source(FeedSource(config), MemorySourceContext("case-updates", checkpoint))


# -- documents ----------------------------------------------------------------------------


def rss_item(
    slug: str,
    *,
    title: str = "Workers dismissed at Rana Knit",
    description: str = (
        "&lt;p&gt;Forty workers were &lt;b&gt;dismissed&lt;/b&gt; after forming a union.&lt;/p&gt;"
    ),
    categories: tuple[str, ...] = (
        "status:urgent_action",
        "country:BD",
        "brand:Acme Apparel",
        "brand:Northwind",
        "issue:union_busting",
        "issue:Freedom of Association",
    ),
    pub_date: str = "Mon, 06 May 2024 10:00:00 +0600",
) -> str:
    tags = "".join(f"<category>{c}</category>" for c in categories)
    return (
        f"<item><title>{title}</title><link>https://cases.example.org/cases/{slug}?ref=feed</link>"
        f'<guid isPermaLink="false">case-{slug}</guid><description>{description}</description>'
        f"{tags}<pubDate>{pub_date}</pubDate></item>"
    )


def rss(*items: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        "<title>Case news</title><link>https://cases.example.org/</link><description>Cases</description>"
        + "".join(items)
        + "</channel></rss>"
    ).encode()


def atom_entry(slug: str, updated: str, *, status: str = "remedy_won") -> str:
    return (
        f'<entry><title type="html">Severance &lt;em&gt;paid&lt;/em&gt; at {slug}</title>'
        f"<id>urn:uuid:{slug}</id>"
        f'<link rel="alternate" href="https://cases.example.org/cases/{slug}"/>'
        f"<published>2024-05-01T08:00:00Z</published><updated>{updated}</updated>"
        '<content type="html">&lt;p&gt;The brand paid &amp;amp; the factory reopened.&lt;/p&gt;'
        "&lt;script&gt;alert(1)&lt;/script&gt;</content>"
        f'<category term="Status:{status}"/><category term="country:kh"/>'
        '<category term="issue:severance"/><category term="brand:Acme Apparel"/></entry>'
    )


def atom(*entries: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        "<title>Case news</title><id>urn:uuid:feed</id><updated>2024-05-02T08:00:00Z</updated>"
        + "".join(entries)
        + "</feed>"
    ).encode()


# -- mapping ------------------------------------------------------------------------------


def test_rss_items_become_case_updates() -> None:
    server = FeedServer(
        body=rss(rss_item("rana-knit"), rss_item("delta-garments", categories=("country:VN",)))
    )

    async def test(server: FeedServer) -> MemorySourceContext:
        return await poll(server, defaults={"status": "opened", "issues": ["wages"]})

    ctx = serve(server, test)
    assert ctx.rejected == []
    by_case = {update.case_id: update for update in ctx.records}
    assert set(by_case) == {"rana-knit", "delta-garments"}
    rana = by_case["rana-knit"]
    assert isinstance(rana, CaseUpdate)
    assert rana.status is CaseStatus.URGENT_ACTION
    assert rana.country == "BD"
    assert rana.brands == ("Acme Apparel", "Northwind")
    assert rana.issues == ("union_busting", "freedom_of_association")
    assert rana.title == {"en": "Workers dismissed at Rana Knit"}
    assert rana.summary == {"en": "Forty workers were dismissed after forming a union."}
    assert rana.occurred_at == datetime(2024, 5, 6, 4, 0, tzinfo=UTC)
    assert rana.published_by == "feed:127.0.0.1"
    assert rana.event_id.startswith("feed-")
    # What the item does not say comes from the defaults.
    delta = by_case["delta-garments"]
    assert delta.status is CaseStatus.OPENED
    assert delta.country == "VN"
    assert delta.issues == ("wages",)
    assert delta.brands == ()
    # One batch, with the checkpoint that marks both done.
    assert len(ctx.checkpoints) == 1
    assert sorted(ctx.checkpoints[0]["seen"]) == sorted(u.event_id for u in ctx.records)
    assert ctx.checkpoints[0]["etag"] == server.etag


def test_atom_entries_become_case_updates_with_html_stripped() -> None:
    server = FeedServer(
        body=atom(atom_entry("kh-sunrise", "2024-05-02T08:00:00Z")),
        content_type="application/atom+xml",
    )

    async def test(server: FeedServer) -> MemorySourceContext:
        return await poll(server, language="fr", published_by="clean-clothes-kh")

    ctx = serve(server, test)
    (update,) = ctx.records
    assert isinstance(update, CaseUpdate)
    assert update.case_id == "kh-sunrise"
    assert update.status is CaseStatus.REMEDY_WON
    assert update.country == "KH"
    assert update.issues == ("severance",)
    assert update.brands == ("Acme Apparel",)
    assert update.title == {"fr": "Severance paid at kh-sunrise"}
    assert update.summary == {"fr": "The brand paid & the factory reopened."}
    # The updated date, not the published one: an edit is when the new state came to be.
    assert update.occurred_at == datetime(2024, 5, 2, 8, 0, tzinfo=UTC)
    assert update.published_by == "clean-clothes-kh"


def test_case_id_from_a_pattern_or_from_the_item_id() -> None:
    config = FeedConfig(
        url="https://cases.example.org/feed.xml",
        case_id_pattern=r"/cases/(?P<case_id>[a-z-]+)/",
        defaults={"status": "opened", "country": "BD", "issues": ["wages"]},
    )
    now = datetime(2024, 5, 1, tzinfo=UTC)
    entry = {
        "link": "https://cases.example.org/cases/rana-knit/update-3",
        "id": "x",
        "title": "T",
        "summary": "S",
    }
    assert map_item(entry, config, now=now).record.value["case_id"] == "rana-knit"
    no_link = {"id": "case-42", "title": "T", "summary": "S"}
    assert map_item(no_link, config, now=now).record.value["case_id"] == "case-42"


def test_an_undated_item_happens_when_it_is_read_and_says_so() -> None:
    server = FeedServer(
        body=rss(rss_item("rana-knit").replace("<pubDate>Mon, 06 May 2024 10:00:00 +0600</pubDate>", ""))
    )

    async def test(server: FeedServer) -> tuple[MemorySourceContext, list[dict[str, Any]]]:
        with capture_logs() as logs:
            ctx = await poll(server)
        return ctx, logs

    before = datetime.now(UTC)
    ctx, logs = serve(server, test)
    (update,) = ctx.records
    assert before <= update.occurred_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert [entry["origin"] for entry in logs if entry["event"] == "feed.item_undated"] == [
        "https://cases.example.org/cases/rana-knit?ref=feed"
    ]


def test_strip_html_keeps_the_text_and_the_paragraphs() -> None:
    html = (
        "<h2>Update</h2><p>Workers &amp; organisers<br/>were <i>locked out</i>.</p>"
        "<style>p{}</style><p>Act now</p>"
    )
    assert strip_html(html) == "Update\n\nWorkers & organisers\nwere locked out.\n\nAct now"


# -- restarts -----------------------------------------------------------------------------


def test_a_second_run_from_the_checkpoint_emits_nothing_after_a_304() -> None:
    server = FeedServer(body=rss(rss_item("rana-knit"), rss_item("delta-garments")))

    async def test(server: FeedServer) -> tuple[MemorySourceContext, MemorySourceContext]:
        first = await poll(server)
        second = await poll(server, first.checkpoint)
        return first, second

    first, second = serve(server, test)
    assert len(first.records) == 2
    assert second.records == [] and second.rejected == [] and second.checkpoints == []
    assert "If-None-Match" not in server.requests[0]
    assert server.requests[1]["If-None-Match"] == server.etag
    assert server.requests[1]["If-Modified-Since"] == LAST_MODIFIED
    assert server.answers == [200, 304]


def test_a_feed_that_ignores_conditional_requests_still_emits_nothing_twice() -> None:
    server = FeedServer(body=rss(rss_item("rana-knit")), conditional=False)

    async def test(server: FeedServer) -> MemorySourceContext:
        first = await poll(server)
        assert len(first.records) == 1
        return await poll(server, first.checkpoint)

    second = serve(server, test)
    assert server.answers == [200, 200]
    assert second.records == [] and second.checkpoints == []


def test_only_a_new_item_is_emitted() -> None:
    server = FeedServer(body=rss(rss_item("rana-knit")))

    async def test(server: FeedServer) -> tuple[MemorySourceContext, MemorySourceContext]:
        first = await poll(server)
        server.body = rss(
            rss_item("delta-garments", pub_date="Tue, 07 May 2024 10:00:00 +0000"), rss_item("rana-knit")
        )
        return first, await poll(server, first.checkpoint)

    first, second = serve(server, test)
    assert [u.case_id for u in first.records] == ["rana-knit"]
    assert [u.case_id for u in second.records] == ["delta-garments"]
    assert server.answers == [200, 200]
    assert set(second.checkpoints[-1]["seen"]) == {first.records[0].event_id, second.records[0].event_id}


def test_an_edited_item_is_a_new_event() -> None:
    server = FeedServer(body=atom(atom_entry("kh-sunrise", "2024-05-02T08:00:00Z", status="escalated")))

    async def test(server: FeedServer) -> tuple[MemorySourceContext, MemorySourceContext]:
        first = await poll(server)
        server.body = atom(atom_entry("kh-sunrise", "2024-05-03T12:00:00Z", status="remedy_won"))
        return first, await poll(server, first.checkpoint)

    first, second = serve(server, test)
    (before,) = first.records
    (after,) = second.records
    assert before.case_id == after.case_id == "kh-sunrise"
    assert before.event_id != after.event_id
    assert (before.status, after.status) == (CaseStatus.ESCALATED, CaseStatus.REMEDY_WON)
    assert after.occurred_at == datetime(2024, 5, 3, 12, 0, tzinfo=UTC)


def test_the_same_item_read_again_has_the_same_event_id() -> None:
    config = FeedConfig(url="https://cases.example.org/feed.xml")
    entry = {"id": "case-1", "link": "https://cases.example.org/cases/c1", "updated": "2024-05-02T08:00:00Z"}
    first = map_item(entry, config, now=datetime(2024, 1, 1, tzinfo=UTC))
    again = map_item(dict(entry), config, now=datetime(2025, 1, 1, tzinfo=UTC))
    other_feed = map_item(entry, FeedConfig(url="https://other.example.org/feed.xml"), now=datetime.now(UTC))
    assert first.event_id == again.event_id != other_feed.event_id


def test_the_checkpoint_keeps_the_last_ids_only() -> None:
    seen = [f"feed-{i:024x}" for i in range(MAX_SEEN)]
    server = FeedServer(body=rss(rss_item("rana-knit")))

    async def test(server: FeedServer) -> MemorySourceContext:
        return await poll(server, {"url": server.url, "seen": seen, "etag": None, "modified": None})

    ctx = serve(server, test)
    kept = ctx.checkpoints[-1]["seen"]
    assert len(kept) == MAX_SEEN
    assert kept[-1] == ctx.records[0].event_id
    assert kept[0] == seen[1]


# -- items that are not valid case updates -----------------------------------------------


def test_an_invalid_item_is_rejected_naming_the_field_and_not_emitted_again() -> None:
    server = FeedServer(
        body=rss(
            rss_item("rana-knit"),
            rss_item("nowhere-mills", categories=("status:opened", "country:ZZ", "issue:wages")),
        ),
        conditional=False,
    )

    async def test(server: FeedServer) -> tuple[MemorySourceContext, MemorySourceContext]:
        first = await poll(server)
        return first, await poll(server, first.checkpoint)

    first, second = serve(server, test)
    assert [u.case_id for u in first.records] == ["rana-knit"]
    (rejection,) = first.rejected
    assert rejection.origin == "https://cases.example.org/cases/nowhere-mills?ref=feed"
    assert [e.loc for e in rejection.errors] == ["country"]
    assert "ZZ" in rejection.reason
    assert len(first.checkpoints[0]["seen"]) == 2
    assert second.records == [] and second.rejected == []


def test_defaults_are_checked_when_the_connector_is_configured() -> None:
    with pytest.raises(ValidationError, match="country"):
        FeedConfig(url="https://cases.example.org/feed.xml", defaults={"country": "ZZ"})
    with pytest.raises(ValidationError, match="colour"):
        FeedConfig(url="https://cases.example.org/feed.xml", defaults={"colour": "red"})
    with pytest.raises(ValidationError, match="case_id_pattern"):
        FeedConfig(url="https://cases.example.org/feed.xml", case_id_pattern="(")


# -- failures -----------------------------------------------------------------------------


def test_a_503_is_retryable_and_the_next_run_succeeds() -> None:
    server = FeedServer(body=rss(rss_item("rana-knit")), status=503)

    async def test(server: FeedServer) -> MemorySourceContext:
        with pytest.raises(RetryableError, match="503"):
            await poll(server)
        server.status = None
        return await poll(server)

    ctx = serve(server, test)
    assert server.answers == [503, 200]
    assert [u.case_id for u in ctx.records] == ["rana-knit"]


def test_a_connection_refused_is_retryable() -> None:
    async def test(server: FeedServer) -> str:
        return server.url

    url = serve(FeedServer(), test)  # the server is gone once serve returns: nothing listens there

    async def main() -> None:
        source = FeedSource(FeedConfig(url=url, once=True, timeout=5))
        await run_source(source, MemorySourceContext())

    with pytest.raises(RetryableError, match="cannot fetch"):
        asyncio.run(main())


def test_a_404_is_permanent_and_names_the_url_and_status() -> None:
    server = FeedServer(status=404)

    async def test(server: FeedServer) -> str:
        with pytest.raises(ConfigurationError) as raised:
            await poll(server)
        return str(raised.value)

    message = serve(server, test)
    assert "404" in message and server.url in message


def test_a_body_that_is_not_a_feed_is_permanent() -> None:
    server = FeedServer(body=b"\x00\x01 this is <<< not a feed", content_type="text/html")

    async def test(server: FeedServer) -> None:
        with pytest.raises(ConfigurationError, match="RSS or Atom"):
            await poll(server)

    serve(server, test)
    html = FeedServer(body=b"<html><body><p>Welcome</p></body></html>", content_type="text/html")
    serve(html, test)


# -- the loop -----------------------------------------------------------------------------


class StopAfterFirstBatch(MemorySourceContext):
    async def emit(self, records: Any, checkpoint: Checkpoint | None = None) -> EmitReport:
        report = await super().emit(records, checkpoint)
        self.stopping.set()
        return report


def test_polling_stops_when_the_framework_says_so() -> None:
    server = FeedServer(body=rss(rss_item("rana-knit")))

    async def test(server: FeedServer) -> MemorySourceContext:
        source = FeedSource(FeedConfig(url=server.url, poll_seconds=3600))
        ctx = StopAfterFirstBatch()
        await source.setup()
        try:
            # Returns by itself, long before the next poll is due (a TimeoutError fails the test).
            await asyncio.wait_for(source.run(ctx), 30)
        finally:
            await source.close()
        return ctx

    ctx = serve(server, test)
    assert len(ctx.records) == 1
    assert server.answers == [200]


def test_the_entry_point_finds_the_source() -> None:
    assert load_connector("feed") is FeedSource
    assert FeedSource.produces == ("case-updates",)
