"""``/preferences/{token}``: the person's choices, from the "Manage your alerts" link of every email.

The token is signed for "preferences" and never expires (it is in every alert). The page
is the subscription form filled with the current choices, without the address (a new
address is a new subscription, confirmed anew); it links to the unsubscribe and my-data
pages.

* ``GET`` shows the form (and says so when the person is unsubscribed at the moment).
* ``POST`` (CSRF checked) validates it as the subscribe form does (400 with the messages
  next to the fields) and publishes the updated Subscription, confirmed (the link reached
  the address: it is proof enough) and created now, so that it outranks an earlier
  suppression: saving after unsubscribing subscribes again, as the page says. The form is
  shown again, saying it was saved, once Kafka acknowledged the record (503 otherwise).
* A link the subscribers view has nothing for (erased) gets a 404 page offering to
  subscribe; a malformed or altered token a 400 page.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import structlog
from aiohttp import web

from mobilise.errors import RetryableError
from mobilise.links import InvalidLink, LinkSigner

from . import subscribers_view
from .forms import (
    CsrfGuard,
    ErrorCode,
    FieldName,
    FormValues,
    check,
    csrf_token,
    csrf_valid,
    install_csrf,
    read_form,
    render_form,
    set_csrf_cookie,
    to_subscription,
    values_of,
)
from .pages import html_response, page_response, request_language
from .state import STATE
from .subscribers_view import SubscriberState

__all__ = ["add_routes"]

log = structlog.get_logger(__name__)

_SIGNER = web.AppKey("mobilise_preferences_signer", LinkSigner)
_CSRF = web.AppKey("mobilise_preferences_csrf", CsrfGuard)

_LINKS = {
    "en": ("Unsubscribe from all alerts", "See or erase my data"),
    "fr": ("Me désabonner de toutes les alertes", "Voir ou effacer mes données"),
    "es": ("Darme de baja de todas las alertas", "Ver o borrar mis datos"),
}


def _subscriber_of(request: web.Request, language: str) -> str | web.Response:
    """The subscriber id of the request's token, or the page to answer instead."""
    signer = request.app.get(_SIGNER)
    if signer is None:
        return page_response("unavailable", language, status=503)
    try:
        return signer.verify(request.match_info["token"], "preferences")
    except InvalidLink as exc:
        log.info("web.preferences_link_invalid", reason=exc.reason, method=request.method)
        return page_response("invalid_personal_link", language, status=400)


def _unknown(language: str) -> web.Response:
    return page_response("unknown_subscriber", language, status=404, links=[("subscribe", "/subscribe")])


def _page(
    request: web.Request,
    language: str,
    subscriber: str,
    current: SubscriberState,
    values: FormValues,
    errors: Mapping[FieldName, ErrorCode] | None = None,
    *,
    saved: bool = False,
    status: int = 200,
) -> web.Response:
    assert current.subscription is not None
    signer = request.app[_SIGNER]
    token, cookie = csrf_token(request, request.app[_CSRF])
    base = request.app[STATE].settings.public_url or ""
    unsubscribe_label, my_data_label = _LINKS.get(language, _LINKS["en"])
    html = render_form(
        language=language,
        with_email=False,
        values=values,
        errors=errors or {},
        csrf=token,
        address=str(current.subscription.email),
        saved=saved,
        suppressed=current.suppressed,
        links=[
            (f"{base}/unsubscribe/{signer.sign('unsubscribe', subscriber)}", unsubscribe_label),
            (f"{base}/my-data/{request.match_info['token']}?lang={language}", my_data_label),
        ],
    )
    response = html_response(html, language, status=status)
    set_csrf_cookie(response, cookie, request)
    return response


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
        return _unknown(language)
    return _page(request, language, subscriber, current, values_of(current.subscription))


async def _save(request: web.Request) -> web.Response:
    form = await request.post()
    language = request_language(request, form.get("language"))
    subscriber = _subscriber_of(request, language)
    if isinstance(subscriber, web.Response):
        return subscriber
    if not csrf_valid(request, form, request.app[_CSRF]):
        log.info("web.csrf_refused", path="/preferences", subscriber_id=subscriber)
        return page_response("forbidden", language, status=403, links=[("form", request.path_qs)])
    view = await subscribers_view.ready_view(request.app)
    if view is None:
        return page_response("unavailable", language, status=503)
    current = view.subscribers.get(subscriber)
    if current is None or current.subscription is None:
        return _unknown(language)
    values = read_form(form, default_language=language)
    errors = check(values, with_email=False)
    if errors:
        log.info("web.preferences_invalid", subscriber_id=subscriber, fields=sorted(errors))
        return _page(request, language, subscriber, current, values, errors, status=400)
    state = request.app[STATE]
    now = state.clock()
    updated = to_subscription(
        values,
        email=str(current.subscription.email),
        subscriber_id=subscriber,
        confirmed=True,
        created_at=datetime.fromtimestamp(now, UTC),
    )
    try:
        await view.publish(state.publisher, subscriber, updated.model_dump_json().encode("utf-8"), now=now)
    except RetryableError as exc:
        log.error("web.preferences_not_recorded", subscriber_id=subscriber, error=str(exc))
        return page_response("unavailable", language, status=503)
    log.info("web.preferences_saved", subscriber_id=subscriber, resubscribed=current.suppressed)
    saved = view.subscribers.get(subscriber) or SubscriberState(subscription=updated)
    return _page(request, language, subscriber, saved, values_of(updated), saved=True)


def add_routes(app: web.Application) -> None:
    """Add ``GET`` and ``POST /preferences/{token}`` to ``app`` (after :data:`STATE` is set)."""
    state = app[STATE]
    csrf = install_csrf(app)
    if state.settings.secret_key is not None and csrf is not None:
        app[_SIGNER] = LinkSigner(state.settings.secret_key, clock=state.clock)
        app[_CSRF] = csrf
    subscribers_view.install(app)
    app.router.add_get("/preferences/{token}", _show)
    app.router.add_post("/preferences/{token}", _save)
