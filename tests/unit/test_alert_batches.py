from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import AlertBatch, CaseUpdate, MatchReason, Recipient, alert_id_for, batch_id_for
from streams.sent import SentAlerts

CASE = CaseUpdate.model_validate_json(
    json.dumps(
        {
            "case_id": "bd-1",
            "status": "urgent_action",
            "title": {"en": "Fired for organising"},
            "summary": {"en": "Twelve leaders dismissed."},
            "country": "BD",
            "brands": ["H&M"],
            "issues": ["union_busting"],
            "occurred_at": "2026-01-01T00:00:00Z",
            "published_by": "p",
        }
    )
)


def batch(*subscribers: str) -> AlertBatch:
    return AlertBatch(
        batch_id=batch_id_for(CASE.event_id, 3, "fr", 0),
        event_id=CASE.event_id,
        language="fr",
        case=CASE.public(),
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
        recipients=tuple(
            Recipient(
                alert_id=alert_id_for(CASE.event_id, s),
                subscriber_id=s,
                email=f"{s}@example.org",
                name=s.title(),
                reason=MatchReason(country="BD"),
            )
            for s in subscribers
        ),
    )


def test_a_batch_read_from_the_wire_expands_to_one_alert_per_person_with_the_case_once() -> None:
    wire = batch("amina", "bilal").model_dump_json()
    assert wire.count('"Fired for organising"') == 1
    read = AlertBatch.model_validate_json(wire)
    alerts = read.alerts()
    assert [a.subscriber_id for a in alerts] == ["amina", "bilal"]
    assert [a.alert_id for a in alerts] == [alert_id_for(CASE.event_id, s) for s in ("amina", "bilal")]
    assert all(a.case is read.case and a.language == "fr" and a.event_id == CASE.event_id for a in alerts)
    # The expanded alerts are what the Alert schema accepts.
    assert [type(a).model_validate_json(a.model_dump_json()) for a in alerts] == alerts


def test_a_batch_without_recipients_or_with_a_malformed_address_is_refused() -> None:
    data = json.loads(batch("amina").model_dump_json())
    with pytest.raises(ValidationError, match="recipients"):
        AlertBatch.model_validate_json(json.dumps({**data, "recipients": []}))
    data["recipients"][0]["email"] = "no-at-sign"
    with pytest.raises(ValidationError, match=r"recipients\.0\.email"):
        AlertBatch.model_validate_json(json.dumps(data))


def test_a_batch_narrowed_for_a_dead_letter_keeps_only_that_person() -> None:
    full = batch("amina", "bilal", "chen")
    narrowed = full.only(frozenset({alert_id_for(CASE.event_id, "bilal")}))
    assert [r.subscriber_id for r in narrowed.recipients] == ["bilal"]
    assert narrowed.batch_id == full.batch_id and narrowed.case == full.case


class _Table(dict[str, Any]):
    """Stands in for the changelog-backed table: SentAlerts only reads and writes keys."""


def test_sent_alerts_merge_the_parts_of_a_batch_and_read_rows_of_one_alert() -> None:
    table = _Table()
    sent = SentAlerts(table)  # type: ignore[arg-type]
    sent.record("alb-1", 2, ["a1", "a2"], "outbox", "ev-1")
    sent.record("alb-1", 2, ["a2", "a3"], "outbox", "ev-1")  # a retry, a replay: never loses a1
    assert table["alb-1"]["alerts"] == ["a1", "a2", "a3"] and table["alb-1"]["partition"] == 2
    assert all(a in sent for a in ("a1", "a2", "a3")) and "a4" not in sent
    sent.record("alb-1", 2, ["a1"], "outbox", "ev-1")  # nothing new: no write
    assert table["alb-1"]["alerts"] == ["a1", "a2", "a3"]

    newcomer = SentAlerts(_Table())  # type: ignore[arg-type]
    known = newcomer.load([*table.items(), ("alr-old", {"at": "2026-01-01T00:00:00+00:00", "sink": "smtp"})])
    assert known == 4 and "alr-old" in newcomer and "a3" in newcomer


def test_sent_alerts_forget_rows_past_their_retention_on_their_own_partitions_only() -> None:
    table = _Table()
    sent = SentAlerts(table)  # type: ignore[arg-type]
    sent.record("alb-old", 1, ["o1", "o2"], "outbox", "ev-old")
    sent.record("alb-remind", 1, ["r1"], "outbox", "ev-call")  # a reminder of ev-call is still held
    sent.record("alb-elsewhere", 3, ["e1"], "outbox", "ev-old")  # another worker's partition
    table["alb-handmade"] = {"partition": 1, "alerts": ["h1"]}  # no time recorded
    sent.load(table.items())
    recorded = {key: datetime.fromisoformat(row["at"]) for key, row in table.items() if "at" in row}

    # Nothing is older than a cut-off before the rows were written.
    assert sent.expire(min(recorded.values()) - timedelta(seconds=1), {1, 3}, set()) == 0
    assert set(table) == {"alb-old", "alb-remind", "alb-elsewhere", "alb-handmade"}

    later = max(recorded.values()) + timedelta(seconds=1)
    assert sent.expire(later, {1}, {"ev-call"}) == 2
    assert set(table) == {"alb-remind", "alb-elsewhere", "alb-handmade"}
    assert "o1" not in sent and "o2" not in sent
    assert all(a in sent for a in ("r1", "e1", "h1"))

    # Once the reminder is gone, its update's rows go too.
    assert sent.expire(later, {1}, set()) == 1 and "r1" not in sent
    assert set(table) == {"alb-elsewhere", "alb-handmade"}


def test_a_batch_too_large_for_one_record_is_cut_into_halves_that_fit() -> None:
    from streams.alerting import encode_batch

    full = batch(*(f"person-{i:03}" for i in range(10)))
    one_record = encode_batch(full)
    assert [k for k, _ in one_record] == [full.batch_id.encode()]
    limit = len(one_record[0][1]) // 3
    records = encode_batch(full, max_bytes=limit)
    assert len(records) >= 3 and all(len(v) <= limit for _, v in records)
    parts = [AlertBatch.model_validate_json(v) for _, v in records]
    assert [r for p in parts for r in p.recipients] == list(full.recipients)
    assert len({k for k, _ in records}) == len(records)
    assert all(
        k.decode() == p.batch_id and p.batch_id.startswith(full.batch_id + "-")
        for (k, _), p in zip(records, parts, strict=True)
    )
    assert encode_batch(full, max_bytes=limit) == records  # the same cut every time


def test_a_plain_batch_on_the_wire_has_no_field_a_worker_before_reminders_and_digests_would_refuse() -> None:
    # Readers refuse unknown fields; during a rolling upgrade the workers of the version
    # before must still read every batch that is neither a reminder nor a digest.
    from streams.alerting import encode_batch

    plain = batch("amina", "bilal")
    ((_, value),) = encode_batch(plain)
    assert not {"reminder", "digest", "digest_frequency"} & set(json.loads(value))
    assert AlertBatch.model_validate_json(value) == plain
    ((_, reminder),) = encode_batch(plain.model_copy(update={"reminder": True}))
    assert json.loads(reminder)["reminder"] is True
