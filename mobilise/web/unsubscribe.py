"""``/unsubscribe/{token}``: the signed link at the bottom of every email, and RFC 8058 one-click.

* ``GET`` shows a confirmation page with a button, and changes nothing: mail scanners and
  link previewers open links on their own, so a GET must never unsubscribe anyone.
* ``POST`` (the page's button, or a mail provider's one-click request with the body
  ``List-Unsubscribe=One-Click``) publishes a :class:`~schemas.Suppression` with reason
  ``link_unsubscribe`` on the subscriptions topic and answers with a page saying it is
  done, only once Kafka acknowledged it (503 otherwise: nothing was changed, try again).
* A token that is malformed, altered or signed for something else gets a 400 page saying
  the link is not valid, and nothing is published.

The person is named by the subscriber id in the token only; the address is never known
here. Logs carry the subscriber id.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from aiohttp import web

from mobilise.errors import RetryableError
from mobilise.links import InvalidLink, LinkSigner
from schemas import Suppression, SuppressionReason

from .pages import negotiate_language, page_response
from .state import STATE

__all__ = ["add_routes"]

log = structlog.get_logger(__name__)

_SIGNER = web.AppKey("mobilise_link_signer", LinkSigner)


def _subscriber_of(request: web.Request, language: str) -> str | web.Response:
    """The subscriber id of the request's token, or the page to answer instead."""
    signer = request.app.get(_SIGNER)
    if signer is None:
        log.error(
            "web.unsubscribe_unconfigured",
            fix="set MOBILISE_SECRET_KEY (the key the email sinks sign links with) for `mobilise web`",
        )
        return page_response("unavailable", language, status=503)
    try:
        return signer.verify(request.match_info["token"], "unsubscribe")
    except InvalidLink as exc:
        log.warning("web.unsubscribe_link_invalid", reason=exc.reason, method=request.method)
        return page_response("invalid_link", language, status=400)


async def _confirm(request: web.Request) -> web.Response:
    language = negotiate_language(request.headers.get("Accept-Language"))
    subscriber = _subscriber_of(request, language)
    if isinstance(subscriber, web.Response):
        return subscriber
    return page_response("confirm_unsubscribe", language)


async def _unsubscribe(request: web.Request) -> web.Response:
    language = negotiate_language(request.headers.get("Accept-Language"))
    subscriber = _subscriber_of(request, language)
    if isinstance(subscriber, web.Response):
        return subscriber
    form = await request.post()
    one_click = form.get("List-Unsubscribe") == "One-Click"
    state = request.app[STATE]
    suppression = Suppression(
        subscriber_id=subscriber,
        reason=SuppressionReason.LINK_UNSUBSCRIBE,
        source="link",
        occurred_at=datetime.fromtimestamp(state.clock(), UTC),
    )
    try:
        await state.publisher.publish(
            [(state.topics.subscriptions, subscriber, suppression.model_dump_json().encode("utf-8"))]
        )
    except RetryableError as exc:
        log.error("web.unsubscribe_not_recorded", subscriber_id=subscriber, error=str(exc))
        return page_response("unavailable", language, status=503)
    log.info(
        "web.unsubscribed",
        subscriber_id=subscriber,
        one_click=one_click,
        suppression_id=suppression.event_id,
    )
    return page_response("unsubscribed", language)


def add_routes(app: web.Application) -> None:
    """Add ``GET`` and ``POST /unsubscribe/{token}`` to ``app`` (after :data:`STATE` is set)."""
    signer = app[STATE].settings.link_signer()
    if signer is not None:
        app[_SIGNER] = signer
    app.router.add_get("/unsubscribe/{token}", _confirm)
    app.router.add_post("/unsubscribe/{token}", _unsubscribe)
