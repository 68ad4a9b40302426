from __future__ import annotations

from pathlib import Path

import pytest

from connectors.base import ConnectorConfig, describe_config
from connectors.declarations import ConnectorsFileError, load_connectors
from connectors.subscriber_file import SubscriberFileSource


def write(tmp_path: Path, text: str, name: str = "connectors.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConnectorsFileError) as raised:
        load_connectors(path)
    assert str(path) in str(raised.value)
    return raised.value.problems


def test_a_valid_file_loads_each_connector_with_its_settings_and_secrets_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPORT_DIR", str(tmp_path))
    path = write(
        tmp_path,
        "connectors:\n"
        "  - name: members\n"
        "    type: subscriber-file\n"
        "    topic: subscriptions\n"
        "    settings: {path: '${IMPORT_DIR}/members.csv', confirmed: true}\n"
        "  - name: archive\n"
        "    type: outbox\n"
        "    topic: alerts\n"
        "    batch_size: 50\n"
        "    settings: {outbox_dir: /tmp/archive}\n",
    )
    members, archive = load_connectors(path)
    assert members.cls is SubscriberFileSource
    assert members.config.path == tmp_path / "members.csv"  # type: ignore[attr-defined]
    assert (archive.declaration.batch_size, archive.declaration.start_from) == (50, "latest")
    assert str(archive.config.outbox_dir) == "/tmp/archive"  # type: ignore[attr-defined]
    assert isinstance(members.build(), SubscriberFileSource)


def test_every_problem_of_a_file_is_named_by_connector_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "connectors:\n"
        "  - {name: members, type: subscriber-file, topic: case-updates, settings: {path: a.csv}}\n"
        "  - {name: typo, type: subscriber-file, topic: subscriptions,"
        " settings: {path: a.csv, confirmed: true, bacth_size: 5}}\n"
        "  - {name: pigeon, type: carrier-pigeon, topic: alerts}\n"
        "  - {name: secret, type: subscriber-file, topic: subscriptions,"
        " settings: {path: '${NOT_SET_ANYWHERE_42}', confirmed: true}}\n"
        "  - {name: archive, type: outbox, topic: nowhere}\n"
        "  - {name: late, type: subscriber-file, topic: subscriptions,"
        " settings: {path: a.csv, confirmed: maybe}}\n",
    )
    found = problems(path)
    assert any(
        p.startswith("connectors[0] (members).topic: a subscriber-file source writes to subscriptions")
        for p in found
    )
    assert "connectors[0] (members).settings.confirmed: Field required" in found
    assert any(
        p.startswith("connectors[1] (typo).settings.bacth_size: not a setting of subscriber-file")
        for p in found
    )
    assert any(
        p.startswith("connectors[2] (pigeon).type: no connector named 'carrier-pigeon'") for p in found
    )
    assert (
        "connectors[3] (secret).settings.path: environment variable NOT_SET_ANYWHERE_42 is not set" in found
    )
    assert any(p.startswith("connectors[4] (archive).topic: unknown topic 'nowhere'") for p in found)
    assert any(p.startswith("connectors[5] (late).settings.confirmed:") for p in found)
    assert len(found) == 7


def test_the_file_itself_must_be_readable_parseable_and_have_unique_names(tmp_path: Path) -> None:
    assert problems(tmp_path / "missing.yaml")[0].startswith("cannot read it")
    assert problems(write(tmp_path, "connectors: [", "broken.yaml"))[0].startswith("not valid YAML")
    assert problems(write(tmp_path, "{", "broken.json"))[0].startswith("not valid JSON")
    twice = write(
        tmp_path,
        "connectors:\n"
        "  - {name: a, type: outbox, topic: alerts}\n"
        "  - {name: a, type: outbox, topic: alerts}\n",
        "twice.yaml",
    )
    assert "repeated: a" in problems(twice)[0]
    named = write(
        tmp_path, "connectors:\n  - {name: Not OK, type: outbox, topic: alerts, colour: red}\n", "n.yaml"
    )
    found = problems(named)
    assert any(p.startswith("connectors[0].name: String should match pattern") for p in found)
    assert any(p.startswith("connectors[0].colour: Extra inputs are not permitted") for p in found)


def test_a_sink_may_only_be_declared_on_a_topic_of_the_records_it_takes(tmp_path: Path) -> None:
    path = write(tmp_path, "connectors:\n  - {name: mail, type: outbox, topic: case-updates}\n")
    [problem] = problems(path)
    assert (
        problem
        == "connectors[0] (mail).topic: a outbox sink takes Alert records, and case-updates holds CaseUpdate"
    )


def test_settings_are_described_from_the_config_model_and_its_field_docstrings() -> None:
    class Example(ConnectorConfig):
        url: str
        """Where to send."""
        retries: int = 3
        """How often."""

    assert describe_config(Example) == [
        {"name": "url", "type": "str", "required": True, "default": None, "description": "Where to send."},
        {"name": "retries", "type": "int", "required": False, "default": 3, "description": "How often."},
    ]
