"""The coordinators' JSON API under ``/api/v1``: publish case updates, follow cases, manage tokens.

Routes (described by the OpenAPI document at ``GET /api/v1/openapi.json``, see
:mod:`mobilise.web.openapi`):

* ``POST /api/v1/case-updates``: publish a :class:`~schemas.CaseUpdate` (``published_by``
  is the token's name), answered 202 once Kafka acknowledged both the update and its
  :class:`~schemas.AuditRecord`; with an ``Idempotency-Key`` header and no ``event_id`` the
  event id is ``stable_id("api", token_id, key)``, so a retry (after a timeout, a crash,
  or to another replica) publishes the same event, which the pipeline keeps once;
* ``GET /api/v1/cases``, ``GET /api/v1/cases/{case_id}``: latest statuses, timelines,
  delivery counts and, per action call, sent, opened, acted and progress toward its goal
  (:mod:`mobilise.web.cases_view`);
* ``POST /api/v1/waves/{wave_id}/cancel``: call off a wave not yet sent, as ``mobilise waves
  cancel`` does (:func:`mobilise.wave_cancellation.cancel_wave`: one copy on every partition
  of wave-cancellations, ``cancelled_by`` the token's name), answered 202 once Kafka
  acknowledged every copy; cancelling again is harmless and answered 202 again;
* admin tokens only: ``POST``/``GET /api/v1/tokens``, ``DELETE /api/v1/tokens/{token_id}``.

Authentication is ``Authorization: Bearer mob_…`` (:mod:`mobilise.web.tokens`). Every
error is JSON: ``{"error": code, "detail": sentence, "fields": [{"loc", "msg"}]}``, with
``loc`` the dotted path of a field in the body (or the header's name). Logs name tokens by
their id, never the token.

The views behind the API (tokens, the audit trail, cases) are created here once per app
(:func:`coordinator`, shared with the console) and started and closed with the app.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mobilise.errors import RetryableError
from mobilise.kafka_security import kafka_security
from mobilise.snapshot import StoredRecord
from mobilise.wave_cancellation import cancel_wave
from schemas import ApiToken, AuditRecord, CaseUpdate, TokenRole, audit_id_for
from schemas._base import stable_id

from .answers import Answer
from .cases_view import CasesView
from .publisher import Record
from .state import STATE, WebState
from .tokens import TokenRegistry, issue_token
from .topic_view import TopicView, follow_with_app

__all__ = [
    "IDEMPOTENCY_HEADER",
    "MAX_API_BODY_BYTES",
    "ApiError",
    "Coordinator",
    "FieldProblem",
    "InvalidUpdate",
    "NewToken",
    "PublicationLedger",
    "PublishAccepted",
    "Published",
    "TokenInfo",
    "TokenList",
    "TokenRequest",
    "WaveCancelAccepted",
    "WaveCancelRequest",
    "add_routes",
    "coordinator",
    "field_problems",
    "publish_case_update",
]

log = structlog.get_logger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
"""Request header naming one publication, so that retrying it publishes it once."""
MAX_API_BODY_BYTES = 256 * 1024
"""Largest request body of the API; a case update with three languages is a few kilobytes."""
RETRY_AFTER_SECONDS = 5
"""What a 503 asks the client to wait before trying again."""
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
_BEARER = re.compile(r"^Bearer[ ]+(\S+)[ ]*$", re.IGNORECASE)


# -- the API's answers -----------------------------------------------------------------------


class FieldProblem(Answer):
    """One thing wrong with a request."""

    loc: str
    """Dotted path of the field in the body (``action_call.target.email``), the header's name
    (``Idempotency-Key``), or empty for a rule about several fields."""
    msg: str
    """What is wrong and how to put it right."""


class ApiError(Answer):
    """The body of every error answer."""

    error: str
    """A stable code: unauthorized, forbidden, not_found, invalid_json, validation_failed,
    unsupported_media_type, body_too_large, method_not_allowed, starting, kafka_unavailable."""
    detail: str
    """A sentence saying what went wrong and what to do."""
    fields: list[FieldProblem] = []  # noqa: RUF012  # pydantic copies it per instance
    """The fields at fault, for validation_failed (empty otherwise)."""


class PublishAccepted(Answer):
    """A case update recorded on Kafka, with its audit record."""

    event_id: str
    """The update's id: the same for every retry under one Idempotency-Key."""
    case_id: str
    """Its case."""


class WaveCancelRequest(BaseModel):
    """The body of ``POST /api/v1/waves/{wave_id}/cancel``."""

    model_config = ConfigDict(
        strict=True, frozen=True, extra="forbid", str_strip_whitespace=True, use_attribute_docstrings=True
    )

    case_id: str
    """The case whose update carried the wave."""


class WaveCancelAccepted(Answer):
    """A wave cancellation recorded on every partition of wave-cancellations."""

    wave_id: str
    """The wave called off: its alerts still held are never sent; those already released stay sent."""
    case_id: str
    """The case whose update carried it."""
    partitions: int
    """How many partitions got a copy (every one, so that each worker learns it)."""


class TokenRequest(BaseModel):
    """The body of ``POST /api/v1/tokens``."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", str_strip_whitespace=True)

    name: Annotated[str, Field(min_length=1, max_length=200)]
    """Who will hold the token; their case updates carry it as ``published_by``."""
    role: TokenRole = TokenRole.COORDINATOR
    """coordinator (publish and read) or admin (and manage tokens)."""


class TokenInfo(Answer):
    """A token as listed (never its secret nor its hash)."""

    token_id: str
    """Public id of the token."""
    name: str
    """Its holder."""
    role: TokenRole
    """What it may do."""
    created_at: datetime
    """When it was made."""
    revoked_at: datetime | None
    """When it was revoked; null while it works."""

    @classmethod
    def of(cls, token: ApiToken) -> TokenInfo:
        """The listing of ``token``."""
        return cls(
            token_id=token.token_id,
            name=token.name,
            role=token.role,
            created_at=token.created_at,
            revoked_at=token.revoked_at,
        )


class NewToken(TokenInfo):
    """A token just made: the only time its text is shown."""

    token: str
    """``mob_<token_id>_<secret>``: give it to its holder now, it cannot be shown again."""


class TokenList(Answer):
    """Every token, oldest first."""

    tokens: list[TokenInfo]
    """The tokens, revoked ones included."""


# -- the views and the publication ledger ------------------------------------------------------


@dataclass(frozen=True)
class _Publication:
    request_sha256: str
    event_id: str
    case_id: str


class PublicationLedger:
    """Which update each (token, idempotency key) published: a fold of the audit topic.

    Because it is folded from the audit trail, a retry reaching another replica, or this
    one after a restart, is recognised too (once that replica's view has read the record).
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], _Publication] = {}
        self._audited: set[str] = set()

    def fold(self, record: StoredRecord) -> None:
        """Apply one record of the audit topic (an unreadable one is logged and skipped)."""
        if record.value is None:
            return
        try:
            audit = AuditRecord.model_validate_json(record.value)
        except ValidationError as exc:
            log.warning("audit_view.record_skipped", offset=record.offset, error_count=exc.error_count())
            return
        self.apply(audit)

    def apply(self, audit: AuditRecord) -> None:
        """Record ``audit`` (written here, or read from the topic)."""
        self._audited.add(audit.audit_id)
        # Only publications carry an update (a wave.cancelled record has no request digest).
        if (
            audit.idempotency_key is not None
            and audit.request_sha256 is not None
            and audit.event_id is not None
        ):
            # The first publication under a key is the one a later request must match.
            self._by_key.setdefault(
                (audit.actor_token_id, audit.idempotency_key),
                _Publication(audit.request_sha256, audit.event_id, audit.case_id),
            )

    def get(self, token_id: str, key: str) -> _Publication | None:
        """What ``token_id`` first published under ``key``; None if nothing is known."""
        return self._by_key.get((token_id, key))

    def audited(self, audit_id: str) -> bool:
        """Whether the audit record ``audit_id`` is known."""
        return audit_id in self._audited


@dataclass
class Coordinator:
    """What the API and the console share in one app: tokens, cases, the audit trail, their views."""

    tokens: TokenRegistry
    """The API tokens (fold of ``api-tokens``)."""
    cases: CasesView
    """Cases and their counts (fold of ``case-updates``, ``deliveries`` and ``actions-taken``)."""
    ledger: PublicationLedger
    """What each idempotency key published (fold of ``audit``)."""
    views: dict[str, TopicView]
    """The views by name: tokens, audit, cases."""
    _locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = field(default_factory=dict)

    def ready(self, *names: str) -> bool:
        """Whether the named views (every view when none is named) have read their topics' history."""
        return all(self.views[name].caught_up for name in names or self.views)

    @asynccontextmanager
    async def key_lock(self, token_id: str, key: str) -> AsyncIterator[None]:
        """One request at a time per idempotency key in this process (the others wait their turn)."""
        slot = (token_id, key)
        lock, users = self._locks.get(slot, (asyncio.Lock(), 0))
        self._locks[slot] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[slot]
            if users == 1:
                del self._locks[slot]
            else:
                self._locks[slot] = (lock, users - 1)


_COORDINATOR = web.AppKey("mobilise_coordinator", Coordinator)


def coordinator(app: web.Application) -> Coordinator:
    """The app's :class:`Coordinator`, made (with its views, started with the app) on first use."""
    existing = app.get(_COORDINATOR)
    if existing is not None:
        return existing
    state = app[STATE]
    topics = state.topics
    tokens, ledger = TokenRegistry(), PublicationLedger()
    cases = CasesView(
        case_updates=topics.case_updates, deliveries=topics.deliveries, actions_taken=topics.actions_taken
    )
    options = kafka_security().client_options()
    bootstrap = state.settings.bootstrap_servers
    views = {
        "tokens": TopicView(bootstrap, [topics.api_tokens], tokens.fold, name="api-tokens", options=options),
        "audit": TopicView(bootstrap, [topics.audit], ledger.fold, name="audit", options=options),
        "cases": TopicView(
            bootstrap,
            [topics.case_updates, topics.deliveries, topics.actions_taken],
            cases.fold,
            name="cases",
            options=options,
        ),
    }
    made = Coordinator(tokens=tokens, cases=cases, ledger=ledger, views=views)
    app[_COORDINATOR] = made
    follow_with_app(app, *views.values())
    return made


# -- publishing a case update (the API and the console) ----------------------------------------


class InvalidUpdate(Exception):
    """A case update that cannot be published as sent; nothing was published.

    Attributes:
        problems: Each field at fault, with the fix.

    """

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.loc or 'body'}: {p.msg}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Published:
    """A case update on Kafka with its audit record."""

    update: CaseUpdate
    """The update as published."""
    repeated: bool
    """True when this was a retry of a publication already recorded: nothing new was written."""


_SLUG_HINT = "use letters, digits and . _ : - (starting with a letter or digit, at most 128)"
_PATTERN_HINTS = {
    "country": "use the two-letter ISO 3166-1 code, e.g. BD for Bangladesh or KH for Cambodia",
    "case_id": f"{_SLUG_HINT}, e.g. bd-2026-1",
    "event_id": f"{_SLUG_HINT}, or leave it out",
    "wave_id": f"{_SLUG_HINT}: the wave's id, as `mobilise publish` printed it or the update named it",
    "action_call.target.url": "must be a web address starting with https:// (or http://)",
}


def field_problems(exc: ValidationError) -> list[FieldProblem]:
    """One :class:`FieldProblem` per pydantic error: ``loc`` as a dotted path, the value sent, the fix."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        value = error.get("input")
        if error["type"] == "string_pattern_mismatch" and loc in _PATTERN_HINTS:
            message = _PATTERN_HINTS[loc]
        shown = isinstance(value, str | int | float) and not isinstance(value, bool) and len(str(value)) <= 80
        if shown and repr(value) not in message:
            message = f"{message} (got {value!r})"
        problems.append(FieldProblem(loc=loc, msg=message))
    return problems


def _canonical_sha256(update: CaseUpdate) -> str:
    canonical = json.dumps(update.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


async def publish_case_update(
    state: WebState,
    coordinator: Coordinator,
    actor: ApiToken,
    body: dict[str, Any],
    *,
    idempotency_key: str | None,
    via: Literal["api", "console"],
    remote: str | None,
) -> Published:
    """Validate ``body`` as a case update by ``actor`` and publish it with its audit record.

    Args:
        state: The app's state (publisher, topics, clock).
        coordinator: The app's views.
        actor: The authenticated token; its name becomes ``published_by``.
        body: The update's fields as decoded JSON (``published_by`` may be left out).
        idempotency_key: Names this publication: a retry with the same key and the same
            update publishes the same event; with another update it is refused.
        via: Where the request came from, for the audit record.
        remote: The request's peer address, for the audit record.

    Raises:
        InvalidUpdate: a field is wrong, ``published_by`` is not the token's name, or the key
            was used for another update.
        RetryableError: Kafka did not acknowledge both records (a retry is safe).

    """
    given = body.get("published_by")
    if given is not None and given != actor.name:
        raise InvalidUpdate(
            [
                FieldProblem(
                    loc="published_by",
                    msg=f"must be the name of the token that publishes ({actor.name!r}), or left out",
                )
            ]
        )
    fields = {**body, "published_by": actor.name}
    if idempotency_key is not None and "event_id" not in fields:
        fields["event_id"] = stable_id("api", actor.token_id, idempotency_key)
    try:
        # JSON again, so that strict validation reads datetimes and enums from their JSON spellings.
        update = CaseUpdate.model_validate_json(json.dumps(fields))
    except ValidationError as exc:
        raise InvalidUpdate(field_problems(exc)) from exc
    digest = _canonical_sha256(update)
    audit = AuditRecord(
        audit_id=audit_id_for("case_update.published", update.event_id, actor.token_id),
        at=datetime.fromtimestamp(state.clock(), UTC),
        actor_token_id=actor.token_id,
        actor_name=actor.name,
        action="case_update.published",
        via=via,
        event_id=update.event_id,
        case_id=update.case_id,
        status=update.status,
        idempotency_key=idempotency_key,
        request_sha256=digest,
        remote_address=remote,
    )
    lock = coordinator.key_lock(actor.token_id, idempotency_key) if idempotency_key else nullcontext()
    async with lock:
        problem = _conflict(
            coordinator, actor, idempotency_key, update, digest, derived="event_id" not in body
        )
        if problem is not None:
            raise InvalidUpdate([problem])
        landed = coordinator.cases.event(update.event_id) is not None
        if landed and coordinator.ledger.audited(audit.audit_id):
            # Both records are known to be on Kafka already: a retry of an acknowledged request.
            log.info(
                "case_update.publication_repeated",
                event_id=update.event_id,
                case_id=update.case_id,
                token_id=actor.token_id,
            )
            return Published(update, repeated=True)
        return await _publish(state, coordinator, update, audit)


def _conflict(
    coordinator: Coordinator,
    actor: ApiToken,
    key: str | None,
    update: CaseUpdate,
    digest: str,
    *,
    derived: bool,
) -> FieldProblem | None:
    """Why ``update`` must not be published under its event id (or its key), if it must not.

    The pipeline keeps the first update of each event id and drops the others, so a
    different update under an id already used would be lost without anyone knowing.
    """
    if key is not None:
        earlier = coordinator.ledger.get(actor.token_id, key)
        if earlier is not None and earlier.request_sha256 != digest:
            return FieldProblem(
                loc=IDEMPOTENCY_HEADER,
                msg=f"this key was used for another case update (event {earlier.event_id} of case "
                f"{earlier.case_id}); send a new {IDEMPOTENCY_HEADER} for a new update",
            )
    stored = coordinator.cases.event(update.event_id)
    if stored is None or _canonical_sha256(stored) == digest:
        return None
    if key is None and derived:
        return FieldProblem(
            loc="internal",
            msg=f"the same update, differing only in `internal`, was already published as event "
            f"{update.event_id}; publish a new update (another status, time or text) instead",
        )
    if key is not None and derived:
        return FieldProblem(
            loc=IDEMPOTENCY_HEADER,
            msg=f"this key gives event id {update.event_id}, which was published with other content "
            f"(case {stored.case_id}); send a new {IDEMPOTENCY_HEADER} for a new update",
        )
    return FieldProblem(
        loc="event_id",
        msg=f"{update.event_id!r} is the id of another update already published (case {stored.case_id}); "
        "use a new event_id, or leave it out",
    )


async def _publish(
    state: WebState, coordinator: Coordinator, update: CaseUpdate, audit: AuditRecord
) -> Published:
    # One call, two topics: Kafka cannot write them atomically without transactions (which
    # Tansu and many clusters refuse), so a failure may leave one written and not the
    # other. The caller is then told nothing was published (503) and retries: the update
    # keeps its event id (derived from the Idempotency-Key, or from its content) and the
    # audit record its audit id, so the retry writes the same two records again and the
    # pipeline alerts once per event id. An audit record without its update means "tried,
    # not confirmed"; readers match audit records to updates by event id.
    records: list[Record] = [
        (state.topics.audit, audit.case_id, audit.model_dump_json().encode("utf-8")),
        (state.topics.case_updates, update.case_id, update.model_dump_json().encode("utf-8")),
    ]
    await state.publisher.publish(records)
    # Read our own write: the case page and a retry see it before the views read it back.
    coordinator.ledger.apply(audit)
    coordinator.cases.add_update(update)
    log.info(
        "case_update.published",
        event_id=update.event_id,
        case_id=update.case_id,
        status=update.status.value,
        token_id=audit.actor_token_id,
        via=audit.via,
        audit_id=audit.audit_id,
    )
    return Published(update, repeated=False)


# -- HTTP ---------------------------------------------------------------------------------------

_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _error(
    status: int,
    code: str,
    detail: str,
    *,
    fields: Sequence[FieldProblem] = (),
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = ApiError(error=code, detail=detail, fields=list(fields)).model_dump(mode="json")
    return web.json_response(body, status=status, headers={**_NO_STORE, **(headers or {})})


def _json(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        model.model_dump(mode="json"), status=status, headers={**_NO_STORE, **(headers or {})}
    )


def _unavailable(detail: str, code: str = "kafka_unavailable") -> web.Response:
    return _error(503, code, detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _unauthorized(detail: str, *, invalid: bool) -> web.Response:
    # RFC 6750: no error code when no credentials were sent at all.
    challenge = 'Bearer realm="mobilise"' + (', error="invalid_token"' if invalid else "")
    return _error(401, "unauthorized", detail, headers={"WWW-Authenticate": challenge})


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _api_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Under ``/api/``, aiohttp's own errors (no such route, wrong method, too large) in JSON too."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        allowed = exc.headers.get("Allow")
        detail = {
            404: f"nothing at {request.path}; the API's routes are described at /api/v1/openapi.json",
            405: f"{request.method} is not allowed on {request.path}; use {allowed}",
        }.get(exc.status, exc.reason)
        headers = {"Allow": allowed} if allowed else None
        return _error(exc.status, codes.get(exc.status, "error"), detail, headers=headers)


def _authenticate(request: web.Request, role: TokenRole | None = None) -> ApiToken | web.Response:
    """The token of ``request``, or the answer to send instead (401, 403, 503)."""
    shared = coordinator(request.app)
    if not shared.ready("tokens"):
        return _unavailable("the web process is still reading the API tokens; try again shortly", "starting")
    header = request.headers.get("Authorization")
    if not header:
        return _unauthorized(
            "send your API token as 'Authorization: Bearer mob_…' (ask an admin for one)", invalid=False
        )
    match = _BEARER.fullmatch(header)
    outcome = shared.tokens.authenticate(match.group(1)) if match else None
    if outcome is None or outcome.token is None:
        reason = outcome.failure if outcome else "malformed"
        log.warning(
            "api.token_refused",
            reason=reason,
            token_id=outcome.token_id if outcome else None,
            path=request.path,
        )
        detail = {
            "revoked": "this token has been revoked; ask an admin for a new one",
            "malformed": "the Authorization header must be 'Bearer mob_…' with a whole API token",
        }.get(reason or "", "this token is not valid; check that it was copied whole, or ask an admin")
        return _unauthorized(detail, invalid=True)
    token = outcome.token
    if role is not None and token.role is not role:
        log.warning("api.role_refused", token_id=token.token_id, role=token.role.value, path=request.path)
        return _error(
            403, "forbidden", f"this needs a token with the {role.value} role; yours is {token.role.value}"
        )
    return token


async def _read_json(request: web.Request) -> Any:
    """The decoded JSON body, or raise the answer to send (413, 415, 400)."""
    if request.content_type != "application/json":
        raise _Answered(
            _error(
                415,
                "unsupported_media_type",
                f"send the body as JSON with 'Content-Type: application/json', not {request.content_type!r}",
            )
        )
    too_large = _error(
        413,
        "body_too_large",
        f"the body is larger than {MAX_API_BODY_BYTES} bytes; send one case update at a time",
    )
    if request.content_length is not None and request.content_length > MAX_API_BODY_BYTES:
        raise _Answered(too_large)
    chunks: list[bytes] = []
    size = 0
    # Chunked bodies have no Content-Length: stop reading as soon as one is too large.
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > MAX_API_BODY_BYTES:
            raise _Answered(too_large)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _Answered(_error(400, "invalid_json", f"the body is not valid JSON: {exc}")) from exc


class _Answered(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _object_or_problem(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _Answered(
            _error(
                422,
                "validation_failed",
                "the body must be a JSON object",
                fields=[FieldProblem(loc="", msg=f"must be a JSON object, not {type(body).__name__}")],
            )
        )
    return body


async def _publish_route(request: web.Request) -> web.Response:
    actor = _authenticate(request)
    if isinstance(actor, web.Response):
        return actor
    shared = coordinator(request.app)
    key = request.headers.get(IDEMPOTENCY_HEADER)
    try:
        body = _object_or_problem(await _read_json(request))
        if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
            raise InvalidUpdate(
                [
                    FieldProblem(
                        loc=IDEMPOTENCY_HEADER,
                        msg="must be 1 to 200 printable ASCII characters without spaces, e.g. a UUID",
                    )
                ]
            )
        if key is not None and not shared.ready("audit"):
            # A retry could not be told from a new update under the same key yet.
            return _unavailable(
                "the web process is still reading the audit trail; try again shortly", "starting"
            )
        published = await publish_case_update(
            request.app[STATE],
            shared,
            actor,
            body,
            idempotency_key=key,
            via="api",
            remote=request.remote,
        )
    except _Answered as answered:
        return answered.response
    except InvalidUpdate as exc:
        log.info("api.case_update_invalid", token_id=actor.token_id, fields=[p.loc for p in exc.problems])
        return _error(
            422, "validation_failed", "the case update is not valid; see fields", fields=exc.problems
        )
    except RetryableError as exc:
        log.error("api.case_update_not_published", token_id=actor.token_id, error=str(exc))
        return _unavailable(
            "Kafka did not acknowledge the update; nothing is confirmed, retry with the same key"
        )
    update = published.update
    return _json(
        PublishAccepted(event_id=update.event_id, case_id=update.case_id),
        status=202,
        headers={"Location": f"/api/v1/cases/{update.case_id}"},
    )


async def _cancel_wave_route(request: web.Request) -> web.Response:
    actor = _authenticate(request)
    if isinstance(actor, web.Response):
        return actor
    state = request.app[STATE]
    wave_id = request.match_info["wave_id"]
    try:
        body = _object_or_problem(await _read_json(request))
        wanted = WaveCancelRequest.model_validate_json(json.dumps(body))
        at = datetime.fromtimestamp(state.clock(), UTC)
        audit = AuditRecord(
            audit_id=audit_id_for("wave.cancelled", wave_id, actor.token_id),
            at=at,
            actor_token_id=actor.token_id,
            actor_name=actor.name,
            action="wave.cancelled",
            via="api",
            wave_id=wave_id,
            case_id=wanted.case_id,
            remote_address=request.remote,
        )
        # The audit record first: a cancellation never lands without its record (a record
        # without a cancellation means "tried, not confirmed", as for publications).
        await state.publisher.publish(
            [(state.topics.audit, audit.case_id, audit.model_dump_json().encode("utf-8"))]
        )
        done = await cancel_wave(
            state.publisher,
            state.topics,
            wave_id=wave_id,
            case_id=wanted.case_id,
            cancelled_by=actor.name,
            at=at,
        )
    except _Answered as answered:
        return answered.response
    except ValidationError as exc:
        problems = field_problems(exc)
        log.info("api.wave_cancel_invalid", token_id=actor.token_id, fields=[p.loc for p in problems])
        return _error(422, "validation_failed", "the cancellation is not valid; see fields", fields=problems)
    except RetryableError as exc:
        log.error("api.wave_not_cancelled", token_id=actor.token_id, wave_id=wave_id, error=str(exc))
        return _unavailable(
            "Kafka did not acknowledge the cancellation; nothing is confirmed, retry "
            "(cancelling twice is harmless)"
        )
    log.info(
        "api.wave_cancelled",
        wave_id=wave_id,
        case_id=wanted.case_id,
        token_id=actor.token_id,
        partitions=done.partitions,
        audit_id=audit.audit_id,
    )
    return _json(
        WaveCancelAccepted(wave_id=wave_id, case_id=wanted.case_id, partitions=done.partitions), status=202
    )


def _cases_reader(request: web.Request) -> CasesView | web.Response:
    """The cases, for an authenticated request once they are read; or the answer to send instead."""
    actor = _authenticate(request)
    if isinstance(actor, web.Response):
        return actor
    shared = coordinator(request.app)
    if not shared.ready("cases"):
        return _unavailable("the web process is still reading the cases; try again shortly", "starting")
    return shared.cases


async def _list_cases(request: web.Request) -> web.Response:
    cases = _cases_reader(request)
    if isinstance(cases, web.Response):
        return cases
    return _json(cases.cases())


async def _show_case(request: web.Request) -> web.Response:
    cases = _cases_reader(request)
    if isinstance(cases, web.Response):
        return cases
    case_id = request.match_info["case_id"]
    detail = cases.case(case_id)
    if detail is None:
        return _error(
            404, "not_found", f"no case {case_id!r} has been published; GET /api/v1/cases lists them"
        )
    return _json(detail)


async def _record_token(request: web.Request, token: ApiToken) -> None:
    """Publish ``token``'s record on the api-tokens topic and, once Kafka acknowledged it, use it here.

    Raises:
        RetryableError: Kafka did not acknowledge it; nothing changed.

    """
    state = request.app[STATE]
    await state.publisher.publish(
        [(state.topics.api_tokens, token.token_id, token.model_dump_json().encode())]
    )
    # Read our own write: the token works (or stops working) here before the view reads it back.
    coordinator(request.app).tokens.apply(token)


async def _create_token(request: web.Request) -> web.Response:
    actor = _authenticate(request, TokenRole.ADMIN)
    if isinstance(actor, web.Response):
        return actor
    try:
        body = _object_or_problem(await _read_json(request))
        wanted = TokenRequest.model_validate_json(json.dumps(body))
    except _Answered as answered:
        return answered.response
    except ValidationError as exc:
        return _error(
            422, "validation_failed", "the token request is not valid; see fields", fields=field_problems(exc)
        )
    issued = issue_token(
        wanted.name, wanted.role, now=datetime.fromtimestamp(request.app[STATE].clock(), UTC)
    )
    record = issued.record
    try:
        await _record_token(request, record)
    except RetryableError as exc:
        log.error("api.token_not_created", by_token_id=actor.token_id, error=str(exc))
        return _unavailable("Kafka did not acknowledge the new token; no token was made, try again")
    log.info(
        "api.token_created", token_id=record.token_id, role=record.role.value, by_token_id=actor.token_id
    )
    info = TokenInfo.of(record)
    return _json(NewToken(**info.model_dump(), token=issued.token), status=201)


async def _list_tokens(request: web.Request) -> web.Response:
    actor = _authenticate(request, TokenRole.ADMIN)
    if isinstance(actor, web.Response):
        return actor
    return _json(TokenList(tokens=[TokenInfo.of(t) for t in coordinator(request.app).tokens.all()]))


async def _revoke_token(request: web.Request) -> web.Response:
    actor = _authenticate(request, TokenRole.ADMIN)
    if isinstance(actor, web.Response):
        return actor
    shared = coordinator(request.app)
    token_id = request.match_info["token_id"]
    known = shared.tokens.get(token_id)
    if known is None:
        return _error(404, "not_found", f"no token {token_id!r}; GET /api/v1/tokens lists them")
    if known.revoked_at is not None:
        return _json(TokenInfo.of(known))
    revoked = known.model_copy(update={"revoked_at": datetime.fromtimestamp(request.app[STATE].clock(), UTC)})
    try:
        await _record_token(request, revoked)
    except RetryableError as exc:
        log.error("api.token_not_revoked", token_id=token_id, error=str(exc))
        return _unavailable("Kafka did not acknowledge the revocation; the token still works, try again")
    log.info("api.token_revoked", token_id=token_id, by_token_id=actor.token_id)
    return _json(TokenInfo.of(revoked))


def _routes() -> Iterator[tuple[str, str, _Handler]]:
    """(method, path, handler) of every route of the API but the OpenAPI document."""
    yield "POST", "/api/v1/case-updates", _publish_route
    yield "GET", "/api/v1/cases", _list_cases
    yield "GET", "/api/v1/cases/{case_id}", _show_case
    yield "POST", "/api/v1/waves/{wave_id}/cancel", _cancel_wave_route
    yield "POST", "/api/v1/tokens", _create_token
    yield "GET", "/api/v1/tokens", _list_tokens
    yield "DELETE", "/api/v1/tokens/{token_id}", _revoke_token


def add_routes(app: web.Application) -> None:
    """Add the API's routes and its JSON error middleware to ``app`` (after :data:`STATE` is set)."""
    coordinator(app)
    app.middlewares.append(_api_errors)
    for method, path, handler in _routes():
        app.router.add_route(method, path, handler)
