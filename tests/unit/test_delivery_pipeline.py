"""The delivery stage as a pipeline: the next record is read while the sink has this one, one at a time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from connectors.base import SinkOutcome
from schemas import Alert, AlertBatch, CaseUpdate, MatchReason, Subscription
from streams.alerting import alert_batches

from .world import MemorySink, Partition

CASE = CaseUpdate.model_validate_json(
    json.dumps(
        {
            "case_id": "bd-1",
            "status": "urgent_action",
            "title": {"en": "Fired"},
            "summary": {"en": "Twelve leaders dismissed."},
            "country": "BD",
            "issues": ["union_busting"],
            "occurred_at": "2026-03-01T00:00:00Z",
            "published_by": "p",
        }
    )
).public()


def _people(*emails: str) -> list[tuple[Subscription, MatchReason]]:
    return [
        (
            Subscription.model_validate_json(
                json.dumps(
                    {
                        "email": email,
                        "countries": ["BD"],
                        "interests": ["union_busting"],
                        "confirmed": True,
                        "created_at": "2026-01-01T00:00:00Z",
                    }
                )
            ),
            MatchReason(country="BD"),
        )
        for email in emails
    ]


def _batch(event_id: str, *emails: str) -> AlertBatch:
    (batch,) = alert_batches(
        event_id=event_id,
        partition=0,
        case=CASE,
        created_at=datetime(2026, 3, 1, tzinfo=UTC),
        people=_people(*emails),
        batch_size=100,
    )
    return batch


class _GatedSink(MemorySink):
    """Holds each batch until the test opens the gate; remembers how many it had at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.holding = 0
        self.most_at_once = 0
        self.fail_next = False

    async def deliver(self, records: Sequence[Alert]) -> Sequence[SinkOutcome]:
        self.holding += 1
        self.most_at_once = max(self.most_at_once, self.holding)
        try:
            await self.gate.wait()
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("the sink broke")
            return await super().deliver(records)
        finally:
            self.holding -= 1


class _Event:
    def __init__(self, batch: AlertBatch, offset: int, acked: list[int]) -> None:
        self.message = SimpleNamespace(
            topic="alerts", partition=0, offset=offset, key=b"k", value=batch.model_dump_json().encode()
        )
        self._acked = acked

    def ack(self) -> bool:
        self._acked.append(self.message.offset)
        return True


def _world() -> tuple[Partition, _GatedSink]:
    world = Partition()
    sink = _GatedSink()
    world.delivery._sink = sink
    return world, sink


def test_the_next_record_waits_for_the_one_with_the_sink_and_acks_keep_their_order() -> None:
    world, sink = _world()
    acked: list[int] = []

    async def run() -> None:
        first = _batch("evt-1", "a@example.org", "b@example.org")
        second = _batch("evt-2", "a@example.org")
        await world.delivery.take(_Event(first, 0, acked))  # type: ignore[arg-type]  # message and ack
        await asyncio.sleep(0.01)
        assert sink.holding == 1 and acked == []  # with the sink, not acked
        taking = asyncio.create_task(world.delivery.take(_Event(second, 1, acked)))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        assert (
            not taking.done() and sink.holding == 1
        )  # read, but not handed over before the first is recorded
        sink.gate.set()
        await taking
        await world.delivery.drain()

    asyncio.run(run())
    assert acked == [0, 1] and sink.most_at_once == 1
    assert [a.event_id for a in sink.alerts] == ["evt-1", "evt-1", "evt-2"]


def test_an_alert_sent_by_the_batch_before_is_not_handed_over_again() -> None:
    world, sink = _world()
    acked: list[int] = []
    batch = _batch("evt-1", "a@example.org", "b@example.org")

    async def run() -> None:
        await world.delivery.take(_Event(batch, 0, acked))  # type: ignore[arg-type]
        # The same batch again (a replay) is read while the first is still with the sink.
        taking = asyncio.create_task(world.delivery.take(_Event(batch, 1, acked)))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        sink.gate.set()
        await taking
        await world.delivery.drain()

    asyncio.run(run())
    assert len(sink.delivered) == 2 and acked == [0, 1]
    assert sorted(e.outcome.value for e in world.bulk.events) == [
        "accepted",
        "accepted",
        "duplicate",
        "duplicate",
    ]


def test_a_failure_with_the_sink_is_raised_by_the_next_take_and_that_record_is_not_acked() -> None:
    world, sink = _world()
    acked: list[int] = []

    async def run() -> None:
        sink.fail_next = True
        sink.gate.set()
        await world.delivery.take(_Event(_batch("evt-1", "a@example.org"), 0, acked))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="the sink broke"):
            await world.delivery.take(_Event(_batch("evt-2", "b@example.org"), 1, acked))  # type: ignore[arg-type]

    asyncio.run(run())
    assert acked == []  # neither: the agent stops as it did, and both records are read again
