"""A fake OSDI 1.x server (people, tags, taggings, the person signup helper) on 127.0.0.1.

It answers in HAL+JSON as Action Network's API v2 does: collections embed their items under
``_embedded["osdi:people"]`` / ``["osdi:taggings"]`` / ``["osdi:tags"]`` and link the next
page as ``_links.next``; a person links their taggings (``_links["osdi:taggings"]``), and
each tagging its tag (``_links["osdi:tag"]``). ``GET /people`` takes ``page``, ``per_page``
(at most 25, like Action Network) and ``filter=modified_date gt|lt|eq '<time>'``, compared to
the second, and lists people in an order unrelated to when they changed (Action Network
documents that it does not sort them). ``POST /people`` is the signup helper: it finds the
person by email address (case-insensitively) or adds one, applies the fields given, leaves
an existing person's status alone unless ``subscribed`` or ``unsubscribed`` is given
(a new person is subscribed unless told otherwise), and adds ``add_tags`` — creating unknown
tags, or, with ``unknown_tags="ignore"``, dropping them as Action Network does. A person's
``modified_date`` moves only when something about them changed.

Every request needs the right ``OSDI-API-Token`` (401 otherwise, quoting the key it got, so
that tests see a client never repeats it). Every request is recorded
(:attr:`FakeOsdi.requests`); :meth:`FakeOsdi.fail_next` makes the next ones answer an error.
Times come from :attr:`FakeOsdi.now` (also sent as the Date header), which tests move.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Literal

from aiohttp import web

from .loopback import LoopbackServer

__all__ = ["TOKEN", "FakeOsdi", "RecordedRequest", "StoredPerson"]

TOKEN = "osdi-test-token-0123456789abcdef"
_MAX_PER_PAGE = 25
_FILTER = re.compile(r"^\s*modified_date\s+(gt|lt|eq)\s+'([^']+)'\s*$")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received, and its answer's status."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    body: Any = None


@dataclass
class StoredPerson:
    """A person as the fake keeps them."""

    id: str
    email: str
    status: str
    created: datetime
    modified: datetime
    given_name: str | None = None
    family_name: str | None = None
    languages: list[str] = field(default_factory=list)
    identifiers: list[str] = field(default_factory=list)
    custom_fields: dict[str, Any] = field(default_factory=dict)
    postal_addresses: list[dict[str, Any]] = field(default_factory=list)
    tag_ids: list[str] = field(default_factory=list)


def _second(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(microsecond=0)


def _iso(value: datetime) -> str:
    return _second(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class FakeOsdi(LoopbackServer):
    """The fake server. Start it with ``async with FakeOsdi() as fake``; then use :attr:`people_url`."""

    name = "fake OSDI server"

    def __init__(self, token: str = TOKEN, *, unknown_tags: Literal["create", "ignore"] = "create") -> None:
        self.token = token
        self.unknown_tags = unknown_tags
        self.now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
        """The server's clock: people's created/modified dates, and the Date header."""
        self.people: dict[str, StoredPerson] = {}
        self.tags: dict[str, str] = {}
        """Tag id → name."""
        self.requests: list[RecordedRequest] = []
        self._failures: list[tuple[re.Pattern[str], int, dict[str, Any], dict[str, str]]] = []
        self._ids = 0

    # -- what tests do ----------------------------------------------------------------------

    @property
    def people_url(self) -> str:
        """The people collection, which is also the signup helper."""
        return f"{self.url}/people"

    @property
    def tags_url(self) -> str:
        """The tags collection."""
        return f"{self.url}/tags"

    def advance(self, seconds: float = 1.0) -> datetime:
        """Move the clock on; return the new time."""
        self.now += timedelta(seconds=seconds)
        return self.now

    def fail_next(
        self,
        count: int = 1,
        status: int = 503,
        *,
        error: str = "",
        retry_after: float | None = None,
        match: str = "",
    ) -> None:
        """Answer ``status`` to the next ``count`` requests whose path and query match the regex ``match``."""
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        body = {"error": error or ("Service Unavailable" if status >= 500 else "Bad Request")}
        self._failures.extend([(re.compile(match), status, body, headers)] * count)

    def add_person(
        self,
        email: str,
        *,
        tags: Iterable[str] = (),
        status: str = "subscribed",
        given_name: str | None = None,
        family_name: str | None = None,
        languages: Iterable[str] = (),
        identifiers: Iterable[str] = (),
        custom_fields: dict[str, Any] | None = None,
        created: datetime | None = None,
        modified: datetime | None = None,
    ) -> str:
        """Store a person as if they had been on the list all along; return their id."""
        person = StoredPerson(
            id=self._new_id(),
            email=email,
            status=status,
            created=_second(created or self.now),
            modified=_second(modified or created or self.now),
            given_name=given_name,
            family_name=family_name,
            languages=list(languages),
            custom_fields=dict(custom_fields or {}),
        )
        person.identifiers = [f"fake_osdi:{person.id}", *identifiers]
        for name in tags:
            tag_id = self._tag_id(name, create=True)
            assert tag_id is not None
            if tag_id not in person.tag_ids:
                person.tag_ids.append(tag_id)
        self.people[person.id] = person
        return person.id

    def change(self, person_id: str, *, add_tags: Iterable[str] = (), **fields: Any) -> None:
        """Change a person as an organiser would (their modified_date becomes :attr:`now`)."""
        person = self.people[person_id]
        for name, value in fields.items():
            setattr(person, name, value)
        for name in add_tags:
            tag_id = self._tag_id(name, create=True)
            assert tag_id is not None
            if tag_id not in person.tag_ids:
                person.tag_ids.append(tag_id)
        person.modified = _second(self.now)

    def find(self, email: str) -> StoredPerson | None:
        """The person with this address, if any."""
        for person in self.people.values():
            if person.email.casefold() == email.casefold():
                return person
        return None

    def tag_names(self, person_id: str) -> list[str]:
        """The names of a person's tags."""
        return [self.tags[tag_id] for tag_id in self.people[person_id].tag_ids]

    def requested(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        """The recorded requests of ``method`` whose path matches the regular expression ``path_pattern``."""
        return [r for r in self.requests if r.method == method and re.fullmatch(path_pattern, r.path)]

    # -- the model ----------------------------------------------------------------------------

    def _new_id(self) -> str:
        self._ids += 1
        return f"{self._ids:04d}-" + hashlib.sha256(str(self._ids).encode()).hexdigest()[:12]

    def _tag_id(self, name: str, *, create: bool) -> str | None:
        # Tag names are unique regardless of case, as in Action Network.
        for tag_id, existing in self.tags.items():
            if existing.casefold() == name.casefold():
                return tag_id
        if not create:
            return None
        tag_id = self._new_id()
        self.tags[tag_id] = name
        return tag_id

    def _person_json(self, base: str, person: StoredPerson) -> dict[str, Any]:
        rendered: dict[str, Any] = {
            "identifiers": list(person.identifiers),
            "created_date": _iso(person.created),
            "modified_date": _iso(person.modified),
            "email_addresses": [{"primary": True, "address": person.email, "status": person.status}],
            "custom_fields": dict(person.custom_fields),
            "_links": {
                "self": {"href": f"{base}/people/{person.id}"},
                "osdi:taggings": {"href": f"{base}/people/{person.id}/taggings"},
            },
        }
        if person.given_name is not None:
            rendered["given_name"] = person.given_name
        if person.family_name is not None:
            rendered["family_name"] = person.family_name
        if person.languages:
            rendered["languages_spoken"] = list(person.languages)
        if person.postal_addresses:
            rendered["postal_addresses"] = list(person.postal_addresses)
        return rendered

    def _tag_json(self, base: str, tag_id: str) -> dict[str, Any]:
        return {
            "identifiers": [f"fake_osdi:{tag_id}"],
            "name": self.tags[tag_id],
            "_links": {
                "self": {"href": f"{base}/tags/{tag_id}"},
                "osdi:taggings": {"href": f"{base}/tags/{tag_id}/taggings"},
            },
        }

    # -- the server ---------------------------------------------------------------------------

    def _answer(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            text=json.dumps(payload),
            status=status,
            content_type="application/hal+json",
            headers={"Date": format_datetime(self.now, usegmt=True), **(headers or {})},
        )

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        failure = next((f for f in self._failures if f[0].search(request.path_qs)), None)
        presented = request.headers.get("OSDI-API-Token")
        if failure is not None:
            self._failures.remove(failure)
            _, status, payload, headers = failure
            response: web.StreamResponse = self._answer(payload, status, headers)
        elif presented != self.token:
            # Echoing the key, as careless servers do: a client must not repeat it.
            response = self._answer({"error": f"API Key invalid or not present: {presented}"}, 401)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                response = self._answer({"error": exc.reason}, exc.status)
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.query), response.status, body)
        )
        return response

    def _page(
        self, request: web.Request, items: list[Any], rel: str, render: Callable[[Any], dict[str, Any]]
    ) -> web.Response:
        try:
            page = max(1, int(request.query.get("page", "1")))
            per_page = min(_MAX_PER_PAGE, max(1, int(request.query.get("per_page", str(_MAX_PER_PAGE)))))
        except ValueError:
            return self._answer({"error": "page and per_page must be numbers"}, 400)
        chunk = items[(page - 1) * per_page : page * per_page]
        embedded = [render(item) for item in chunk]
        links: dict[str, Any] = {
            "self": {"href": str(request.url)},
            rel: [{"href": item["_links"]["self"]["href"]} for item in embedded],
            "curies": [{"name": "osdi", "href": f"{_base(request)}/docs/v2/{{rel}}", "templated": True}],
        }
        if page * per_page < len(items):
            links["next"] = {"href": str(request.url.update_query(page=page + 1))}
        if page > 1:
            links["previous"] = {"href": str(request.url.update_query(page=page - 1))}
        return self._answer(
            {"per_page": per_page, "page": page, "_links": links, "_embedded": {rel: embedded}}
        )

    async def _list_people(self, request: web.Request) -> web.Response:
        people = sorted(self.people.values(), key=lambda p: hashlib.sha256(p.id.encode()).hexdigest())
        condition = request.query.get("filter")
        if condition is not None:
            match = _FILTER.match(condition)
            if match is None:
                return self._answer({"error": f"unsupported filter {condition!r}"}, 400)
            try:
                bound = _second(_parse(match.group(2)))
            except ValueError:
                return self._answer({"error": f"not a date: {match.group(2)!r}"}, 400)
            compare: Callable[[StoredPerson], bool] = {
                "gt": lambda p: p.modified > bound,
                "lt": lambda p: p.modified < bound,
                "eq": lambda p: p.modified == bound,
            }[match.group(1)]
            people = [p for p in people if compare(p)]
        base = _base(request)
        return self._page(request, people, "osdi:people", lambda p: self._person_json(base, p))

    async def _person(self, request: web.Request) -> web.Response:
        person = self.people.get(request.match_info["id"])
        if person is None:
            raise web.HTTPNotFound(reason="no such person")
        return self._answer(self._person_json(_base(request), person))

    async def _taggings(self, request: web.Request) -> web.Response:
        person = self.people.get(request.match_info["id"])
        if person is None:
            raise web.HTTPNotFound(reason="no such person")
        base = _base(request)

        def render(tag_id: str) -> dict[str, Any]:
            return {
                "identifiers": [f"fake_osdi:{person.id}-{tag_id}"],
                "item_type": "osdi:person",
                "_links": {
                    "self": {"href": f"{base}/tags/{tag_id}/taggings/{person.id}"},
                    "osdi:tag": {"href": f"{base}/tags/{tag_id}"},
                    "osdi:person": {"href": f"{base}/people/{person.id}"},
                },
            }

        return self._page(request, list(person.tag_ids), "osdi:taggings", render)

    async def _list_tags(self, request: web.Request) -> web.Response:
        base = _base(request)
        return self._page(request, list(self.tags), "osdi:tags", lambda tag_id: self._tag_json(base, tag_id))

    async def _tag(self, request: web.Request) -> web.Response:
        tag_id = request.match_info["id"]
        if tag_id not in self.tags:
            raise web.HTTPNotFound(reason="no such tag")
        return self._answer(self._tag_json(_base(request), tag_id))

    async def _create_tag(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip():
            return self._answer({"error": "A tag needs a name."}, 400)
        tag_id = self._tag_id(name, create=True)
        assert tag_id is not None
        return self._answer(self._tag_json(_base(request), tag_id))

    async def _signup(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        fields = body.get("person") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return self._answer({"error": "The person field is required."}, 400)
        addresses = fields.get("email_addresses")
        entry = addresses[0] if isinstance(addresses, list) and addresses else None
        address = entry.get("address") if isinstance(entry, dict) else None
        if not isinstance(address, str) or "@" not in address:
            return self._answer({"error": "A person needs an email address."}, 400)
        status = entry.get("status") if isinstance(entry, dict) else None
        if status not in (None, "subscribed", "unsubscribed"):
            return self._answer({"error": f"{status!r} is not a valid status here."}, 400)
        person = self.find(address)
        before = None if person is None else json.dumps(self._person_json("", person), sort_keys=True)
        if person is None:
            person = StoredPerson(
                id=self._new_id(),
                email=address,
                status="subscribed",
                created=_second(self.now),
                modified=_second(self.now),
            )
            person.identifiers = [f"fake_osdi:{person.id}"]
            self.people[person.id] = person
        if status is not None:
            person.status = status
        for name in ("given_name", "family_name"):
            if isinstance(fields.get(name), str):
                setattr(person, name, fields[name])
        if isinstance(fields.get("languages_spoken"), list):
            person.languages = [str(code) for code in fields["languages_spoken"]]
        for identifier in fields.get("identifiers") or ():
            if identifier not in person.identifiers:
                person.identifiers.append(identifier)
        if isinstance(fields.get("custom_fields"), dict):
            person.custom_fields.update(fields["custom_fields"])
        if isinstance(fields.get("postal_addresses"), list):
            person.postal_addresses = list(fields["postal_addresses"])
        for name in body.get("add_tags") or ():
            tag_id = self._tag_id(str(name), create=self.unknown_tags == "create")
            if tag_id is not None and tag_id not in person.tag_ids:
                person.tag_ids.append(tag_id)
        if before != json.dumps(self._person_json("", person), sort_keys=True):
            person.modified = _second(self.now)
        return self._answer(self._person_json(_base(request), person))

    def application(self) -> web.Application:
        """The OSDI people and tags routes, behind the token check."""
        app = web.Application(middlewares=[self._gate])
        app.router.add_get("/people", self._list_people)
        app.router.add_post("/people", self._signup)
        app.router.add_get("/people/{id}", self._person)
        app.router.add_get("/people/{id}/taggings", self._taggings)
        app.router.add_get("/tags", self._list_tags)
        app.router.add_post("/tags", self._create_tag)
        app.router.add_get("/tags/{id}", self._tag)
        return app


def _base(request: web.Request) -> str:
    return str(request.url.origin())


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError:
        raise web.HTTPBadRequest(reason="the body is not JSON") from None
