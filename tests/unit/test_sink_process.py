"""A sink in a process of its own: the same outcomes, the same files, and a dead child is replaced."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from connectors.base import INTERRUPTED, SinkOutcome
from connectors.mime import alert_bytes
from connectors.outbox import OutboxConfig, OutboxSink
from connectors.sink_process import SinkProcess, SinkProcessError, in_a_process
from mobilise.errors import ConfigurationError, RetryableError
from schemas import Alert
from tests.fakes.process_sinks import JournalConfig, JournalSink

from .world import batch_of


def _alerts(event_id: str, *emails: str) -> list[Alert]:
    return batch_of(event_id, *emails).alerts()


def _journal(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines()]


def _journaling(path: Path, **settings: object) -> SinkProcess:
    return in_a_process(
        JournalSink, JournalConfig(journal=path, **settings), log_format="json", log_level="warning"
    )


def test_the_outbox_in_a_process_writes_the_files_it_would_write_itself(tmp_path: Path) -> None:
    alerts = _alerts("evt-1", "a@example.org", "b@example.org", "c@example.org")
    config = OutboxConfig(outbox_dir=tmp_path / "outbox")

    async def run() -> tuple[list[bool], list[bool]]:
        sink = in_a_process(OutboxSink, config, log_format="json", log_level="warning")
        await sink.setup()
        try:
            first = await sink.deliver(alerts)
            again = await sink.deliver(alerts[:1])  # already there: a duplicate, nothing written
        finally:
            await sink.close()
        assert sink.name == "outbox"
        return [o.accepted and not o.duplicate for o in first], [o.duplicate for o in again]

    assert asyncio.run(run()) == ([True, True, True], [True])
    identity = config.identity()
    for alert in alerts:
        assert (tmp_path / "outbox" / f"{alert.alert_id}.eml").read_bytes() == alert_bytes(alert, identity)


def test_a_prepared_batch_is_delivered_without_being_sent_to_the_child_again(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    first = _alerts("evt-1", "a@example.org", "b@example.org")
    second = _alerts("evt-2", "a@example.org")

    async def run() -> int:
        sink = _journaling(journal)
        await sink.setup()
        try:
            await sink.prepare(first)
            outcomes = await sink.deliver(first)
            assert [o.accepted for o in outcomes] == [True, True]
            await sink.prepare(second)  # prepared; another batch goes first, and it waits its turn
            await sink.deliver(first[:1])
            await sink.deliver(second)
            # The record as it was read, handed over as it is.
            third = batch_of("evt-3", "c@example.org")
            await sink.prepare(third.alerts(), encoded=third.model_dump_json(exclude_defaults=True).encode())
            assert [o.accepted for o in await sink.deliver(third.alerts())] == [True]
        finally:
            await sink.close()
        return sink.prepared_taken

    assert asyncio.run(run()) == 3
    calls = [(line[0], line[2:]) for line in _journal(journal)]
    ids = [a.alert_id for a in first]
    assert calls == [
        ("setup", []),
        ("prepare", ids),
        ("deliver", ids),
        ("prepare", [second[0].alert_id]),
        ("deliver", ids[:1]),
        ("deliver", [second[0].alert_id]),
        ("prepare", [batch_of("evt-3", "c@example.org").recipients[0].alert_id]),
        ("deliver", [batch_of("evt-3", "c@example.org").recipients[0].alert_id]),
    ]
    assert len({line[1] for line in _journal(journal)} - {str(os.getpid())}) == 1  # one child, not us


def test_a_child_that_dies_with_a_batch_makes_it_retryable_and_the_next_batch_starts_another(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal"

    async def run() -> SinkProcess:
        sink = _journaling(journal)
        await sink.setup()
        try:
            with pytest.raises(RetryableError, match=r"process ended \(exit code 3\)"):
                await sink.deliver(_alerts("evt-1", "exit@example.org"))
            outcomes = await sink.deliver(_alerts("evt-2", "a@example.org"))
            assert [o.accepted for o in outcomes] == [True]
            # Killed between batches: found dead, replaced, and the batch delivered.
            assert sink.pid is not None
            os.kill(sink.pid, signal.SIGKILL)
            await asyncio.sleep(0.2)
            outcomes = await sink.deliver(_alerts("evt-3", "b@example.org"))
            assert [o.accepted for o in outcomes] == [True]
        finally:
            await sink.close()
        return sink

    sink = asyncio.run(run())
    assert sink.restarts == 2
    pids = [line[1] for line in _journal(journal) if line[0] == "setup"]
    assert len(set(pids)) == 3  # three children, one after another


def test_failures_in_the_child_are_raised_in_the_worker_as_what_they_are(tmp_path: Path) -> None:
    async def run() -> None:
        sink = _journaling(tmp_path / "journal")
        await sink.setup()
        try:
            with pytest.raises(RetryableError, match="the server is busy") as busy:
                await sink.deliver(_alerts("evt-1", "busy@example.org"))
            assert busy.value.retry_after == 2.5
            with pytest.raises(SinkProcessError, match="ValueError: a bug in the sink"):
                await sink.deliver(_alerts("evt-2", "bug@example.org"))
            # The child lives on after either.
            assert [o.accepted for o in await sink.deliver(_alerts("evt-3", "a@example.org"))] == [True]
            assert sink.restarts == 0
        finally:
            await sink.close()

    asyncio.run(run())


def test_a_setup_that_fails_in_the_child_fails_in_the_worker_with_its_message(tmp_path: Path) -> None:
    async def run() -> None:
        sink = _journaling(tmp_path / "journal", fail_setup=True)
        with pytest.raises(ConfigurationError, match="MOBILISE_JOURNAL: the journal is not writable"):
            await sink.setup()
        assert sink.pid is None

    asyncio.run(run())


def test_the_batch_after_next_prepared_first_does_not_take_the_next_ones_place(tmp_path: Path) -> None:
    # The delivery stage prepares the batch after next while the next one waits for the
    # lock: the child must deliver the next one, not the last one it was given.
    journal = tmp_path / "journal"
    one, two, three = (_alerts(f"evt-{n}", f"p{n}@example.org") for n in (1, 2, 3))

    async def run() -> tuple[list[list[str]], int]:
        sink = _journaling(journal)
        await sink.setup()
        try:
            await sink.prepare(one)
            await sink.prepare(two)
            delivered = [[o.record_id for o in await sink.deliver(one)]]
            await sink.prepare(three)
            delivered.append([o.record_id for o in await sink.deliver(two)])
            delivered.append([o.record_id for o in await sink.deliver(three)])
        finally:
            await sink.close()
        return delivered, sink.prepared_taken

    delivered, taken = asyncio.run(run())
    assert delivered == [[one[0].alert_id], [two[0].alert_id], [three[0].alert_id]] and taken == 3
    deliveries = [line[2:] for line in _journal(journal) if line[0] == "deliver"]
    assert deliveries == delivered


def test_an_interrupt_reaches_the_sink_in_the_child_and_its_batch_comes_back_early(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    alerts = _alerts("evt-1", *(f"slow{n}@example.org" for n in range(20)))  # 4 s for the batch

    async def run() -> tuple[list[SinkOutcome], list[SinkOutcome]]:
        sink = _journaling(journal)
        await sink.setup()
        try:
            batch = asyncio.create_task(sink.deliver(alerts))
            for _ in range(200):  # until the child has the batch (bounded)
                if journal.exists() and any(line[0] == "deliver" for line in _journal(journal)):
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            await sink.interrupt()
            first = list(await batch)
            # A batch after the interrupt is not handed to the child at all.
            return first, list(await sink.deliver(_alerts("evt-2", "a@example.org")))
        finally:
            await sink.close()

    outcomes, later = asyncio.run(run())
    assert sorted(o.record_id for o in outcomes) == sorted(a.alert_id for a in alerts)
    accepted = [o for o in outcomes if o.accepted]
    assert 1 <= len(accepted) < len(alerts)
    assert all(o.retryable and o.error == INTERRUPTED for o in outcomes if not o.accepted)
    assert [o.error for o in later] == [INTERRUPTED]
    calls = [line[0] for line in _journal(journal)]
    assert calls == ["setup", "deliver", "interrupt"], calls
