"""JsonLinesSink: appends the records of a topic to a JSON Lines file, once per record id.

The example connector of docs/writing-a-connector.md: a complete sink in one module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from pydantic import BaseModel, Field

from connectors.base import ConnectorConfig, Sink, SinkOutcome
from mobilise.errors import RetryableError

__all__ = ["JsonLinesConfig", "JsonLinesSink"]


class JsonLinesConfig(ConnectorConfig):
    """Settings of the JSON Lines sink (the ``settings:`` of its entry in a connectors file)."""

    path: Path
    """File the records are appended to, one JSON object a line; created if missing."""
    max_line_bytes: int = Field(default=100_000, ge=100)
    """A record longer than this is refused (it goes to dead-letters), not written."""


class JsonLinesSink(Sink[JsonLinesConfig, BaseModel]):
    """Appends each record as ``{"id": …, "type": …, "record": {…}}`` to a JSON Lines file.

    Delivery guarantee: exactly once per record id in the file. The ids already in the file
    are read at setup, and a record whose id is among them is reported a duplicate instead
    of being written again; a batch is flushed to disk before it is reported written.
    """

    name = "jsonl-file"
    Config = JsonLinesConfig
    # accepts stays BaseModel: this sink can be declared on any topic.

    async def setup(self) -> None:
        """Read the ids already written and open the file for appending."""
        self.config.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = None
        self._open()

    def _open(self) -> None:
        path = self.config.path
        self._written: set[str] = set()
        if path.exists():
            with path.open(encoding="utf-8") as existing:
                # A line cut short by a crash is not valid JSON: it never counts as written.
                for line in existing:
                    try:
                        self._written.add(json.loads(line)["id"])
                    except (ValueError, KeyError, TypeError):
                        continue
        self._file = path.open("a", encoding="utf-8")

    async def deliver(self, records: Sequence[BaseModel]) -> Sequence[SinkOutcome]:
        """Write the records not in the file yet; refuse those too long for a line."""
        assert self._file is not None, "setup() opens the file"
        outcomes = []
        written_now = []
        try:
            for record in records:
                record_id = self.record_id(record)
                if record_id in self._written:
                    outcomes.append(SinkOutcome(record_id=record_id, accepted=True, duplicate=True))
                    continue
                kind, fields = type(record).__name__, record.model_dump(mode="json")
                entry = {"id": record_id, "type": kind, "record": fields}
                line = json.dumps(entry, ensure_ascii=False)
                if len(line.encode("utf-8")) > self.config.max_line_bytes:
                    # Permanent: the same record will never fit; the framework dead-letters it.
                    error = f"record is {len(line)} bytes, over max_line_bytes={self.config.max_line_bytes}"
                    outcomes.append(SinkOutcome(record_id=record_id, accepted=False, error=error))
                    continue
                self._file.write(line + "\n")
                written_now.append(record_id)
                outcomes.append(SinkOutcome(record_id=record_id, accepted=True))
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            # Temporary (a full disk, say): the framework retries the batch with backoff.
            # Reading the file again tells the retry which lines did reach it.
            self._file.close()
            self._open()
            raise RetryableError(f"cannot append to {self.config.path}: {exc.strerror}") from exc
        self._written.update(written_now)
        return outcomes

    async def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
