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

from . import signed_pages
from .forms import (
    ErrorCode,
    FieldName,
    FormValues,
    check,
    read_form,
    render_form,
    to_subscription,
    values_of,
    with_csrf,
)
from .pages import html_response, request_language
from .signed_pages import SignedLink
from .state import STATE
from .subscribers_view import SubscriberState

__all__ = ["add_routes"]

log = structlog.get_logger(__name__)

_LINK = SignedLink(
    purpose="preferences",
    path="/preferences",
    invalid_event="web.preferences_link_invalid",
)

_LINKS = {
    "en": ("Unsubscribe from all alerts", "See or erase my data"),
    "fr": ("Me désabonner de toutes les alertes", "Voir ou effacer mes données"),
    "es": ("Darme de baja de todas las alertas", "Ver o borrar mis datos"),
}


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
    address = str(current.subscription.email)
    signer = signed_pages.link_signer(request)
    base = request.app[STATE].settings.public_url or ""
    unsubscribe_label, my_data_label = _LINKS.get(language, _LINKS["en"])
    links = [
        (f"{base}/unsubscribe/{signer.sign('unsubscribe', subscriber)}", unsubscribe_label),
        (f"{base}/my-data/{request.match_info['token']}?lang={language}", my_data_label),
    ]

    def page(token: str) -> web.Response:
        html = render_form(
            language=language,
            with_email=False,
            values=values,
            errors=errors or {},
            csrf=token,
            address=address,
            saved=saved,
            suppressed=current.suppressed,
            links=links,
            digest_weekday=request.app[STATE].settings.digest_weekday,
        )
        return html_response(html, language, status=status)

    return with_csrf(request, signed_pages.csrf_guard(request), page)


async def _show(request: web.Request) -> web.Response:
    visit = await signed_pages.visit(request, _LINK, request_language(request))
    if isinstance(visit, web.Response):
        return visit
    current = visit.current
    if current is None or current.subscription is None:
        return signed_pages.unknown_subscriber(visit.language)
    return _page(request, visit.language, visit.subscriber, current, values_of(current.subscription))


async def _save(request: web.Request) -> web.Response:
    form = await request.post()
    visit = await signed_pages.visit(
        request, _LINK, request_language(request, form.get("language")), form=form
    )
    if isinstance(visit, web.Response):
        return visit
    current, subscriber, language = visit.current, visit.subscriber, visit.language
    if current is None or current.subscription is None:
        return signed_pages.unknown_subscriber(language)
    values = read_form(form, default_language=language)
    errors = check(values, with_email=False)
    if errors:
        log.info("web.preferences_invalid", subscriber_id=subscriber, fields=sorted(errors))
        return _page(request, language, subscriber, current, values, errors, status=400)
    now = request.app[STATE].clock()
    updated = to_subscription(
        values,
        email=str(current.subscription.email),
        subscriber_id=subscriber,
        confirmed=True,
        created_at=datetime.fromtimestamp(now, UTC),
    )
    failed = await signed_pages.record(
        request, visit, updated, now=now, failure_event="web.preferences_not_recorded"
    )
    if failed is not None:
        return failed
    log.info("web.preferences_saved", subscriber_id=subscriber, resubscribed=current.suppressed)
    saved = visit.view.subscribers.get(subscriber) or SubscriberState(subscription=updated)
    return _page(request, language, subscriber, saved, values_of(updated), saved=True)


def add_routes(app: web.Application) -> None:
    """Add ``GET`` and ``POST /preferences/{token}`` to ``app`` (after :data:`STATE` is set)."""
    signed_pages.install(app)
    app.router.add_get("/preferences/{token}", _show)
    app.router.add_post("/preferences/{token}", _save)
