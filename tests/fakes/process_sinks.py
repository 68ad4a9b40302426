"""A sink for the tests of :mod:`connectors.sink_process`; it runs in a child, so it journals what it did.

What it does with an alert depends on the local part of the address: ``exit`` ends the
process at once (as a crash would), ``busy`` is a temporary failure of the whole batch,
``bug`` an unexpected error, ``slow…`` makes the batch take 0.2 s a person (and stop early
when interrupted); anyone else is accepted.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from connectors.base import Sink, SinkConfig, SinkOutcome
from mobilise.errors import ConfigurationError, RetryableError
from schemas import Alert


class JournalConfig(SinkConfig):
    """Where the sink writes what it did, and whether its setup fails."""

    journal: Path
    """A file: one line per call, ``prepare`` or ``deliver`` and the alert ids, with the pid."""
    fail_setup: bool = False
    """Its setup raises a ConfigurationError."""


class JournalSink(Sink[JournalConfig, Alert]):
    """Accepts alerts (or fails, as the addresses say) and journals every call."""

    name = "journal"
    accepts = Alert
    Config = JournalConfig

    async def setup(self) -> None:
        if self.config.fail_setup:
            raise ConfigurationError("MOBILISE_JOURNAL: the journal is not writable")
        self._write("setup", [])

    async def prepare(self, records: Sequence[Alert]) -> None:
        self._write("prepare", records)

    async def interrupt(self) -> None:
        await super().interrupt()
        self._write("interrupt", [])

    async def deliver(self, records: Sequence[Alert]) -> Sequence[SinkOutcome]:
        self._write("deliver", records)
        kinds = {r.email.partition("@")[0] for r in records}
        if any(kind.startswith("slow") for kind in kinds):
            return [await self._slowly(r) for r in records]
        if "exit" in kinds:
            os._exit(3)
        if "busy" in kinds:
            raise RetryableError("the server is busy", retry_after=2.5)
        if "bug" in kinds:
            raise ValueError("a bug in the sink")
        return [SinkOutcome.accept(r.alert_id, provider_message_id=f"pid-{os.getpid()}") for r in records]

    async def _slowly(self, record: Alert) -> SinkOutcome:
        if self.interrupted:
            return SinkOutcome.interrupted(record.alert_id)
        await asyncio.sleep(0.2)
        return SinkOutcome.accept(record.alert_id)

    def _write(self, call: str, records: Sequence[Alert]) -> None:
        with self.config.journal.open("a", encoding="utf-8") as journal:
            journal.write(" ".join([call, str(os.getpid()), *(r.alert_id for r in records)]) + "\n")
