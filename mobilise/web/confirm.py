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

from mobilise.errors import RetryableError
from mobilise.links import InvalidLink, LinkSigner

from . import subscribers_view
from .forms import CSRF_FIELD, CsrfGuard, csrf_token, csrf_valid, install_csrf, set_csrf_cookie
from .pages import page_response, request_language
from .state import STATE

__all__ = ["add_routes"]

log = structlog.get_logger(__name__)

_SIGNER = web.AppKey("mobilise_confirm_signer", LinkSigner)
_CSRF = web.AppKey("mobilise_confirm_csrf", CsrfGuard)


def _subscriber_of(request: web.Request, language: str) -> str | web.Response:
    """The subscriber id of the request's token, or the page to answer instead."""
    signer = request.app.get(_SIGNER)
    if signer is None:
        return page_response("unavailable", language, status=503)
    try:
        return signer.verify(request.match_info["token"], "confirm")
    except InvalidLink as exc:
        log.info("web.confirm_link_invalid", reason=exc.reason, method=request.method)
        return page_response(
            "confirm_link_invalid", language, status=400, links=[("subscribe", "/subscribe")]
        )


async def _show(request: web.Request) -> web.Response:
    language = request_language(request)
    subscriber = _subscriber_of(request, language)
    if isinstance(subscriber, web.Response):
        return subscriber
    view = await subscribers_view.ready_view(request.app)
    if view is None:
        return page_response("unavailable", language, status=503)
    current = view.subscribers.get(subscriber)
    if current is None or current.subscription is None:
        return page_response("not_pending", language, status=410, links=[("subscribe", "/subscribe")])
    token, cookie = csrf_token(request, request.app[_CSRF])
    response = page_response("confirm_subscription", language, hidden=[(CSRF_FIELD, token)])
    set_csrf_cookie(response, cookie, request)
    return response


async def _confirm(request: web.Request) -> web.Response:
    language = request_language(request)
    subscriber = _subscriber_of(request, language)
    if isinstance(subscriber, web.Response):
        return subscriber
    form = await request.post()
    if not csrf_valid(request, form, request.app[_CSRF]):
        log.info("web.csrf_refused", path="/confirm", subscriber_id=subscriber)
        return page_response("forbidden", language, status=403, links=[("form", request.path_qs)])
    view = await subscribers_view.ready_view(request.app)
    if view is None:
        return page_response("unavailable", language, status=503)
    current = view.subscribers.get(subscriber)
    if current is None or current.subscription is None:
        log.info("web.confirm_not_pending", subscriber_id=subscriber)
        return page_response("not_pending", language, status=410, links=[("subscribe", "/subscribe")])
    state = request.app[STATE]
    if not current.confirmed:
        now = state.clock()
        confirmed = current.subscription.model_copy(
            update={"confirmed": True, "created_at": datetime.fromtimestamp(now, UTC)}
        )
        try:
            await view.publish(
                state.publisher, subscriber, confirmed.model_dump_json().encode("utf-8"), now=now
            )
        except RetryableError as exc:
            log.error("web.confirmation_not_recorded", subscriber_id=subscriber, error=str(exc))
            return page_response("unavailable", language, status=503)
        log.info("web.subscription_confirmed", subscriber_id=subscriber, resubscribed=current.suppressed)
    preferences = request.app[_SIGNER].sign("preferences", subscriber)
    base = state.settings.public_url or ""
    return page_response(
        "subscribed", language, links=[("preferences", f"{base}/preferences/{preferences}?lang={language}")]
    )


def add_routes(app: web.Application) -> None:
    """Add ``GET`` and ``POST /confirm/{token}`` to ``app`` (after :data:`STATE` is set)."""
    state = app[STATE]
    csrf = install_csrf(app)
    if state.settings.secret_key is not None and csrf is not None:
        app[_SIGNER] = LinkSigner(state.settings.secret_key, clock=state.clock)
        app[_CSRF] = csrf
    subscribers_view.install(app)
    app.router.add_get("/confirm/{token}", _show)
    app.router.add_post("/confirm/{token}", _confirm)
