"""Configuration, input files, retries and logs: the edges where people meet the pipeline."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import structlog

from mobilise.errors import ConfigurationError
from mobilise.inputs import InvalidInput, read_case_updates
from mobilise.logs import redact_addresses
from mobilise.settings import load_settings
from streams.retry import backoff_delay


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("MOBILISE_PARTITIONS", "12")
    settings = load_settings()
    assert settings.bootstrap_servers == ["k1:9092", "k2:9092"]
    assert settings.partitions == 12


def test_a_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILISE_PARTITIONS", "zero")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "no-port")
    with pytest.raises(ConfigurationError) as exc:
        load_settings()
    assert "MOBILISE_PARTITIONS='zero'" in str(exc.value)
    assert "KAFKA_BOOTSTRAP_SERVERS='no-port'" in str(exc.value)


GOOD = """
case_id: kh-1
status: opened
title: {en: Wage theft}
summary: {en: Three months unpaid}
country: KH
issues: [wages]
occurred_at: 2026-03-01T08:00:00Z
published_by: coordinator
"""


def test_yaml_files_with_one_or_many_updates_are_read(tmp_path: Path) -> None:
    one = tmp_path / "one.yaml"
    one.write_text(GOOD)
    assert [u.case_id for u in read_case_updates(one)] == ["kh-1"]
    many = tmp_path / "many.json"
    many.write_text(json.dumps([{**_good_dict(), "case_id": "a"}, {**_good_dict(), "case_id": "b"}]))
    assert [u.case_id for u in read_case_updates(many)] == ["a", "b"]


def test_an_invalid_file_reports_every_bad_field_with_its_update(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([_good_dict(), {**_good_dict(), "country": "ZZ", "status": "paused"}]))
    with pytest.raises(InvalidInput) as exc:
        read_case_updates(path)
    message = str(exc.value)
    assert "was not published" in message
    assert "update 2: country:" in message and "update 2: status:" in message
    assert "update 1" not in message


def test_unparseable_files_say_so(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(InvalidInput, match="is not valid JSON"):
        read_case_updates(path)
    with pytest.raises(InvalidInput, match="cannot read"):
        read_case_updates(tmp_path / "missing.yaml")


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    rng = random.Random(1)
    ceilings = [max(backoff_delay(n, base=1, cap=8, rng=rng) for _ in range(200)) for n in (1, 2, 3, 4, 6)]
    assert ceilings[0] <= 1 < ceilings[1] <= 2 < ceilings[2] <= 4 < ceilings[3] <= 8
    assert ceilings[4] <= 8
    assert backoff_delay(1, base=1, cap=8, retry_after=30, rng=rng) == 30


def test_addresses_are_redacted_above_debug() -> None:
    assert redact_addresses(None, "info", {"event": "x", "email": "a@example.org"})["email"] == "[redacted]"
    assert (
        redact_addresses(None, "debug", {"event": "x", "email": "a@example.org"})["email"] == "a@example.org"
    )
    with structlog.testing.capture_logs() as logs:
        structlog.get_logger().info("alert.sent", alert_id="alr-1")
    assert logs == [{"event": "alert.sent", "alert_id": "alr-1", "log_level": "info"}]


def _good_dict() -> dict[str, object]:
    return {
        "case_id": "kh-1",
        "status": "opened",
        "title": {"en": "Wage theft"},
        "summary": {"en": "Three months unpaid"},
        "country": "KH",
        "issues": ["wages"],
        "occurred_at": "2026-03-01T08:00:00Z",
        "published_by": "coordinator",
    }
