"""``/subscribe``: the subscription form, and double opt-in.

* ``GET`` shows the form (:mod:`mobilise.web.forms`) in the page's language, with a CSRF
  token bound to a cookie it sets.
* ``POST`` checks the CSRF token (403 page), then the fields (400: the form again, as
  typed, with a message next to each wrong field and a summary at the top), then the rate
  limits (429 page with ``Retry-After``): :data:`PER_CLIENT` per client address and
  :data:`PER_ADDRESS` per email address, known or not. A valid form always gets the same
  "check your inbox" page, whoever the address belongs to, so the form tells nobody
  whether an address is subscribed:

  - an address that is unknown, pending or unsubscribed: a pending
    ``Subscription(confirmed=False, created_at=now)`` is published on the subscriptions
    topic (keyed by its subscriber id) and a confirmation link is emailed to it;
  - an address already confirmed: nothing is published (a stranger must not be able to
    change or un-confirm someone's subscription), and the address is emailed a link to
    its preferences page instead.

The page is answered only once Kafka acknowledged the record (503 otherwise: nothing was
changed), and only from a subscribers view that has caught up (503 "try again" until then).
The client address is ``request.remote``: behind a reverse proxy, run aiohttp with a
forwarded-header middleware that the proxy's headers can be trusted for, or every person
shares the proxy's limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from aiohttp import web

from mobilise.errors import RetryableError
from mobilise.links import PublicLinks

from . import subscribers_view
from .forms import (
    CsrfGuard,
    ErrorCode,
    FieldName,
    FormValues,
    check,
    forged_refusal,
    install_csrf,
    read_form,
    render_form,
    to_subscription,
    with_csrf,
)
from .notices import NoticeKind, NoticeNotSent, NoticeSender, notice_sender, render_notice
from .pages import html_response, page_response, request_language
from .rate_limit import RateLimiter
from .state import STATE

__all__ = ["PER_ADDRESS", "PER_CLIENT", "add_routes"]

log = structlog.get_logger(__name__)

PER_CLIENT = (5, 600.0)
"""Valid submissions one client address may make: 5 per 10 minutes."""
PER_ADDRESS = (3, 3600.0)
"""Submissions for one email address, from anywhere: 3 per hour (each sends that address an email)."""


@dataclass(frozen=True)
class _Subscribe:
    """What the routes need, made once with the app; None where a setting is missing."""

    csrf: CsrfGuard | None
    links: PublicLinks | None
    sender: NoticeSender | None
    per_client: RateLimiter
    per_address: RateLimiter


_PARTS = web.AppKey("mobilise_subscribe", _Subscribe)


def _form_response(
    request: web.Request,
    parts: _Subscribe,
    language: str,
    values: FormValues,
    errors: Mapping[FieldName, ErrorCode] | None = None,
    *,
    status: int = 200,
) -> web.Response:
    assert parts.csrf is not None

    def page(token: str) -> web.Response:
        html = render_form(
            language=language,
            with_email=True,
            values=values,
            errors=errors or {},
            csrf=token,
            digest_weekday=request.app[STATE].settings.digest_weekday,
        )
        return html_response(html, language, status=status)

    return with_csrf(request, parts.csrf, page)


def _unconfigured(parts: _Subscribe, language: str) -> web.Response | None:
    if parts.csrf is None or parts.links is None or parts.sender is None:
        # Logged once at start-up (add_routes), with the fix.
        return page_response("unavailable", language, status=503)
    return None


async def _show(request: web.Request) -> web.Response:
    parts = request.app[_PARTS]
    language = request_language(request)
    refused = _unconfigured(parts, language)
    if refused is not None:
        return refused
    return _form_response(request, parts, language, FormValues(language=language))


def _too_many(language: str, wait: float, limit: str) -> web.Response:
    log.info("web.subscribe_rate_limited", limit=limit, retry_after=round(wait))
    response = page_response("rate_limited", language, status=429, links=[("form", "/subscribe")])
    response.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
    return response


async def _submit(request: web.Request) -> web.Response:
    parts = request.app[_PARTS]
    form = await request.post()
    language = request_language(request, form.get("language"))
    refused = _unconfigured(parts, language)
    if refused is not None:
        return refused
    assert parts.csrf is not None and parts.links is not None and parts.sender is not None
    if (refused := forged_refusal(request, form, parts.csrf, language, path="/subscribe")) is not None:
        return refused
    values = read_form(form, default_language=language)
    errors = check(values, with_email=True)
    if errors:
        log.info("web.subscribe_invalid", fields=sorted(errors))
        return _form_response(request, parts, language, values, errors, status=400)
    state = request.app[STATE]
    now = state.clock()
    # Valid: the address is normalised, and the id derived from it, as everywhere else.
    candidate = to_subscription(
        values,
        email=values.email,
        subscriber_id=None,
        confirmed=False,
        created_at=datetime.fromtimestamp(now, UTC),
    )
    wait = parts.per_client.acquire(request.remote or "unknown")
    if wait is not None:
        return _too_many(language, wait, "client")
    wait = parts.per_address.acquire(candidate.subscriber_id)
    if wait is not None:
        return _too_many(language, wait, "address")
    view = await subscribers_view.ready_view(request.app)
    if view is None:
        return page_response("unavailable", language, status=503)
    known = view.subscribers.find(str(candidate.email))
    if known is not None and known != candidate.subscriber_id:
        # Imported under an id of its own: the same person, the same key.
        candidate = candidate.model_copy(update={"subscriber_id": known})
    current = view.subscribers.get(candidate.subscriber_id)
    active = current.active if current is not None else None
    kind: NoticeKind
    if active is not None and active.confirmed:
        kind, recipient = "manage", active
    else:
        kind, recipient = "confirm", candidate
        try:
            await view.publish(
                state.publisher,
                candidate.subscriber_id,
                candidate.model_dump_json().encode("utf-8"),
                now=now,
            )
        except RetryableError as exc:
            log.error("web.subscription_not_recorded", subscriber_id=candidate.subscriber_id, error=str(exc))
            return page_response("unavailable", language, status=503)
    try:
        await parts.sender.send(render_notice(kind, recipient, parts.links))
    except NoticeNotSent as exc:
        # The page says the same either way: the person, seeing no email, submits again.
        log.error("web.notice_not_sent", subscriber_id=recipient.subscriber_id, notice=kind, error=str(exc))
    else:
        log.info("web.notice_sent", subscriber_id=recipient.subscriber_id, notice=kind)
    return page_response("check_inbox", language)


def add_routes(app: web.Application) -> None:
    """Add ``GET`` and ``POST /subscribe`` to ``app`` (after :data:`STATE` is set).

    Raises:
        ConfigurationError: the settings of the email sink (``MOBILISE_SINK``) are invalid.

    """
    state = app[STATE]
    settings = state.settings
    csrf = install_csrf(app)
    links = (
        PublicLinks(settings.public_url, settings.secret_key, clock=state.clock)
        if settings.public_url is not None and settings.secret_key is not None
        else None
    )
    sender = notice_sender(settings.sink, clock=state.clock)
    if csrf is None or links is None:
        log.warning(
            "web.subscribe_disabled",
            detail="MOBILISE_PUBLIC_URL and MOBILISE_SECRET_KEY must both be set: /subscribe answers 503",
        )
    elif sender is None:
        log.warning(
            "web.subscribe_disabled",
            detail=f"MOBILISE_SINK={settings.sink!r} cannot send confirmation emails: /subscribe answers 503",
            fix="use the outbox, smtp or sendgrid sink",
        )
    app[_PARTS] = _Subscribe(
        csrf=csrf,
        links=links,
        sender=sender,
        per_client=RateLimiter(*PER_CLIENT, clock=state.clock),
        per_address=RateLimiter(*PER_ADDRESS, clock=state.clock),
    )
    subscribers_view.install(app)
    app.router.add_get("/subscribe", _show)
    app.router.add_post("/subscribe", _submit)
