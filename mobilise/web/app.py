"""The web process's application: one aiohttp app, each feature a route module that adds itself.

``create_app`` builds the shared :class:`~mobilise.web.state.WebState` (settings, topic
names, the Kafka publisher, the clock) and hands the app to each route module's
``add_routes``. A new page or API (subscribe and preferences pages, the coordinators' API)
is a new module in :data:`ROUTE_MODULES`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from mobilise.kafka_security import kafka_security
from mobilise.settings import Settings
from streams.topics import TopicNames

from . import (
    acted,
    confirm,
    console,
    coordinator_api,
    health,
    my_data,
    openapi,
    preferences,
    sendgrid_webhook,
    subscribe,
    unsubscribe,
)
from .publisher import KafkaPublisher
from .state import STATE, WebState

__all__ = ["MAX_BODY_BYTES", "ROUTE_MODULES", "create_app"]

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
"""Largest request body read; SendGrid posts event batches of about 1 MB at most."""

ROUTE_MODULES: tuple[Callable[[web.Application], None], ...] = (
    health.add_routes,
    sendgrid_webhook.add_routes,
    unsubscribe.add_routes,
    coordinator_api.add_routes,
    openapi.add_routes,
    console.add_routes,
    subscribe.add_routes,
    confirm.add_routes,
    preferences.add_routes,
    my_data.add_routes,
    acted.add_routes,
)
"""Every feature of the web process, in the order its routes are added."""


def create_app(
    settings: Settings, *, publisher: KafkaPublisher | None = None, clock: Callable[[], float] = time.time
) -> web.Application:
    """The web process's app for ``settings``.

    Args:
        settings: The process's settings (Kafka, topics, links, webhook key).
        publisher: Where records go; by default one on ``KAFKA_BOOTSTRAP_SERVERS`` (with the
            ``MOBILISE_KAFKA_*`` TLS and SASL settings), started with the app and closed with it.
        clock: Current Unix time, for webhook timestamps and suppression times.

    Raises:
        ConfigurationError: a setting the routes need (or a Kafka security setting) cannot be used.

    """
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    state = WebState(
        settings=settings,
        topics=TopicNames(prefix=settings.topic_prefix),
        publisher=publisher
        or KafkaPublisher(settings.bootstrap_servers, options=kafka_security().client_options()),
        clock=clock,
    )
    app[STATE] = state
    for add_routes in ROUTE_MODULES:
        add_routes(app)

    async def kafka(app: web.Application) -> AsyncIterator[None]:
        await state.publisher.start()
        yield
        await state.publisher.close()

    app.cleanup_ctx.append(kafka)
    if settings.sendgrid_webhook_public_key is None:
        log.warning(
            "web.sendgrid_webhook_disabled",
            detail="MOBILISE_SENDGRID_WEBHOOK_PUBLIC_KEY is not set: POST /webhooks/sendgrid answers 503",
        )
    if settings.secret_key is None:
        log.warning(
            "web.unsubscribe_links_disabled",
            detail="MOBILISE_SECRET_KEY is not set: /unsubscribe/{token} answers 503",
        )
    return app
