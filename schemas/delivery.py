"""DeliveryEvent: what happened to an alert at a sink (topic ``deliveries``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, TypeAdapter

from ._base import Event

__all__ = ["DeliveryEvent", "DeliveryOutcome", "DeliveryRecords"]


class DeliveryOutcome(StrEnum):
    """The fate of one alert at one sink, then at the provider behind it.

    The first four are recorded by the delivery stage; the others come back later from
    the provider (SendGrid's event webhook) and were added in schema version 2, except
    ``cancelled``, recorded by the delivery stage for a cancelled wave, added in version 3.
    """

    ACCEPTED = "accepted"
    """The sink (or the provider behind it) took the message."""
    DUPLICATE = "duplicate"
    """Already delivered earlier; nothing was sent this time."""
    FAILED = "failed"
    """A retryable failure; the alert will be tried again."""
    DEAD_LETTERED = "dead_lettered"
    """A permanent failure; the alert went to dead-letters."""
    DELIVERED = "delivered"
    """The recipient's mail server accepted the message."""
    DEFERRED = "deferred"
    """The recipient's mail server asked the provider to try again later; it will."""
    BOUNCED = "bounced"
    """The recipient's mail server refused the address for good; the person is suppressed."""
    BLOCKED = "blocked"
    """The recipient's server refused this message (reputation, content), not the address:
    the person stays subscribed."""
    DROPPED = "dropped"
    """The provider did not send it (address on its suppression lists, or invalid); suppressed."""
    SPAM_REPORTED = "spam_reported"
    """The recipient marked it as spam; the person is suppressed."""
    UNSUBSCRIBED = "unsubscribed"
    """The recipient unsubscribed through the provider; the person is suppressed."""
    OPENED = "opened"
    """The recipient opened it (as far as open tracking can tell)."""
    CLICKED = "clicked"
    """The recipient followed a link in it."""
    CANCELLED = "cancelled"
    """Held for a wave that a coordinator called off before it went out; never sent."""


class DeliveryEvent(Event):
    """One outcome of one alert at one sink. Key on the topic: ``subscriber_id``.

    Outcomes reported by a provider carry its event id (``provider_event_id``) and its
    event time (``at``): the same provider event always gives the same record, byte for
    byte, so a provider retrying its webhook adds nothing a consumer cannot recognise.
    """

    schema_version: Literal[1, 2, 3] = 3
    """Version of this schema; a reader rejects versions it does not know. Version 2 added
    the provider-side outcomes and ``provider_event_id``, version 3 the ``cancelled``
    outcome; records of versions 1 and 2 read unchanged."""
    alert_id: str
    """The alert concerned."""
    event_id: str
    """The case update behind the alert."""
    case_id: str
    """The case, for per-case counts."""
    subscriber_id: str
    """The recipient's id (never the address)."""
    sink: str
    """Name of the sink connector."""
    outcome: DeliveryOutcome
    """What happened."""
    provider_message_id: str | None = None
    """The provider's id for the message, or the outbox file name."""
    attempts: int = 1
    """How many attempts it took."""
    detail: str | None = None
    """The error, for failures; the provider's reason (addresses removed) for its outcomes."""
    provider_event_id: str | None = None
    """The provider's id of the event reported (SendGrid's ``sg_event_id``); None from the sink."""
    at: AwareDatetime
    """When it happened."""


_INSTANT = TypeAdapter(AwareDatetime)
_VERSION: int = DeliveryEvent.model_fields["schema_version"].default


def _plain(text: str) -> bool:
    """Whether ``text`` is its own JSON string between quotes (nothing to escape)."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


class DeliveryRecords:
    """The JSON of the delivery stage's :class:`DeliveryEvent` records of one sink at one instant.

    The bytes are ``DeliveryEvent(...).model_dump_json()``'s, made without a model per alert
    when every text is plain (ids always are): a batch of 1,000 alerts takes a fifth of the
    time. Any other text goes through the model. A test holds the two to the same bytes.
    """

    def __init__(self, sink: str, at: datetime) -> None:
        self._sink, self._at = sink, at
        self._tail = ',"provider_event_id":null,"at":' + _INSTANT.dump_json(at).decode("utf-8") + "}"
        self._plain_sink = _plain(sink)

    def encode(
        self,
        *,
        alert_id: str,
        event_id: str,
        case_id: str,
        subscriber_id: str,
        outcome: DeliveryOutcome,
        provider_message_id: str | None,
        attempts: int,
        detail: str | None,
    ) -> bytes:
        """One record's value."""
        if (
            self._plain_sink
            and _plain(alert_id)
            and _plain(event_id)
            and _plain(case_id)
            and _plain(subscriber_id)
            and (provider_message_id is None or _plain(provider_message_id))
            and (detail is None or _plain(detail))
            and type(attempts) is int
        ):
            message = "null" if provider_message_id is None else f'"{provider_message_id}"'
            why = "null" if detail is None else f'"{detail}"'
            return (
                f'{{"schema_version":{_VERSION},"alert_id":"{alert_id}","event_id":"{event_id}","case_id":"{case_id}",'
                f'"subscriber_id":"{subscriber_id}","sink":"{self._sink}","outcome":"{outcome.value}",'
                f'"provider_message_id":{message},"attempts":{attempts},"detail":{why}{self._tail}'
            ).encode("ascii")
        return (
            DeliveryEvent.trusted(
                schema_version=_VERSION,
                alert_id=alert_id,
                event_id=event_id,
                case_id=case_id,
                subscriber_id=subscriber_id,
                sink=self._sink,
                outcome=outcome,
                provider_message_id=provider_message_id,
                attempts=attempts,
                detail=detail,
                provider_event_id=None,
                at=self._at,
            )
            .model_dump_json()
            .encode("utf-8")
        )
