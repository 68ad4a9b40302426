"""The per-person shortcuts of the hot paths give exactly what the slow, validated way gives."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from pydantic import ValidationError

from connectors.base import SinkOutcome
from schemas import (
    Alert,
    AlertBatch,
    CaseUpdate,
    DeliveryEvent,
    DeliveryOutcome,
    DeliveryRecords,
    MatchReason,
    Recipient,
    Subscription,
)
from schemas.alert import BATCH_FIELDS
from streams.alerting import alert_batches
from streams.metrics import observe_many

CASE = CaseUpdate.model_validate_json(
    json.dumps(
        {
            "case_id": "bd-1",
            "status": "urgent_action",
            "title": {"en": "Fired", "fr": "Licenciés"},
            "summary": {"en": "Twelve leaders dismissed."},
            "country": "BD",
            "issues": ["union_busting"],
            "occurred_at": "2026-03-01T00:00:00Z",
            "published_by": "p",
            "action_call": {"kind": "sign", "instructions": {"en": "Sign."}, "target": {"name": "H&M"}},
        }
    )
).public()


def _people() -> list[tuple[Subscription, MatchReason]]:
    people = []
    for i, extra in enumerate(({}, {"name": "Rina"}, {"home_country": "NL", "language": "fr"})):
        values = {
            "email": f"p{i}@example.org",
            "countries": ["BD"],
            "interests": ["union_busting"],
            "confirmed": True,
            "created_at": "2026-01-01T00:00:00Z",
            **extra,
        }
        people.append(
            (
                Subscription.model_validate_json(json.dumps(values)),
                MatchReason(country="BD", interests=("union_busting",)),
            )
        )
    return people


def test_trusted_recipients_and_alerts_equal_their_validated_selves() -> None:
    batches = alert_batches(
        event_id="evt-1",
        partition=0,
        case=CASE,
        created_at=datetime(2026, 3, 1, tzinfo=UTC),
        people=_people(),
        batch_size=10,
    )
    for batch in batches:
        wire = batch.model_dump_json()
        assert AlertBatch.model_validate_json(wire) == batch
        for recipient in batch.recipients:
            assert Recipient.model_validate_json(recipient.model_dump_json()) == recipient
        for alert in batch.alerts():
            validated = Alert.model_validate_json(alert.model_dump_json())
            assert validated == alert and validated.model_dump() == alert.model_dump()
            assert alert.model_dump_json() == validated.model_dump_json()  # fields in their order
            assert alert.model_fields_set == set(Alert.model_fields)
    # Alerts of one batch share what they can; a copy of one changes none of the others.
    first, second = next(b for b in batches if len(b.recipients) > 1).alerts()[:2]
    changed = first.model_copy(update={"name": "Someone"})
    assert changed.name == "Someone" and first.name != "Someone" and second.name != "Someone"
    assert changed.model_fields_set == first.model_fields_set == set(Alert.model_fields)


def test_every_field_of_an_alert_is_held_by_its_batch_or_its_recipient() -> None:
    # What AlertBatch.of and alerts() copy: a new Alert field must be added to one of them.
    personal = set(Recipient.model_fields)
    assert set(BATCH_FIELDS) | personal | {"schema_version"} == set(Alert.model_fields)
    assert not set(BATCH_FIELDS) & personal


def test_alerts_made_back_into_batches_are_the_same_alerts() -> None:
    made = datetime(2026, 3, 1, tzinfo=UTC)
    first = alert_batches(
        event_id="evt-1", partition=0, case=CASE, created_at=made, people=_people(), batch_size=10
    )
    follow_ups = [b.model_copy(update={"follow_up": True}) for b in first]
    alerts = [a for b in [*first, *follow_ups] for a in b.alerts()]
    batches = AlertBatch.of(alerts, batch_id="again")
    # One batch per run of alerts sharing a batch's fields: per language, then per kind.
    assert len(batches) == 2 * len(first) and {b.batch_id for b in batches} == {"again"}
    again = [a for b in batches for a in b.alerts()]
    assert [a.model_dump_json() for a in again] == [a.model_dump_json() for a in alerts]
    for batch in batches:
        assert AlertBatch.model_validate_json(batch.model_dump_json(exclude_defaults=True)) == batch


_DELIVERY_RECORD = {
    "schema_version": 3,
    "alert_id": "alr-1",
    "event_id": "evt-1",
    "case_id": "bd-1",
    "subscriber_id": "sub-1",
    "sink": "outbox",
    "outcome": "accepted",
    "provider_message_id": "alr-1.eml",
    "attempts": 1,
    "detail": None,
    "provider_event_id": None,
    "at": "2026-03-01T00:00:00Z",
}


def test_a_trusted_delivery_event_serialises_as_the_validated_one() -> None:
    validated = DeliveryEvent.model_validate_json(json.dumps(_DELIVERY_RECORD))
    fast = DeliveryEvent.trusted(**dict(validated))
    assert fast.model_dump_json() == validated.model_dump_json()


def test_delivery_events_of_every_version_read_and_a_cancelled_one_says_version_3() -> None:
    for version in (1, 2, 3):
        read = DeliveryEvent.model_validate_json(json.dumps({**_DELIVERY_RECORD, "schema_version": version}))
        assert read.schema_version == version and read.outcome is DeliveryOutcome.ACCEPTED
    written = {k: v for k, v in _DELIVERY_RECORD.items() if k != "schema_version"}
    cancelled = DeliveryEvent.model_validate_json(json.dumps({**written, "outcome": "cancelled"}))
    assert json.loads(cancelled.model_dump_json())["schema_version"] == 3
    with pytest.raises(ValidationError, match="schema_version"):
        DeliveryEvent.model_validate_json(json.dumps({**_DELIVERY_RECORD, "schema_version": 4}))


_ID = st.text(alphabet=st.characters(codec="ascii", categories=["L", "N"]), min_size=1) | st.text()


@settings(max_examples=400)
@given(
    texts=st.tuples(_ID, _ID, _ID, _ID, _ID),
    message_id=st.none() | _ID,
    detail=st.none() | st.text(),
    attempts=st.integers(min_value=0, max_value=10**6),
    outcome=st.sampled_from(DeliveryOutcome),
    at=st.datetimes(timezones=st.just(UTC)),
)
def test_delivery_records_are_the_bytes_of_the_model(
    texts: tuple[str, str, str, str, str],
    message_id: str | None,
    detail: str | None,
    attempts: int,
    outcome: DeliveryOutcome,
    at: datetime,
) -> None:
    alert_id, event_id, case_id, subscriber_id, sink = texts
    fields = {
        "alert_id": alert_id,
        "event_id": event_id,
        "case_id": case_id,
        "subscriber_id": subscriber_id,
        "outcome": outcome,
        "provider_message_id": message_id,
        "attempts": attempts,
        "detail": detail,
    }
    # What the delivery stage wrote before: a model of the values it has, validated already.
    values = {"schema_version": 3, "sink": sink, "provider_event_id": None, "at": at, **fields}
    model = DeliveryEvent.trusted(**{name: values[name] for name in DeliveryEvent.model_fields})
    encoded = DeliveryRecords(sink, at).encode(**fields)
    assert encoded == model.model_dump_json().encode("utf-8")
    assert json.loads(encoded)["alert_id"] == alert_id and json.loads(encoded)["detail"] == detail


def test_an_accept_outcome_equals_the_validated_one() -> None:
    assert SinkOutcome.accept("alr-1") == SinkOutcome(record_id="alr-1", accepted=True)
    assert SinkOutcome.accept("alr-2", provider_message_id="m", duplicate=True) == SinkOutcome(
        record_id="alr-2", accepted=True, provider_message_id="m", duplicate=True
    )


def test_observing_many_at_once_is_observing_them_one_by_one() -> None:
    buckets = (0.01, 0.1, 1, 10)
    one_by_one = Histogram("x_seconds", "x", ["sink"], buckets=buckets, registry=CollectorRegistry())
    at_once = Histogram("x_seconds", "x", ["sink"], buckets=buckets, registry=CollectorRegistry())
    for amount, count in ((0.05, 1000), (0.5, 1), (20.0, 3), (0.001, 0), (0.1, 7)):
        for _ in range(count):
            one_by_one.labels("s").observe(amount)
        observe_many(at_once.labels("s"), amount, count)

    def samples(h: Histogram) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name, s.labels, round(s.value, 9))
            for m in h.collect()
            for s in m.samples
            if "created" not in s.name
        ]

    assert samples(at_once) == samples(one_by_one)
