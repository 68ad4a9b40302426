"""OsdiSink: subscribers to an OSDI system (Action Network, and others) through its person signup helper.

Each confirmed Subscription of the subscriptions topic becomes one POST of the person and
their choices as tags (:func:`connectors.osdi_people.signup_body`); the helper finds the
person by email address and updates them, or adds them. With ``tags_url`` set, the sink
first creates the tags the system does not have yet: Action Network's helper ignores tag
names it does not know.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import structlog
from pydantic import BaseModel, Field, SecretStr, field_validator
from yarl import URL

from schemas import Subscription, Suppression

from .base import ConnectorConfig, Sink, SinkOutcome
from .osdi_people import IDENTIFIER_PREFIX, body_excerpt, osdi_session, signup_body, subscription_tags
from .retry_after import retry_after

__all__ = ["OsdiSink", "OsdiSinkConfig"]

log = structlog.get_logger(__name__)

_HAL = "application/hal+json, application/json"
_ADDRESS = re.compile(r"[^\s@<>()\[\]\"',;:]+@[^\s@<>()\[\]\"',;:]+")


def _http_url(value: str | None, example: str) -> str | None:
    if value is None:
        return None
    parsed = URL(value)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"must be an http(s) URL such as {example!r}, not {value!r}")
    return value


class OsdiSinkConfig(ConnectorConfig):
    """Settings of the OSDI sink."""

    url: str
    """The person signup helper, e.g. ``https://actionnetwork.org/api/v2/people`` (Action
    Network's lives at the people collection)."""
    api_token: SecretStr = Field(min_length=1)
    """The API key, sent as the ``OSDI-API-Token`` header (give it as ``${ENV_VAR}``)."""
    concurrency: int = Field(default=4, ge=1, le=32)
    """Requests in flight at once (Action Network allows 4 a second)."""
    tags_url: str | None = None
    """The tags collection, e.g. ``https://actionnetwork.org/api/v2/tags``: when set, tags the
    system lacks are created before a person is given them. Needed for Action Network,
    whose signup helper drops unknown tag names (and with them the person's choices)."""
    timeout: float = Field(default=30.0, gt=0, le=600)
    """Seconds to wait for one answer before calling it retryable."""

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        return _http_url(value, "https://actionnetwork.org/api/v2/people") or value

    @field_validator("tags_url")
    @classmethod
    def _tags_url_is_http(cls, value: str | None) -> str | None:
        return _http_url(value, "https://actionnetwork.org/api/v2/tags")


@dataclass(frozen=True)
class _Verdict:
    """What an answer means for the record it was about."""

    kind: Literal["accepted", "retryable", "permanent"]
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    body: Any = None
    """The JSON of an accepted answer, when it is JSON."""

    def outcome(self, record_id: str, provider_message_id: str | None = None) -> SinkOutcome:
        if self.kind == "accepted":
            return SinkOutcome(record_id=record_id, accepted=True, provider_message_id=provider_message_id)
        return SinkOutcome(
            record_id=record_id,
            accepted=False,
            retryable=self.kind == "retryable",
            retry_after=self.retry_after,
            error=self.error,
        )


def _judge(status: int, headers: Mapping[str, str], text: str, secret: str) -> _Verdict:
    """2xx accepted; 429 and 5xx retryable (after Retry-After); any other answer permanent."""
    if 200 <= status < 300:
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        return _Verdict("accepted", status, body=body)
    excerpt = body_excerpt(text, secret)
    if status == 429 or status >= 500:
        return _Verdict(
            "retryable", status, f"the OSDI server answered {status}: {excerpt}", retry_after(headers)
        )
    if status in (401, 403):
        return _Verdict(
            "permanent",
            status,
            f"the OSDI server refused the api_token ({status}): {excerpt}; check the api_token setting",
        )
    return _Verdict("permanent", status, f"the OSDI server refused the person ({status}): {excerpt}")


def _person_id(body: Any) -> str | None:
    """The system's own identifier of the person it answered with (not our ``mobilise:`` one)."""
    identifiers = body.get("identifiers") if isinstance(body, dict) else None
    for identifier in identifiers or ():
        if isinstance(identifier, str) and not identifier.startswith(IDENTIFIER_PREFIX):
            return identifier
    return None


class OsdiSink(Sink[OsdiSinkConfig, BaseModel]):
    """Exports subscribers to an OSDI system through its person signup helper.

    Delivery guarantee: at least once, and a repeat changes nothing. A record is reported
    accepted only after the server answered 2xx for it; after a crash it is posted again,
    and the helper matches people by email address (Action Network: "people are matched and
    deduplicated by email address"), so the same person is updated, not added twice. Two
    subscriptions of one address in a batch are posted in order, one after the other.

    What is sent: confirmed Subscriptions only. The address goes without a subscription
    status, so an existing person who unsubscribed there stays unsubscribed; the system
    subscribes a person new to it. Tags are only added, never removed: a choice dropped in
    mobilise stays as a tag there. Suppressions name a subscriber id and no address, so
    there is nothing a signup helper could match them to: they are accepted and not sent.
    Tombstones (erasures) never reach a sink.

    Outcomes: 2xx accepted (provider id: the person's identifier on that system); 429, 5xx
    and no answer retryable (after Retry-After); any other answer permanent, with its
    status and the start of its body (401/403: the token was refused).
    """

    name = "osdi-sink"
    accepts = BaseModel
    Config = OsdiSinkConfig

    def __init__(self, config: OsdiSinkConfig) -> None:
        super().__init__(config)
        self._session: aiohttp.ClientSession | None = None
        self._known_tags: set[str] | None = None
        self._tags_lock = asyncio.Lock()

    async def setup(self) -> None:
        """Open the HTTP client (the token goes in every request's header)."""
        if self._session is None:
            self._session = osdi_session(self.config.api_token, self.config.timeout)

    async def close(self) -> None:
        """Close the HTTP client."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def deliver(self, records: Sequence[BaseModel]) -> Sequence[SinkOutcome]:
        """Post each confirmed subscription; one outcome per record."""
        if self._session is None:
            raise RuntimeError("OsdiSink.deliver() was called before setup()")
        outcomes: list[SinkOutcome] = []
        by_address: dict[str, list[tuple[str, Subscription]]] = {}
        for record in records:
            record_id = self.record_id(record)
            if isinstance(record, Suppression):
                log.info("osdi_sink.not_sent", record_id=record_id, reason="a suppression carries no address")
                outcomes.append(SinkOutcome(record_id=record_id, accepted=True))
            elif not isinstance(record, Subscription):
                outcomes.append(
                    SinkOutcome(
                        record_id=record_id,
                        accepted=False,
                        error=f"the OSDI sink takes subscriptions, not {type(record).__name__}; declare it "
                        "on the subscriptions topic",
                    )
                )
            elif not record.confirmed:
                # An address nobody confirmed must not join another system's list: the
                # helper would subscribe it, and that list's mail would go to it unasked.
                # The confirmed subscription that follows is exported then.
                log.info("osdi_sink.not_sent", record_id=record_id, reason="not confirmed")
                outcomes.append(SinkOutcome(record_id=record_id, accepted=True))
            else:
                by_address.setdefault(str(record.email).casefold(), []).append((record_id, record))
        limit = asyncio.Semaphore(self.config.concurrency)

        async def post_in_order(items: list[tuple[str, Subscription]]) -> list[SinkOutcome]:
            results: list[SinkOutcome] = []
            for record_id, subscription in items:
                if results and not results[-1].accepted:
                    # An older subscription sent after a newer one would overwrite it.
                    results.append(
                        SinkOutcome(
                            record_id=record_id,
                            accepted=False,
                            retryable=True,
                            error="not sent: an earlier subscription of the same address in the batch failed",
                        )
                    )
                    continue
                async with limit:
                    results.append(await self._export(record_id, subscription))
            return results

        for results in await asyncio.gather(*(post_in_order(items) for items in by_address.values())):
            outcomes.extend(results)
        return outcomes

    async def _export(self, record_id: str, subscription: Subscription) -> SinkOutcome:
        body = signup_body(subscription)
        if self.config.tags_url is not None:
            verdict = await self._ensure_tags(subscription_tags(subscription))
            if verdict is not None:
                _log(verdict, record_id, subscription.subscriber_id, "creating its tags")
                return verdict.outcome(record_id)
        verdict = await self._call("POST", self.config.url, body)
        _log(verdict, record_id, subscription.subscriber_id, "posting the person")
        return verdict.outcome(record_id, _person_id(verdict.body))

    async def _ensure_tags(self, names: list[str]) -> _Verdict | None:
        """Create the tags of ``names`` the system lacks; the failure, if one request failed."""
        assert self.config.tags_url is not None
        async with self._tags_lock:
            if self._known_tags is None:
                known, failure = await self._existing_tags(self.config.tags_url)
                if failure is not None:
                    return failure
                self._known_tags = known
            for name in names:
                # Action Network's tag names compare without case.
                if name.casefold() in self._known_tags:
                    continue
                verdict = await self._call("POST", self.config.tags_url, {"name": name})
                if verdict.kind != "accepted":
                    return verdict
                self._known_tags.add(name.casefold())
        return None

    async def _existing_tags(self, url: str) -> tuple[set[str], _Verdict | None]:
        names: set[str] = set()
        origin = URL(url).origin()
        next_url: str | None = str(URL(url).update_query(per_page=25))
        while next_url is not None:
            verdict = await self._call("GET", next_url, None)
            if verdict.kind != "accepted":
                return names, verdict
            page = verdict.body if isinstance(verdict.body, dict) else {}
            tags = (page.get("_embedded") or {}).get("osdi:tags") or []
            names |= {
                t["name"].casefold() for t in tags if isinstance(t, dict) and isinstance(t.get("name"), str)
            }
            link = ((page.get("_links") or {}).get("next") or {}).get("href")
            following = URL(next_url).join(URL(link)) if isinstance(link, str) and tags else None
            # The token goes with every request: never to a host a link points elsewhere.
            if following is None or str(following) == next_url or following.origin() != origin:
                next_url = None
            else:
                next_url = str(following)
        return names, None

    async def _call(self, method: str, url: str, body: dict[str, Any] | None) -> _Verdict:
        assert self._session is not None
        try:
            async with self._session.request(method, url, json=body, allow_redirects=False) as response:
                text = await response.text()
                return _judge(
                    response.status, response.headers, text, self.config.api_token.get_secret_value()
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _Verdict(
                "retryable", None, f"no answer from the OSDI server at {URL(url).origin()}: {exc!r}"
            )


def _log(verdict: _Verdict, record_id: str, subscriber_id: str, doing: str) -> None:
    # A refusal may quote the address it refused; logs get the subscriber id instead.
    error = _ADDRESS.sub("[address]", verdict.error) if verdict.error else None
    context = {
        "record_id": record_id,
        "subscriber_id": subscriber_id,
        "status": verdict.status,
        "error": error,
    }
    if verdict.kind == "accepted":
        log.info("osdi_sink.exported", person=_person_id(verdict.body), **context)
    elif verdict.status in (401, 403):
        log.error(
            "osdi_sink.unauthorized",
            fix="check the api_token setting: the key is wrong, revoked, or not the list's group's key",
            **context,
        )
    elif verdict.kind == "permanent":
        log.warning("osdi_sink.refused", doing=doing, **context)
    else:
        log.warning("osdi_sink.unavailable", doing=doing, retry_after=verdict.retry_after, **context)
