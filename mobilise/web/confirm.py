"""``/confirm/{token}``: the double opt-in link of the confirmation email.

* ``GET`` shows a page with a button and changes nothing: mail scanners and link
  previewers open links on their own, and must not subscribe anyone.
* ``POST`` (the button, with its CSRF token) publishes the person's subscription again
  with ``confirmed=True`` and ``created_at`` now, and shows "you are subscribed" with the
  link to the preferences page. Being newer than any suppression on record, it subscribes
  again a person who unsubscribed since: confirming is asking for the alerts.
* A token that is expired (after :data:`~mobilise.web.notices.CONFIRMATION_VALID_FOR`),
  altered or signed for something else gets a 400 page offering to subscribe again; a
  subscription the subscribers view does not know (erased meanwhile) a page saying there
  is nothing to confirm.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from aiohttp import web

from . import signed_pages
from .forms import CSRF_FIELD, with_csrf
from .pages import page_response, request_language
from .signed_pages import SignedLink, Visit
from .state import STATE

__all__ = ["add_routes"]

log = structlog.get_logger(__name__)

_LINK = SignedLink(
    purpose="confirm",
    path="/confirm",
    invalid_event="web.confirm_link_invalid",
    invalid_page="confirm_link_invalid",
    invalid_links=[("subscribe", "/subscribe")],
)


def _not_pending(language: str) -> web.Response:
    return page_response("not_pending", language, status=410, links=[("subscribe", "/subscribe")])


async def _show(request: web.Request) -> web.Response:
    visit = await signed_pages.visit(request, _LINK, request_language(request))
    if isinstance(visit, web.Response):
        return visit
    if visit.current is None or visit.current.subscription is None:
        return _not_pending(visit.language)
    return with_csrf(
        request,
        signed_pages.csrf_guard(request),
        lambda token: page_response("confirm_subscription", visit.language, hidden=[(CSRF_FIELD, token)]),
    )


async def _confirm(request: web.Request) -> web.Response:
    visit = await signed_pages.visit(request, _LINK, request_language(request))
    if isinstance(visit, web.Response):
        return visit
    current, subscriber, language = visit.current, visit.subscriber, visit.language
    if current is None or current.subscription is None:
        log.info("web.confirm_not_pending", subscriber_id=subscriber)
        return _not_pending(language)
    if not current.confirmed:
        now = request.app[STATE].clock()
        confirmed = current.subscription.model_copy(
            update={"confirmed": True, "created_at": datetime.fromtimestamp(now, UTC)}
        )
        failed = await signed_pages.record(
            request, visit, confirmed, now=now, failure_event="web.confirmation_not_recorded"
        )
        if failed is not None:
            return failed
        log.info("web.subscription_confirmed", subscriber_id=subscriber, resubscribed=current.suppressed)
    return _subscribed(request, visit)


def _subscribed(request: web.Request, visit: Visit) -> web.Response:
    preferences = signed_pages.link_signer(request).sign("preferences", visit.subscriber)
    base = request.app[STATE].settings.public_url or ""
    return page_response(
        "subscribed",
        visit.language,
        links=[("preferences", f"{base}/preferences/{preferences}?lang={visit.language}")],
    )


def add_routes(app: web.Application) -> None:
    """Add ``GET`` and ``POST /confirm/{token}`` to ``app`` (after :data:`STATE` is set)."""
    signed_pages.install(app)
    app.router.add_get("/confirm/{token}", _show)
    app.router.add_post("/confirm/{token}", _confirm)
