"""Suppression: stop alerting a person because they or their mail provider said so.

Published on the ``subscriptions`` topic, keyed by ``subscriber_id``, beside the
Subscriptions. A record of that topic is therefore one of two models, told apart by the
``record`` field: ``"suppression"`` for a Suppression, absent for a Subscription (every
record written before suppressions existed stays valid). :data:`SubscriptionsRecord` is
that union; :func:`read_subscriptions_record` reads one from the wire.

Unlike a tombstone (which erases a person), a suppression is a fact kept on the shard: the
person's subscription is dropped, and a subscription created before the suppression
occurred (a late replay, a re-import from a CRM) does not bring them back. A subscription
created after it does: the person subscribed again.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ._base import Event, stable_id
from .subscription import Subscription

__all__ = [
    "SubscriptionsRecord",
    "Suppression",
    "SuppressionReason",
    "read_subscriptions_record",
    "record_kind",
]

_SLUG = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class SuppressionReason(StrEnum):
    """Why a person is no longer alerted."""

    BOUNCE = "bounce"
    """Their mail server refused the address permanently (a hard bounce)."""
    DROPPED = "dropped"
    """The provider did not even try (the address is on its suppression lists, or invalid)."""
    SPAM_REPORT = "spamreport"
    """They marked an alert as spam."""
    UNSUBSCRIBE = "unsubscribe"
    """They unsubscribed through the provider (its link or the List-Unsubscribe header)."""
    GROUP_UNSUBSCRIBE = "group_unsubscribe"
    """They left the provider's unsubscribe group the alerts are sent in."""
    LINK_UNSUBSCRIBE = "link_unsubscribe"
    """They used our signed unsubscribe link (the page, or RFC 8058 one-click)."""


def _mark_record_required(schema: dict[str, Any]) -> None:
    # A producer must send "record": without it the record is read as a Subscription.
    required = schema.setdefault("required", [])
    if "record" not in required:
        required.insert(0, "record")


class Suppression(Event):
    """Stop alerting one subscriber. Topic ``subscriptions``, key ``subscriber_id``.

    ``event_id`` is deterministic: derived from the source and the provider's event id
    when there is one (so a provider retrying a webhook produces the very same record),
    else from the subscriber, the reason and the time.
    """

    model_config = ConfigDict(json_schema_extra=_mark_record_required)

    record: Literal["suppression"] = "suppression"
    """Tells a Suppression from a Subscription on the subscriptions topic; always ``"suppression"``."""
    schema_version: Literal[1] = 1
    """Version of this schema; a reader rejects versions it does not know."""
    event_id: Annotated[str, Field(pattern=_SLUG)] = Field(default="", validate_default=False)
    """Idempotency key of this suppression; derived when left out."""
    subscriber_id: Annotated[str, Field(pattern=_SLUG)]
    """Whom to stop alerting (``subscriber_id_for(email)`` when only the address is known)."""
    reason: SuppressionReason
    """Why."""
    source: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    """Who said so: ``sendgrid`` (its event webhook), ``link`` (our unsubscribe link), …"""
    occurred_at: AwareDatetime
    """When it happened (the provider's event time); a subscription created later wins."""
    provider_event_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """The provider's id of the event behind it (SendGrid's ``sg_event_id``)."""

    @model_validator(mode="after")
    def _derive_event_id(self) -> Suppression:
        if not self.event_id:
            basis: tuple[Any, ...] = (
                (self.source, self.provider_event_id, self.subscriber_id)
                if self.provider_event_id
                else (self.source, self.subscriber_id, self.reason.value, self.occurred_at.isoformat())
            )
            object.__setattr__(self, "event_id", "sup-" + stable_id("suppression", *basis, length=24))
        return self

    def overrides(self, subscription: Subscription) -> bool:
        """Whether this suppression ends ``subscription``: the later fact wins.

        A subscription created after the suppression occurred is a fresh
        re-subscription and stands; one created before (or at the same instant) ends.
        """
        return subscription.created_at <= self.occurred_at


def record_kind(value: Any) -> str:
    """The union tag of a subscriptions-topic record: its ``record`` field, ``subscription`` if absent."""
    kind = value.get("record", "subscription") if isinstance(value, dict) else getattr(value, "record", None)
    return str(kind) if kind is not None else "subscription"


SubscriptionsRecord = Annotated[
    Annotated[Subscription, Tag("subscription")] | Annotated[Suppression, Tag("suppression")],
    Discriminator(record_kind),
]
"""A record of the subscriptions topic (apart from tombstones)."""

_ADAPTER: TypeAdapter[Subscription | Suppression] = TypeAdapter(SubscriptionsRecord)


def read_subscriptions_record(value: bytes) -> Subscription | Suppression:
    """Validate a subscriptions-topic value (strict JSON) as a Subscription or a Suppression.

    Errors name fields as they are in the record (``email``, not ``subscription.email``);
    an unknown ``record`` value is an error at ``record``.

    Raises:
        ValidationError: not JSON, or not a valid record of either kind.

    """
    try:
        return _ADAPTER.validate_json(value)
    except ValidationError as exc:
        details: list[Any] = []
        for error in exc.errors(include_url=False):
            loc = error["loc"]
            if error["type"] == "union_tag_invalid":
                loc = ("record",)
            elif loc and loc[0] in ("subscription", "suppression"):
                loc = loc[1:]
            # The message as pydantic wrote it, under the same error type.
            kind = PydanticCustomError(error["type"], error["msg"])
            details.append({"type": kind, "loc": loc, "input": error["input"]})
        raise ValidationError.from_exception_data(exc.title, details) from None
