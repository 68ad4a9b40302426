"""Log lines stay whole when a worker and its sink's process write to the same stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_WRITER = """
import sys
from mobilise.logs import configure_logging
import structlog
configure_logging("json", "info")
log = structlog.get_logger("test")
for i in range(3000):
    log.info("line.written", writer=sys.argv[1], n=i, padding="x" * 200)
"""


def test_two_processes_sharing_stdout_write_whole_lines(tmp_path: Path) -> None:
    out = tmp_path / "shared.log"
    # Unbuffered, as in a container: each write goes straight to the shared file.
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    with out.open("wb") as shared:
        writers = [
            subprocess.Popen([sys.executable, "-c", _WRITER, name], stdout=shared, env=env) for name in "ab"
        ]
        for writer in writers:
            assert writer.wait(timeout=60) == 0
    lines = out.read_bytes().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one whole JSON object
    assert len(events) == 6000
    assert sorted(e["n"] for e in events if e["writer"] == "a") == list(range(3000))
