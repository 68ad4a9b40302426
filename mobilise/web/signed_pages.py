"""What the pages reached by a person's signed link share: ``/confirm``, ``/preferences``, ``/my-data``.

Each of them does the same before its own work, and answers the same when a step fails:

1. verify the token of the link for the purpose it must be signed for (503 page when
   ``MOBILISE_SECRET_KEY`` is not set, the page of a bad link otherwise);
2. for a ``POST``, check the form's CSRF token (403 page);
3. wait for the subscribers view to catch up (503 page): a page must not answer from a
   partial view;
4. look up what is on record for the person.

:func:`visit` does these steps and hands back a :class:`Visit`; :func:`record` publishes
the person's new record and answers 503 when Kafka did not acknowledge it. Each page
decides what to do about a person the view has nothing (or no subscription) for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from mobilise.errors import RetryableError
from mobilise.links import InvalidLink, LinkSigner, Purpose
from schemas import Subscription

from . import subscribers_view
from .forms import CsrfGuard, forged_refusal, install_csrf
from .pages import LinkKind, PageKind, page_response
from .state import STATE
from .subscribers_view import SubscriberState, SubscribersView

__all__ = [
    "SignedLink",
    "Visit",
    "csrf_guard",
    "install",
    "link_signer",
    "record",
    "unknown_subscriber",
    "visit",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SignedLink:
    """One kind of signed link: what it is signed for, and how a bad one is answered."""

    purpose: Purpose
    """What the token must be signed for."""
    path: str
    """The page's path without the token, for the logs (the token acts for the person: never logged)."""
    invalid_event: str
    """The log event of a token that is expired, altered or signed for something else."""
    invalid_page: PageKind = "invalid_personal_link"
    """The page (400) such a token gets."""
    invalid_links: Sequence[tuple[LinkKind, str]] = ()
    """Links that page offers."""


@dataclass(frozen=True)
class Visit:
    """A request whose link was verified, answered from a subscribers view that has caught up."""

    language: str
    """The page's language."""
    subscriber: str
    """The subscriber id the link was signed for."""
    view: SubscribersView
    """The app's subscribers view, caught up."""
    current: SubscriberState | None
    """What the view has on record for the person; None if nothing."""
    form: Mapping[str, Any] | None
    """The posted form (its CSRF token checked); None for a ``GET``."""


@dataclass(frozen=True)
class _Parts:
    signer: LinkSigner
    csrf: CsrfGuard


_PARTS = web.AppKey("mobilise_signed_pages", _Parts)


def install(app: web.Application) -> None:
    """Make the link signer, the CSRF guard and the subscribers view the pages share (once per app).

    Without ``MOBILISE_SECRET_KEY`` there is no signer: every signed page answers 503.
    """
    state = app[STATE]
    csrf = install_csrf(app)
    if _PARTS not in app and state.settings.secret_key is not None and csrf is not None:
        app[_PARTS] = _Parts(LinkSigner(state.settings.secret_key, clock=state.clock), csrf)
    subscribers_view.install(app)


def link_signer(request: web.Request) -> LinkSigner:
    """The signer of the links a page offers (only once :func:`visit` verified the request's link)."""
    return request.app[_PARTS].signer


def csrf_guard(request: web.Request) -> CsrfGuard:
    """The CSRF guard of the forms a page shows (only once :func:`visit` verified the request's link)."""
    return request.app[_PARTS].csrf


def _subscriber_of(request: web.Request, link: SignedLink, language: str) -> str | web.Response:
    """The subscriber id of the request's token, or the page to answer instead."""
    parts = request.app.get(_PARTS)
    if parts is None:
        return page_response("unavailable", language, status=503)
    try:
        return parts.signer.verify(request.match_info["token"], link.purpose)
    except InvalidLink as exc:
        log.info(link.invalid_event, reason=exc.reason, method=request.method)
        return page_response(link.invalid_page, language, status=400, links=link.invalid_links)


async def visit(
    request: web.Request, link: SignedLink, language: str, *, form: Mapping[str, Any] | None = None
) -> Visit | web.Response:
    """The verified request, or the page to answer instead (400, 403 or 503).

    Args:
        request: A request to ``{link.path}/{token}``.
        link: What its token must be.
        language: The page's language.
        form: For a ``POST``, its form when the page has already read it (for its language);
            read here otherwise, once the token is verified.

    """
    subscriber = _subscriber_of(request, link, language)
    if isinstance(subscriber, web.Response):
        return subscriber
    if request.method == "POST":
        form = form if form is not None else await request.post()
        refused = forged_refusal(
            request, form, csrf_guard(request), language, path=link.path, subscriber_id=subscriber
        )
        if refused is not None:
            return refused
    view = await subscribers_view.ready_view(request.app)
    if view is None:
        return page_response("unavailable", language, status=503)
    return Visit(
        language=language,
        subscriber=subscriber,
        view=view,
        current=view.subscribers.get(subscriber),
        form=form,
    )


async def record(
    request: web.Request, visit: Visit, subscription: Subscription | None, *, now: float, failure_event: str
) -> web.Response | None:
    """Publish ``subscription`` (None: a tombstone) as the person's record, and fold it into the view.

    Args:
        request: The request.
        visit: The verified request.
        subscription: The person's subscription as it is now; None erases the person.
        now: The current Unix time.
        failure_event: The event logged (an error) when Kafka did not acknowledge it.

    Returns:
        None when the record is on Kafka; the 503 page to answer otherwise (nothing was changed).

    """
    value = subscription.model_dump_json().encode("utf-8") if subscription is not None else None
    try:
        await visit.view.publish(request.app[STATE].publisher, visit.subscriber, value, now=now)
    except RetryableError as exc:
        log.error(failure_event, subscriber_id=visit.subscriber, error=str(exc))
        return page_response("unavailable", visit.language, status=503)
    return None


def unknown_subscriber(language: str) -> web.Response:
    """The 404 page of a link the subscribers view has nothing for (the person was erased)."""
    return page_response("unknown_subscriber", language, status=404, links=[("subscribe", "/subscribe")])
