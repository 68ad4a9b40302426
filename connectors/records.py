"""Which topics a connector may be declared on, the model of their records, and record ids.

A connectors file names a topic by its kind (``case-updates``, ``alerts``…); the runtime
adds the deployment's prefix. Reading a record here is the one place where a topic's bytes
become models for a sink, and producing the one place where a source's models get their key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from schemas import (
    Alert,
    AlertBatch,
    CaseUpdate,
    DeadLetter,
    DeliveryEvent,
    Subscription,
    read_subscriptions_record,
)
from schemas._base import Event, stable_id
from streams.records import read_model
from streams.topics import TopicNames

__all__ = ["SINK_TOPICS", "SOURCE_TOPICS", "TopicKind", "record_id", "record_key", "topic_name"]


@dataclass(frozen=True)
class TopicKind:
    """A topic connectors can be declared on."""

    kind: str
    """Its name without the deployment's prefix, as written in a connectors file."""
    model: type[BaseModel]
    """The model a sink receives from it (for alerts: one per person of an alert batch)."""
    read: Callable[[bytes | None], list[BaseModel]]
    """Bytes of one record → its models; raises ``ValidationError`` when they are invalid."""
    isolate: Callable[[bytes | None, bytes | None, BaseModel], tuple[bytes | None, bytes | None]] | None = (
        None
    )
    """(key, value, model) of a record → the key and value of a record of that model alone.

    For a dead letter of one model of a record that holds many (an alert batch), so that a
    replay reaches only that one.
    """


def _read_alerts(value: bytes | None) -> list[BaseModel]:
    return list(read_model(AlertBatch, value).alerts())


def _isolate_alert(
    key: bytes | None, value: bytes | None, model: BaseModel
) -> tuple[bytes | None, bytes | None]:
    assert isinstance(model, Alert)
    alone = read_model(AlertBatch, value).only(frozenset({model.alert_id}))
    return model.subscriber_id.encode("utf-8"), alone.model_dump_json().encode("utf-8")


def _read_subscriptions(value: bytes | None) -> list[BaseModel]:
    # A tombstone (an erased person) carries nothing a sink could be given.
    return [] if value is None else [read_subscriptions_record(value)]


def _reader(model: type[Event]) -> Callable[[bytes | None], list[BaseModel]]:
    def read(value: bytes | None) -> list[BaseModel]:
        return [read_model(model, value)]

    return read


SINK_TOPICS: dict[str, TopicKind] = {
    kind.kind: kind
    for kind in (
        TopicKind("case-updates", CaseUpdate, _reader(CaseUpdate)),
        TopicKind("subscriptions", BaseModel, _read_subscriptions),
        TopicKind("alerts", Alert, _read_alerts, _isolate_alert),
        TopicKind("deliveries", DeliveryEvent, _reader(DeliveryEvent)),
        TopicKind("dead-letters", DeadLetter, _reader(DeadLetter)),
    )
}
"""Topics a sink may consume."""

SOURCE_TOPICS: dict[str, type[CaseUpdate] | type[Subscription]] = {
    "case-updates": CaseUpdate,
    "subscriptions": Subscription,
}
"""Topics a source may produce to, and the model each record must validate as."""


def topic_name(kind: str, names: TopicNames) -> str:
    """The full topic name of ``kind`` in a deployment (its prefix applied)."""
    return {
        "case-updates": names.case_updates,
        "subscriptions": names.subscriptions,
        "alerts": names.alerts,
        "deliveries": names.deliveries,
        "dead-letters": names.dead_letters,
    }[kind]


def record_id(record: BaseModel) -> str:
    """A record's deterministic id: the same record gives the same id on every replay.

    Alerts have their alert id and case updates their event id (both idempotency keys
    already); anything else is identified by a hash of its content.
    """
    if isinstance(record, Alert):
        return record.alert_id
    if isinstance(record, CaseUpdate):
        return record.event_id
    return stable_id(type(record).__name__, record.model_dump_json())


def record_key(record: CaseUpdate | Subscription) -> str:
    """The Kafka key a source's record is produced with (case_id or subscriber_id)."""
    return record.case_id if isinstance(record, CaseUpdate) else record.subscriber_id
