"""The example connector package: installed, found through its entry point, run by the CLI on the broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas import DeadLetter

from .harness import PipelineHarness, case_update

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mobilise-jsonl-sink"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package installed into a directory of its own (the venv stays as it is)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
            "--target", str(target), str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    return target


def _env(pipeline: PipelineHarness, site: Path) -> dict[str, str]:
    return pipeline.env | {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def _mobilise(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mobilise", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_installed_connector_is_listed_checked_and_run_like_a_built_in(
    pipeline: PipelineHarness, installed: Path, tmp_path: Path
) -> None:
    env = _env(pipeline, installed)
    listed = _mobilise(env, "connectors", "list")
    assert listed.returncode == 0, listed.stderr
    assert "jsonl-file  sink ← case-updates" in listed.stdout
    assert "max_line_bytes: int, default 100000" in listed.stdout

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        "connectors:\n  - {name: archive, type: jsonl-file, topic: case-updates, settings: {paht: x}}\n"
    )
    checked = _mobilise(env, "connectors", "check", str(wrong))
    assert checked.returncode == 2
    assert "connectors[0] (archive).settings.paht: not a setting of jsonl-file" in checked.stderr

    archive = tmp_path / "archive.jsonl"
    declared = tmp_path / "connectors.yaml"
    declared.write_text(
        "connectors:\n"
        "  - name: archive\n"
        "    type: jsonl-file\n"
        "    topic: case-updates\n"
        "    start_from: earliest\n"
        f"    settings: {{path: {archive}, max_line_bytes: 2000}}\n"
    )
    assert _mobilise(env, "connectors", "check", str(declared)).returncode == 0

    updates = [case_update(f"case-{i}") for i in range(3)]
    too_long = case_update("case-long", summary={"en": "x" * 3000})
    pipeline.publish(*updates, too_long)
    log = (tmp_path / "connectors.log").open("w")
    running = subprocess.Popen(
        [sys.executable, "-m", "mobilise", "connectors", "run", str(declared)],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        _wait(lambda: len(_lines(archive)) == 3, "three lines in the archive")
        _wait(
            lambda: any(
                DeadLetter.model_validate_json(r.value).stage == "connector:archive"
                for r in pipeline.read_topic(pipeline.names.dead_letters)
            ),
            "the over-long update in dead-letters",
        )
    finally:
        running.send_signal(signal.SIGTERM)
        assert running.wait(timeout=60) == 0
    assert sorted(line["id"] for line in _lines(archive)) == sorted(u.event_id for u in updates)

    # Run again: the group's offsets and the file's ids mean nothing is written twice.
    later = case_update("case-later")
    pipeline.publish(later)
    again = subprocess.Popen(
        [sys.executable, "-m", "mobilise", "connectors", "run", str(declared)],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        _wait(lambda: len(_lines(archive)) == 4, "the later update in the archive")
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=60) == 0
    ids = [line["id"] for line in _lines(archive)]
    assert len(ids) == len(set(ids)) == 4 and ids[-1] == later.event_id
