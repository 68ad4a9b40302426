"""The connector runtime against the real broker: batching, retries, dead letters, offsets, checkpoints."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from connectors.base import ConnectorConfig, Sink, SinkOutcome
from connectors.declarations import ConnectorDeclaration, LoadedConnector
from connectors.runtime import ConnectorRuntime
from connectors.source import Source, SourceContext, SourceRecord
from mobilise.broker import EmbeddedBroker
from mobilise.errors import RetryableError
from schemas import CaseUpdate, DeadLetter

from .harness import PipelineHarness, case_update

pytestmark = pytest.mark.integration


class _Nothing(ConnectorConfig):
    """No settings."""


class RecordingSink(Sink[_Nothing, CaseUpdate]):
    """Accepts case updates, except: ``flaky`` cases fail once (retryable), ``refused`` ones always."""

    name = "recording"
    accepts = CaseUpdate
    Config = _Nothing
    flaky: ClassVar[set[str]] = set()
    refused: ClassVar[set[str]] = set()
    attempts: ClassVar[dict[str, int]] = {}
    accepted: ClassVar[list[str]] = []

    async def deliver(self, records: Sequence[CaseUpdate]) -> Sequence[SinkOutcome]:
        outcomes = []
        for record in records:
            seen = self.attempts[record.case_id] = self.attempts.get(record.case_id, 0) + 1
            if record.case_id in self.refused:
                outcomes.append(SinkOutcome(record_id=record.event_id, accepted=False, error="410 gone"))
            elif record.case_id in self.flaky and seen == 1:
                outcomes.append(
                    SinkOutcome(record_id=record.event_id, accepted=False, retryable=True, error="503")
                )
            else:
                self.accepted.append(record.case_id)
                outcomes.append(SinkOutcome(record_id=record.event_id, accepted=True))
        return outcomes


class ListSource(Source[_Nothing]):
    """Emits ``items`` two at a time, checkpointing the index; ``fail_first`` raises once at item 2."""

    name = "list"
    produces = ("case-updates",)
    Config = _Nothing
    items: ClassVar[list[dict[str, Any]]] = []
    fail_first: ClassVar[bool] = False
    runs: ClassVar[int] = 0

    async def run(self, context: SourceContext) -> None:
        type(self).runs += 1
        start = (context.checkpoint or {}).get("next", 0)
        for index in range(start, len(self.items), 2):
            if self.fail_first and type(self).runs == 1 and index >= 2:
                raise RetryableError("the tracker is down")
            batch = [
                SourceRecord(value=v, origin=f"item {index + i}")
                for i, v in enumerate(self.items[index : index + 2])
            ]
            await context.emit(batch, checkpoint={"next": index + 2})


class BrokenSource(Source[_Nothing]):
    """A source with a bug."""

    name = "broken"
    Config = _Nothing

    async def run(self, context: SourceContext) -> None:
        raise ZeroDivisionError("a bug in the connector")


def _loaded(cls: type[Any], name: str, topic: str = "case-updates", **fields: Any) -> LoadedConnector:
    declaration = ConnectorDeclaration(name=name, type=cls.name, topic=topic, max_retry_delay=0.2, **fields)
    return LoadedConnector(declaration, cls, _Nothing())


def _runtime(pipeline: PipelineHarness, *connectors: LoadedConnector) -> ConnectorRuntime:
    async def no_wait(_seconds: float) -> None:
        return None

    return ConnectorRuntime(
        connectors, bootstrap=[pipeline.broker.bootstrap], names=pipeline.names, sleep=no_wait
    )


async def _run_until(runtime: ConnectorRuntime, done: Any, timeout: float = 60) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(runtime.run(stopping))
    deadline = asyncio.get_running_loop().time() + timeout
    while not done() and asyncio.get_running_loop().time() < deadline and not task.done():
        await asyncio.sleep(0.1)
    stopping.set()
    await asyncio.wait_for(task, 30)


def _dead_letters(pipeline: PipelineHarness) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(r.value) for r in pipeline.read_topic(pipeline.names.dead_letters)]


def test_a_sink_gets_each_record_retries_dead_letters_and_resumes_without_repeats(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    pipeline = PipelineHarness(broker, tmp_path)
    RecordingSink.flaky, RecordingSink.refused = {"flaky-1"}, {"gone-1"}
    RecordingSink.attempts, RecordingSink.accepted = {}, []
    cases = ["ok-1", "flaky-1", "gone-1", "ok-2"]
    pipeline.publish(*(case_update(c) for c in cases))
    pipeline.publish_raw(pipeline.names.case_updates, "bad", b'{"case_id": "bad"}')
    sink = _loaded(RecordingSink, "partner", start_from="earliest")

    runtime = _runtime(pipeline, sink)
    asyncio.run(
        _run_until(runtime, lambda: len(RecordingSink.accepted) >= 3 and len(_dead_letters(pipeline)) >= 2)
    )

    assert sorted(RecordingSink.accepted) == ["flaky-1", "ok-1", "ok-2"]
    assert RecordingSink.attempts["flaky-1"] == 2  # retried once, then accepted
    letters = {d.reason: d for d in _dead_letters(pipeline)}
    assert all(d.stage == "connector:partner" for d in letters.values())
    refused = next(d for r, d in letters.items() if "410 gone" in r)
    assert CaseUpdate.model_validate_json(refused.value or b"").case_id == "gone-1"
    invalid = next(d for d in letters.values() if d.errors)
    assert {e.loc for e in invalid.errors} >= {"status", "country"}
    assert runtime.metrics.records.labels("partner", "dead_lettered")._value.get() == 2
    assert runtime.metrics.records.labels("partner", "retried")._value.get() == 1

    # A restart resumes from the committed offsets: nothing is handed over twice.
    RecordingSink.accepted.clear()
    pipeline.publish(case_update("ok-3"))
    asyncio.run(_run_until(_runtime(pipeline, sink), lambda: bool(RecordingSink.accepted)))
    assert RecordingSink.accepted == ["ok-3"]


def test_a_source_is_validated_checkpointed_restarted_and_isolated_from_a_broken_one(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    pipeline = PipelineHarness(broker, tmp_path)
    good = [json.loads(case_update(f"case-{i}").model_dump_json()) for i in range(5)]
    ListSource.items = [*good[:3], {**good[3], "country": "XX"}, good[4]]
    ListSource.fail_first, ListSource.runs = True, 0
    source, broken = _loaded(ListSource, "tracker"), _loaded(BrokenSource, "buggy")

    runtime = _runtime(pipeline, broken, source)
    asyncio.run(_run_until(runtime, lambda: runtime.statuses["tracker"].state == "finished"))

    statuses = runtime.statuses
    assert statuses["buggy"].state == "failed" and "ZeroDivisionError" in (statuses["buggy"].last_error or "")
    assert statuses["tracker"].state == "finished" and statuses["tracker"].restarts == 1
    produced = [
        CaseUpdate.model_validate_json(r.value).case_id
        for r in pipeline.read_topic(pipeline.names.case_updates)
    ]
    # The failure came after the first batch was checkpointed: the restart went on from there.
    assert sorted(produced) == ["case-0", "case-1", "case-2", "case-4"]
    [rejected] = _dead_letters(pipeline)
    assert rejected.stage == "connector:tracker" and rejected.partition == -1
    assert "item 3" in rejected.reason and [e.loc for e in rejected.errors] == ["country"]

    # Run again: the checkpoint says everything is done, so nothing is produced twice.
    again = _runtime(pipeline, source)
    asyncio.run(_run_until(again, lambda: again.statuses["tracker"].state == "finished"))
    assert len(pipeline.read_topic(pipeline.names.case_updates)) == 4
