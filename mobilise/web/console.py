"""The coordinator console under ``/console``: sign in with an API token, follow cases, publish updates.

Server-rendered HTML that works without JavaScript, in English (the coordinators' working
language; the French and Spanish text fields are marked with their own ``lang``):

* ``GET /console``: the sign-in form; ``POST /console/sign-in`` checks the token and keeps it
  in an HttpOnly, SameSite=Strict cookie limited to ``/console`` (Secure when
  ``MOBILISE_PUBLIC_URL`` is https); ``POST /console/sign-out`` forgets it. The token is
  checked again on every request, so a revoked token ends its sessions as soon as this
  process has read the revocation.
* ``GET /console/cases``: every case with its latest status and counts;
  ``GET /console/cases/{case_id}``: its timeline and counts, and per action call the alerts
  sent and opened, the people who acted, the progress toward its goal, and who acted per
  region of where they live.
* ``GET /console/publish``: the form (``?case_id=`` fills it in from that case's latest
  update); ``POST /console/publish`` validates it with the CaseUpdate schema, shows each
  message next to its field, and publishes exactly as ``POST /api/v1/case-updates`` does
  (audit record included), then redirects to the case's page. Each form carries an
  idempotency key, so submitting it twice publishes once.

Every form carries a CSRF token: an HMAC of a random cookie (double submit, signed with a
key derived from ``MOBILISE_SECRET_KEY``, or a key of this process when it is not set).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
import structlog
from aiohttp import web
from multidict import MultiDictProxy

from mobilise.errors import RetryableError
from schemas import (
    ActionKind,
    ApiToken,
    CaseStatus,
    CaseUpdate,
    Region,
    country_name,
    known_countries,
    known_interests,
)

from .cases_view import UNKNOWN_REGION, ActionCounts
from .coordinator_api import IDEMPOTENCY_HEADER, Coordinator, InvalidUpdate, coordinator, publish_case_update
from .state import STATE

__all__ = ["CONSOLE_LANGUAGES", "add_routes"]

log = structlog.get_logger(__name__)

CONSOLE_LANGUAGES = (("en", "English"), ("fr", "French"), ("es", "Spanish"))
"""The languages the publish form has title, summary and instruction fields for."""

_SESSION_COOKIE = "mobilise_console"
_CSRF_COOKIE = "mobilise_console_csrf"
_PATH = "/console"
_CSRF_FIELD = "csrf_token"
_MAX_FORM_BYTES = 256 * 1024
_KEY = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
}
_MISSING = {
    "case_id": "Enter the case id, e.g. bd-2026-1",
    "status": "Choose the case's new status",
    "title": "Enter a title in at least one language",
    "summary": "Enter a summary in at least one language",
    "country": "Choose the country of the factory",
    "issues": "Tick at least one issue",
    "factory_name": "Enter the factory's name (or leave the city empty too)",
    "action_kind": "Choose what people are asked to do (or leave the whole action call empty)",
    "action_instructions": "Enter the instructions in at least one language",
    "action_target_name": "Enter who the action is aimed at",
}


@dataclass
class _Console:
    csrf_key: bytes
    secure_cookies: bool


_CONSOLE = web.AppKey("mobilise_console", _Console)


@dataclass
class _Form:
    """The publish form's values as typed, and the messages for each field."""

    values: dict[str, str] = field(default_factory=dict)
    issues: list[str] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def value(self, name: str) -> str:
        return self.values.get(name, "")

    def add_error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)


# -- templates ----------------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value is not None else ""


def _label(value: str) -> str:
    return value.replace("_", " ").capitalize()


def _headline(texts: Mapping[str, str]) -> str:
    return texts.get("en") or next(iter(texts.values()), "")


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("mobilise.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(when=_when, label=_label, headline=_headline)
    return environment


def _page(
    request: web.Request,
    template: str,
    *,
    status: int = 200,
    actor: ApiToken | None = None,
    **context: Any,
) -> web.Response:
    csrf_cookie = request.cookies.get(_CSRF_COOKIE)
    fresh = csrf_cookie is None or not _KEY.fullmatch(csrf_cookie)
    if fresh:
        csrf_cookie = secrets.token_urlsafe(32)
    html = (
        _environment()
        .get_template(template)
        .render(actor=actor, csrf_token=_csrf_for(request.app[_CONSOLE], csrf_cookie or ""), **context)
    )
    response = web.Response(
        text=html, status=status, content_type="text/html", charset="utf-8", headers=_HEADERS
    )
    if fresh:
        _set_cookie(request, response, _CSRF_COOKIE, csrf_cookie or "")
    return response


def _message(
    request: web.Request, title: str, text: str, *, status: int, actor: ApiToken | None = None
) -> web.Response:
    return _page(request, "console_message.html.j2", status=status, actor=actor, title=title, text=text)


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={**_HEADERS, "Location": location})


# -- cookies, CSRF, the session -----------------------------------------------------------------


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str) -> None:
    response.set_cookie(
        name, value, path=_PATH, httponly=True, samesite="Strict", secure=request.app[_CONSOLE].secure_cookies
    )


def _csrf_for(console: _Console, cookie: str) -> str:
    return hmac.new(console.csrf_key, cookie.encode("utf-8"), hashlib.sha256).hexdigest()


def _csrf_ok(request: web.Request, form: MultiDictProxy[Any]) -> bool:
    cookie = request.cookies.get(_CSRF_COOKIE)
    sent = form.get(_CSRF_FIELD)
    if not cookie or not isinstance(sent, str):
        return False
    return hmac.compare_digest(sent, _csrf_for(request.app[_CONSOLE], cookie))


async def _read_form(request: web.Request) -> MultiDictProxy[Any] | web.Response:
    if request.content_length is not None and request.content_length > _MAX_FORM_BYTES:
        return _message(request, "Too much text", "The form is too large to be sent.", status=413)
    form = await request.post()
    if not _csrf_ok(request, form):
        log.warning("console.csrf_refused", path=request.path)
        return _message(
            request,
            "Please try again",
            "This form had expired or did not come from this console. Go back, reload the page and "
            "send it again.",
            status=403,
        )
    return form


def _views_starting(request: web.Request, *names: str) -> web.Response | None:
    if coordinator(request.app).ready(*names):
        return None
    response = _message(
        request,
        "The console is starting",
        "It is still reading the cases and tokens from Kafka. Reload this page in a few seconds.",
        status=503,
    )
    response.headers["Retry-After"] = "5"
    return response


def _signed_in(request: web.Request, *views: str) -> ApiToken | web.Response:
    """The session's token, or the answer to send instead (to the sign-in page, or 503).

    Args:
        request: The request.
        *views: The views (besides the tokens) the page answers from: 503 until they have
            read their topics.

    """
    if (starting := _views_starting(request, "tokens")) is not None:
        return starting
    presented = request.cookies.get(_SESSION_COOKIE)
    if presented:
        outcome = coordinator(request.app).tokens.authenticate(presented)
        if outcome.token is not None:
            if views and (starting := _views_starting(request, *views)) is not None:
                return starting
            return outcome.token
        log.info("console.session_refused", reason=outcome.failure, token_id=outcome.token_id)
    response = _redirect(f"{_PATH}?expired=1" if presented else _PATH)
    if presented:
        response.del_cookie(_SESSION_COOKIE, path=_PATH)
    return response


# -- sign in and out ------------------------------------------------------------------------------


async def _sign_in_page(request: web.Request) -> web.Response:
    if (starting := _views_starting(request, "tokens")) is not None:
        return starting
    presented = request.cookies.get(_SESSION_COOKIE)
    if presented and coordinator(request.app).tokens.authenticate(presented).token is not None:
        return _redirect(f"{_PATH}/cases")
    notice = (
        "Your session has ended (the token was revoked or is no longer valid)."
        if "expired" in request.query
        else None
    )
    return _page(request, "console_sign_in.html.j2", error=None, notice=notice)


async def _sign_in(request: web.Request) -> web.Response:
    if (starting := _views_starting(request, "tokens")) is not None:
        return starting
    form = await _read_form(request)
    if isinstance(form, web.Response):
        return form
    presented = str(form.get("token") or "").strip()
    outcome = coordinator(request.app).tokens.authenticate(presented)
    if outcome.token is None:
        log.warning("console.sign_in_refused", reason=outcome.failure, token_id=outcome.token_id)
        error = (
            "Enter your API token (it starts with mob_)."
            if not presented
            else "This token has been revoked; ask an admin for a new one."
            if outcome.failure == "revoked"
            else "This is not a valid API token. Paste the whole token, starting with mob_."
        )
        return _page(request, "console_sign_in.html.j2", status=401, error=error, notice=None)
    log.info("console.signed_in", token_id=outcome.token.token_id)
    response = _redirect(f"{_PATH}/cases")
    _set_cookie(request, response, _SESSION_COOKIE, presented)
    return response


async def _sign_out(request: web.Request) -> web.Response:
    form = await _read_form(request)
    if isinstance(form, web.Response):
        return form
    response = _redirect(_PATH)
    response.del_cookie(_SESSION_COOKIE, path=_PATH)
    return response


# -- cases ----------------------------------------------------------------------------------------


async def _cases_page(request: web.Request) -> web.Response:
    actor = _signed_in(request, "cases")
    if isinstance(actor, web.Response):
        return actor
    cases = coordinator(request.app).cases.cases().cases
    return _page(request, "console_cases.html.j2", actor=actor, cases=cases)


async def _case_page(request: web.Request) -> web.Response:
    actor = _signed_in(request, "cases")
    if isinstance(actor, web.Response):
        return actor
    case_id = request.match_info["case_id"]
    detail = coordinator(request.app).cases.case(case_id)
    if detail is None:
        return _message(
            request, "No such case", f"No case {case_id!r} has been published.", status=404, actor=actor
        )
    published = request.query.get("published")
    if published not in {entry.event_id for entry in detail.timeline}:
        published = None
    return _page(
        request,
        "console_case.html.j2",
        actor=actor,
        case=detail,
        actions=[_action_row(action) for action in detail.actions],
        published=published,
        publish_url=f"{_PATH}/publish?case_id={quote(case_id, safe='')}",
    )


def _action_row(action: ActionCounts) -> dict[str, Any]:
    """What the case page shows of one action call's counters."""
    progress = None
    if action.goal is not None and action.progress is not None:
        label = _headline(action.goal.label) if action.goal.label else "actions aimed for"
        progress = f"{action.acted:,} of {action.goal.count:,} {label} ({action.progress:.1%})"
    regions = [
        ("Not said" if slug == UNKNOWN_REGION else Region(slug).label, count)
        for slug, count in sorted(action.by_region.items(), key=lambda item: (-item[1], item[0]))
    ]
    return {
        "action_id": action.action_id,
        "kind": action.kind.value,
        "sent": action.sent,
        "opened": action.opened,
        "acted": action.acted,
        "progress": progress,
        "regions": regions,
    }


# -- publishing -----------------------------------------------------------------------------------


def _choices() -> dict[str, Any]:
    countries = sorted(((code, country_name(code)) for code in known_countries()), key=lambda c: c[1])
    return {
        "languages": CONSOLE_LANGUAGES,
        "statuses": [s.value for s in CaseStatus],
        "countries": countries,
        "interests": sorted(known_interests()),
        "action_kinds": [k.value for k in ActionKind],
    }


def _publish_form_page(
    request: web.Request, actor: ApiToken, form: _Form, *, status: int = 200, problem: str | None = None
) -> web.Response:
    return _page(
        request,
        "console_publish.html.j2",
        status=status,
        actor=actor,
        form=form,
        problem=problem,
        **_choices(),
    )


def _prefilled(shared: Coordinator, case_id: str, now: float) -> _Form:
    form = _Form(values={"idempotency_key": secrets.token_urlsafe(24), "opened_at": str(int(now))})
    latest = shared.cases.latest_update(case_id) if case_id else None
    if case_id:
        form.values["case_id"] = case_id
    if latest is not None:
        form.values["country"] = latest.country
        form.values["brands"] = "\n".join(latest.brands)
        form.issues = list(latest.issues)
        if latest.factory is not None:
            form.values["factory_name"] = latest.factory.name
            form.values["factory_city"] = latest.factory.city or ""
    return form


async def _publish_page(request: web.Request) -> web.Response:
    actor = _signed_in(request)
    if isinstance(actor, web.Response):
        return actor
    shared = coordinator(request.app)
    case_id = request.query.get("case_id", "").strip()
    return _publish_form_page(request, actor, _prefilled(shared, case_id, request.app[STATE].clock()))


def _utc(local: str) -> str:
    """A ``datetime-local`` value, taken as UTC, in ISO 8601 with its offset (other text unchanged)."""
    if _LOCAL_TIME.fullmatch(local):
        return (local if local.count(":") == 2 else local + ":00") + "+00:00"
    return local


def _body_of(form: _Form, now: float) -> dict[str, Any]:
    """The case update the form describes, as JSON fields; empty fields are left out."""
    value = form.value
    body: dict[str, Any] = {}
    for name in ("case_id", "status", "country"):
        if value(name):
            body[name] = value(name)
    for name in ("title", "summary"):
        texts = {code: value(f"{name}_{code}") for code, _ in CONSOLE_LANGUAGES if value(f"{name}_{code}")}
        if texts:
            body[name] = texts
    brands = [b.strip() for b in re.split(r"[\n,]", value("brands")) if b.strip()]
    if brands:
        body["brands"] = brands
    if form.issues:
        body["issues"] = form.issues
    if value("factory_name") or value("factory_city"):
        body["factory"] = {
            k: v for k, v in (("name", value("factory_name")), ("city", value("factory_city"))) if v
        }
    action_fields = [n for n in form.values if n.startswith("action_") and value(n)]
    if action_fields:
        action: dict[str, Any] = {}
        if value("action_kind"):
            action["kind"] = value("action_kind")
        instructions = {
            code: value(f"action_instructions_{code}")
            for code, _ in CONSOLE_LANGUAGES
            if value(f"action_instructions_{code}")
        }
        if instructions:
            action["instructions"] = instructions
        target = {
            k: value(f"action_target_{k}") for k in ("name", "email", "url") if value(f"action_target_{k}")
        }
        if target:
            action["target"] = target
        if value("action_deadline"):
            action["deadline"] = _utc(value("action_deadline"))
        body["action_call"] = action
    if value("occurred_at"):
        body["occurred_at"] = _utc(value("occurred_at"))
    else:
        # The time the form was opened, not sent: sending the same form twice must be the same update.
        opened = value("opened_at")
        moment = float(opened) if opened.isdigit() else now
        body["occurred_at"] = datetime.fromtimestamp(moment, UTC).isoformat()
    if value("internal_note"):
        body["internal"] = {"note": value("internal_note")}
    return body


def _form_field(loc: str) -> str:
    """The form field that shows the message for the pydantic location ``loc`` ("" for the form)."""
    parts = loc.split(".") if loc else []
    languages = {code for code, _ in CONSOLE_LANGUAGES}
    match parts:
        case [("title" | "summary") as name, code, *_] if code in languages:
            return f"{name}_{code}"
        case ["factory", ("name" | "city") as part, *_]:
            return f"factory_{part}"
        case ["factory", *_]:
            return "factory_name"
        case ["action_call", "instructions", code, *_] if code in languages:
            return f"action_instructions_{code}"
        case ["action_call", "instructions", *_]:
            return "action_instructions"
        case ["action_call", "target", ("name" | "email" | "url") as part, *_]:
            return f"action_target_{part}"
        case ["action_call", "target", *_]:
            return "action_target_name"
        case ["action_call", ("kind" | "deadline") as part, *_]:
            return f"action_{part}"
        case ["action_call", *_]:
            return "action_kind"
        case [
            (
                "case_id" | "status" | "country" | "brands" | "issues" | "occurred_at" | "title" | "summary"
            ) as name,
            *_,
        ]:
            return name
        case ["region", *_]:
            return "country"
    return ""


def _apply_problems(form: _Form, problems: list[Any]) -> None:
    for problem in problems:
        name = _form_field(problem.loc)
        if problem.loc == IDEMPOTENCY_HEADER:
            form.add_error(
                "",
                "This form has already been used to publish a different update. Open a new publish form "
                "to publish another one.",
            )
        elif problem.msg == "Field required" and name in _MISSING:
            form.add_error(name, _MISSING[name])
        elif name:
            form.add_error(name, problem.msg[:1].upper() + problem.msg[1:])
        else:
            form.add_error("", f"{problem.loc}: {problem.msg}" if problem.loc else problem.msg)


async def _publish(request: web.Request) -> web.Response:
    actor = _signed_in(request, "audit")
    if isinstance(actor, web.Response):
        return actor
    raw = await _read_form(request)
    if isinstance(raw, web.Response):
        return raw
    state = request.app[STATE]
    form = _Form(
        values={name: str(raw.get(name, "")).strip() for name in raw if name not in {"issues", _CSRF_FIELD}},
        issues=[str(v) for v in raw.getall("issues", [])],
    )
    key = form.value("idempotency_key")
    if not _KEY.fullmatch(key):
        key = secrets.token_urlsafe(24)
        form.values["idempotency_key"] = key
    try:
        published = await publish_case_update(
            state,
            coordinator(request.app),
            actor,
            _body_of(form, state.clock()),
            idempotency_key=key,
            via="console",
            remote=request.remote,
        )
    except InvalidUpdate as exc:
        _apply_problems(form, exc.problems)
        log.info("console.case_update_invalid", token_id=actor.token_id, fields=sorted(form.errors))
        return _publish_form_page(request, actor, form, status=422)
    except RetryableError as exc:
        log.error("console.case_update_not_published", token_id=actor.token_id, error=str(exc))
        problem = "Nothing was published: Kafka did not confirm the update. Press Publish again in a moment."
        return _publish_form_page(request, actor, form, status=503, problem=problem)
    update: CaseUpdate = published.update
    return _redirect(
        f"{_PATH}/cases/{quote(update.case_id, safe='')}?published={quote(update.event_id, safe='')}"
    )


def add_routes(app: web.Application) -> None:
    """Add the console's pages to ``app`` (after :data:`STATE` is set)."""
    settings = app[STATE].settings
    secret = settings.secret_key
    key = (
        hmac.new(secret.get_secret_value().encode("utf-8"), b"mobilise.console.csrf", hashlib.sha256).digest()
        if secret is not None
        else secrets.token_bytes(32)
    )
    secure = bool(settings.public_url) and urlsplit(settings.public_url or "").scheme == "https"
    app[_CONSOLE] = _Console(csrf_key=key, secure_cookies=secure)
    coordinator(app)
    app.router.add_get(_PATH, _sign_in_page)
    app.router.add_post(f"{_PATH}/sign-in", _sign_in)
    app.router.add_post(f"{_PATH}/sign-out", _sign_out)
    app.router.add_get(f"{_PATH}/cases", _cases_page)
    app.router.add_get(f"{_PATH}/cases/{{case_id}}", _case_page)
    app.router.add_get(f"{_PATH}/publish", _publish_page)
    app.router.add_post(f"{_PATH}/publish", _publish)
