"""Who is subscribed, as the web process sees it: a fold of the subscriptions topic.

The activists' pages need each person's current state: the subscribe page must know
whether an address is already confirmed, the confirmation page which subscription is
pending, the preferences and my-data pages what is stored. :class:`Subscribers` folds the
subscriptions topic into ``subscriber_id`` → :class:`SubscriberState` (the latest
Subscription and the latest Suppression on record) and an index from address to id;
:class:`SubscribersView` keeps it current with a :class:`~mobilise.web.topic_view.TopicView`.

The rules are the workers' (``streams/shards.py``): a suppression ends a subscription
created at or before it occurred, a subscription created after it stands, and a tombstone
erases the person. Unlike a worker's shard, the view keeps the last subscription of a
suppressed person (until a tombstone, or until compaction drops it from the topic), so
that a person who unsubscribed can still confirm or save their preferences again, which
subscribes them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from mobilise.kafka_security import kafka_security
from mobilise.snapshot import StoredRecord
from schemas import Subscription, Suppression, read_subscriptions_record

from .publisher import KafkaPublisher
from .state import STATE
from .topic_view import TopicView, follow_with_app

__all__ = [
    "SUBSCRIBERS",
    "VIEW_WAIT_SECONDS",
    "SubscriberState",
    "Subscribers",
    "SubscribersView",
    "install",
    "ready_view",
]

log = structlog.get_logger(__name__)

VIEW_WAIT_SECONDS = 5.0
"""How long a page waits for the view to catch up (just after a start) before answering 503."""


@dataclass(frozen=True)
class SubscriberState:
    """What the subscriptions topic says about one person."""

    subscription: Subscription | None = None
    """Their latest subscription on record (pending or confirmed), if any."""
    suppression: Suppression | None = None
    """The latest suppression on record, if any (whether or not a later subscription overrode it)."""

    @property
    def suppressed(self) -> bool:
        """Whether a suppression ends their subscription (or they have only a suppression)."""
        if self.suppression is None:
            return False
        return self.subscription is None or self.suppression.overrides(self.subscription)

    @property
    def active(self) -> Subscription | None:
        """Their subscription, unless it is suppressed."""
        return None if self.suppressed else self.subscription

    @property
    def confirmed(self) -> bool:
        """Whether they get alerts: a confirmed subscription that is not suppressed."""
        active = self.active
        return active is not None and active.confirmed


def _address_key(email: str) -> str:
    # As subscriber_id_for normalises: the same person whatever the case they type.
    return email.strip().casefold()


class Subscribers:
    """``subscriber_id`` → :class:`SubscriberState`, and address → ``subscriber_id``. Pure.

    :meth:`fold` is the :data:`~mobilise.web.topic_view.Fold` of the subscriptions topic;
    it is idempotent (a record folded twice leaves the same state) and never raises.
    """

    def __init__(self) -> None:
        self._states: dict[str, SubscriberState] = {}
        self._by_address: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._states)

    def get(self, subscriber_id: str) -> SubscriberState | None:
        """What is on record for ``subscriber_id``; None if nothing is."""
        return self._states.get(subscriber_id)

    def find(self, email: str) -> str | None:
        """The subscriber id an address has a subscription under, if any.

        Usually ``subscriber_id_for(email)``; a subscription imported with its own id
        (from a CRM) is found here too.
        """
        return self._by_address.get(_address_key(email))

    def fold(self, record: StoredRecord) -> None:
        """Apply one record of the subscriptions topic."""
        key = record.key.decode("utf-8", "replace") if record.key is not None else ""
        if not key:
            return
        if record.value is None:
            self._erase(key)
            return
        try:
            value = read_subscriptions_record(record.value)
        except ValidationError as exc:
            log.warning(
                "web.subscribers_record_skipped",
                partition=record.partition,
                offset=record.offset,
                errors=exc.error_count(),
            )
            return
        if value.subscriber_id != key:
            return  # the workers dead-letter it: it is nobody's record
        state = self._states.get(key, SubscriberState())
        if isinstance(value, Suppression):
            latest = state.suppression
            if latest is None or value.occurred_at >= latest.occurred_at:
                state = SubscriberState(subscription=state.subscription, suppression=value)
        else:
            if state.subscription is not None and state.subscription.email != value.email:
                self._by_address.pop(_address_key(str(state.subscription.email)), None)
            state = SubscriberState(subscription=value, suppression=state.suppression)
            self._by_address[_address_key(str(value.email))] = key
        self._states[key] = state

    def _erase(self, subscriber_id: str) -> None:
        state = self._states.pop(subscriber_id, None)
        if state is not None and state.subscription is not None:
            address = _address_key(str(state.subscription.email))
            if self._by_address.get(address) == subscriber_id:
                del self._by_address[address]


class SubscribersView:
    """:class:`Subscribers` kept current from the subscriptions topic.

    Args:
        topic: The subscriptions topic.
        bootstrap: ``host:port`` of the brokers; None for a view fed only by :meth:`apply`.
        options: TLS and SASL options of the client.

    """

    def __init__(
        self, topic: str, *, bootstrap: list[str] | None = None, options: Mapping[str, Any] | None = None
    ) -> None:
        self.subscribers = Subscribers()
        self.topic = topic
        self._view = (
            TopicView(bootstrap, [topic], self.subscribers.fold, name="subscribers", options=options)
            if bootstrap is not None
            else None
        )

    def start(self) -> None:
        """Begin following the topic."""
        if self._view is not None:
            self._view.start()

    async def close(self) -> None:
        """Stop following."""
        if self._view is not None:
            await self._view.close()

    async def ready(self, timeout: float) -> bool:
        """Whether the view has caught up with the topic, waiting up to ``timeout`` seconds."""
        return self._view is None or await self._view.wait_caught_up(timeout)

    async def publish(
        self, publisher: KafkaPublisher, subscriber_id: str, value: bytes | None, *, now: float
    ) -> None:
        """Publish a record of ``subscriber_id`` (None: a tombstone) and fold it at once.

        Raises:
            RetryableError: Kafka did not acknowledge it; nothing was folded.

        """
        await publisher.publish([(self.topic, subscriber_id, value)])
        self.apply(subscriber_id, value, now=now)

    def apply(self, subscriber_id: str, value: bytes | None, *, now: float) -> None:
        """Fold a record this process has just published (read your own write)."""
        self.subscribers.fold(
            StoredRecord(
                topic=self.topic,
                partition=-1,
                offset=-1,
                timestamp=datetime.fromtimestamp(now, UTC),
                key=subscriber_id.encode("utf-8"),
                value=value,
            )
        )


SUBSCRIBERS = web.AppKey("mobilise_subscribers", SubscribersView)
"""``app[SUBSCRIBERS]``: the :class:`SubscribersView` the activists' pages share."""


def install(app: web.Application) -> SubscribersView:
    """The app's subscribers view, created (and started and closed with the app) on first use."""
    existing = app.get(SUBSCRIBERS)
    if existing is not None:
        return existing
    state = app[STATE]
    view = SubscribersView(
        state.topics.subscriptions,
        bootstrap=state.settings.bootstrap_servers,
        options=kafka_security().client_options(),
    )
    app[SUBSCRIBERS] = view
    follow_with_app(app, view)
    return view


async def ready_view(app: web.Application) -> SubscribersView | None:
    """The app's subscribers view once it has caught up (waiting :data:`VIEW_WAIT_SECONDS`), else None.

    A page must not answer from a partial view: it would take a confirmed person for an
    unknown one, or say that nothing is stored about someone.
    """
    view = app[SUBSCRIBERS]
    if await view.ready(VIEW_WAIT_SECONDS):
        return view
    log.warning("web.subscribers_view_not_ready", waited=VIEW_WAIT_SECONDS)
    return None
