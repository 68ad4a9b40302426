"""`mobilise status`: lag, member assignments, last delivery per sink, and the text an operator reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment

from mobilise.snapshot import StoredRecord, TopicOffsets, _bootstrap_failed, unreachable
from mobilise.status import (
    DeadLetterSummary,
    GroupStatus,
    LatestDeadLetter,
    Member,
    SinkStatus,
    StatusReport,
    TopicStatus,
    _TolerantAdmin,
    assigned_partitions,
    format_status,
    lag_of,
    last_delivery_per_sink,
)
from schemas import DeliveryEvent, DeliveryOutcome

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def test_lag_counts_from_the_commit_or_from_the_beginning_when_there_is_none() -> None:
    offsets = TopicOffsets("p-case-updates", beginning={0: 0, 1: 5, 2: 0}, end={0: 10, 1: 9, 2: 3})
    lags = lag_of(offsets, {0: 7, 2: 4})  # 4 past the end: Tansu's end can lag behind a batch
    assert [(p.partition, p.committed, p.lag) for p in lags] == [(0, 7, 3), (1, None, 4), (2, 4, 0)]
    assert offsets.stored == 10 + 4 + 3 and offsets.partitions == [0, 1, 2]


def test_member_assignments_are_read_in_every_form_kafka_python_gives() -> None:
    decoded = ConsumerProtocolAssignment.decode(
        ConsumerProtocolAssignment(
            version=0, assigned_partitions=[("p-alerts", [1, 0])], user_data=b""
        ).encode()
    )
    assert assigned_partitions(decoded) == ["p-alerts[0]", "p-alerts[1]"]
    as_dict = {"assigned_partitions": [{"topic": "p-alerts", "partitions": [2]}], "user_data": ""}
    assert assigned_partitions(as_dict) == ["p-alerts[2]"]
    as_tuples = ConsumerProtocolAssignment(version=0, assigned_partitions=[("t", [3])], user_data=b"")
    assert assigned_partitions(as_tuples) == ["t[3]"]
    assert assigned_partitions("") is None  # Tansu sends no assignment
    assert assigned_partitions(b"\x00garbage") is None


def delivery(
    sink: str, outcome: DeliveryOutcome, seconds: int, provider_event_id: str | None = None
) -> StoredRecord:
    event = DeliveryEvent(
        alert_id=f"alr-{sink}-{seconds}",
        event_id="evt-1",
        case_id="bd-1",
        subscriber_id="sub-1",
        sink=sink,
        outcome=outcome,
        provider_event_id=provider_event_id,
        at=T0 + timedelta(seconds=seconds),
    )
    return StoredRecord("p-deliveries", 0, seconds, T0, b"sub-1", event.model_dump_json().encode())


def test_the_last_delivery_per_sink_ignores_provider_feedback_and_remembers_the_last_acceptance() -> None:
    records = [
        delivery("smtp", DeliveryOutcome.ACCEPTED, 1),
        delivery("smtp", DeliveryOutcome.DEAD_LETTERED, 3),
        delivery("smtp", DeliveryOutcome.ACCEPTED, 2),
        delivery("sendgrid", DeliveryOutcome.ACCEPTED, 1),
        delivery("sendgrid", DeliveryOutcome.OPENED, 9, provider_event_id="sg-1"),
        StoredRecord("p-deliveries", 0, 99, T0, None, b"not a delivery"),
        StoredRecord("p-deliveries", 0, 100, T0, None, None),
    ]
    sinks = last_delivery_per_sink(records)
    assert [(s.sink, s.outcome, s.alert_id) for s in sinks] == [
        ("sendgrid", "accepted", "alr-sendgrid-1"),
        ("smtp", "dead_lettered", "alr-smtp-3"),
    ]
    assert sinks[1].last_accepted_at == T0 + timedelta(seconds=2)


def test_the_admin_client_drops_authorized_operations_the_broker_sent_unasked() -> None:
    group = {"group_id": "g", "authorized_operations": -2147483648, "members": []}
    assert _TolerantAdmin._process_acl_operations(None, dict(group)) == {"group_id": "g", "members": []}  # type: ignore[arg-type]


def report(**changes: object) -> StatusReport:
    fields: dict[str, object] = {
        "generated_at": T0,
        "bootstrap_servers": "k1:9092",
        "app_id": "mobilise",
        "topic_prefix": "p-",
        "topics": [
            TopicStatus(
                name="p-case-updates", role="input", exists=True, partitions=2, end_offsets={0: 4, 1: 6}
            ),
            TopicStatus(name="p-dead-letters-replayed", role="replays", exists=False),
            TopicStatus(name="p-alerts", role="input (internal)", exists=False),
        ],
        "group": GroupStatus(
            group_id="mobilise",
            state="Stable",
            lag=lag_of(TopicOffsets("p-case-updates", {0: 0, 1: 0}, {0: 4, 1: 6}), {0: 4}),
            members=[
                Member(member_id="faust-1", partitions=["p-case-updates[0]"]),
                Member(member_id="faust-2"),
            ],
        ),
        "dead_letters": DeadLetterSummary(
            count=12,
            replayed=2,
            latest=[
                LatestDeadLetter(
                    id="dl-abc", at=T0, stage="fanout", origin="p-case-updates[1]@3", reason="country: bad"
                )
            ],
        ),
        "sinks": [SinkStatus(sink="smtp", at=T0, outcome="accepted", alert_id="alr-1", last_accepted_at=T0)],
    }
    fields.update(changes)
    return StatusReport.model_validate(fields)


def test_the_status_text_shows_topics_lag_workers_dead_letters_and_sinks() -> None:
    text = format_status(report())
    assert "KAFKA_BOOTSTRAP_SERVERS=k1:9092  MOBILISE_APP_ID=mobilise  MOBILISE_TOPIC_PREFIX=p-" in text
    assert "p-case-updates" in text and "         2           10" in text
    assert "missing (created by the first replay)" in text
    assert "missing (`mobilise topics create`)" in text
    assert "Consumer group mobilise (Stable)" in text
    lag_line = next(
        line for line in text.splitlines() if line.startswith("  p-case-updates") and "p1=6" in line
    )
    assert lag_line.split()[1:4] == ["4", "10", "6"] and "(1 partition(s) never committed)" in lag_line
    assert "    faust-1: p-case-updates[0]" in text and "    faust-2: -" in text
    assert "Dead letters: 12 (2 replayed)" in text
    assert "2026-03-01 08:00:00Z  dl-abc  case-updates[1]@3  fanout  country: bad" in text
    assert "  smtp       accepted       2026-03-01 08:00:00Z  alert alr-1" in text


def test_what_the_broker_cannot_tell_is_said_plainly() -> None:
    text = format_status(
        report(
            group=GroupStatus(
                group_id="mobilise",
                lag_note="not available on this broker (UnsupportedVersionError: OffsetFetch)",
                members_note="not available on this broker (ValueError: 15)",
            ),
            dead_letters=DeadLetterSummary(count=80_000, exact=False),
            sinks=[],
        )
    )
    assert "  lag: not available on this broker (UnsupportedVersionError: OffsetFetch)" in text
    assert "  workers: not available on this broker (ValueError: 15)" in text
    assert "Dead letters: about 80000 (0 replayed)" in text
    assert "Last delivery per sink\n  none yet" in text


def test_an_unreachable_broker_is_reported_naming_the_variable() -> None:
    error = unreachable(["k1:9092", "k2:9092"], KafkaTimeoutError("Unable to bootstrap from ['k1:9092']"))
    assert str(error).startswith("cannot reach Kafka at k1:9092,k2:9092 (KafkaTimeoutError")
    assert "check that KAFKA_BOOTSTRAP_SERVERS names running brokers" in str(error)
    assert _bootstrap_failed(KafkaTimeoutError("Unable to bootstrap from ['x:1']"))
    assert _bootstrap_failed(KafkaConnectionError("refused"))
    assert not _bootstrap_failed(KafkaTimeoutError("Timed out waiting for a produce acknowledgement"))
