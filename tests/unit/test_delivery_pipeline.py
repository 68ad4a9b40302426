"""The delivery stage as a pipeline: the next record is read while the sink has this one, one at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaError

from connectors.base import SinkOutcome
from schemas import Alert, AlertBatch

from .world import MemoryBulk, MemorySink, Partition, batch_of


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
        first = batch_of("evt-1", "a@example.org", "b@example.org")
        second = batch_of("evt-2", "a@example.org")
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
    batch = batch_of("evt-1", "a@example.org", "b@example.org")

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
        await world.delivery.take(_Event(batch_of("evt-1", "a@example.org"), 0, acked))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="the sink broke"):
            await world.delivery.take(_Event(batch_of("evt-2", "b@example.org"), 1, acked))  # type: ignore[arg-type]

    asyncio.run(run())
    assert acked == []  # neither: the agent stops as it did, and both records are read again


class _GatedBulk(MemoryBulk):
    """Holds the delivery records until the test opens the gate (the broker's acknowledgement)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.fail = False

    async def send(self, topic: str, partition: int, records: Any) -> int:
        await self.gate.wait()
        if self.fail:
            raise KafkaError("the broker did not take the batch")
        return await super().send(topic, partition, records)


class _PreparingSink(MemorySink):
    """Remembers what it was asked to prepare, and how many batches it had then."""

    def __init__(self) -> None:
        super().__init__()
        self.prepared: list[tuple[list[str], int]] = []
        self.gate = asyncio.Event()
        self.holding = 0

    async def prepare(self, records: Sequence[Alert]) -> None:
        self.prepared.append(([r.event_id for r in records], self.holding))

    async def deliver(self, records: Sequence[Alert]) -> Sequence[SinkOutcome]:
        self.holding += 1
        try:
            await self.gate.wait()
            return await super().deliver(records)
        finally:
            self.holding -= 1


def test_the_next_batch_is_prepared_while_the_one_before_is_with_the_sink() -> None:
    world = Partition()
    sink = _PreparingSink()
    world.delivery._sink = sink
    acked: list[int] = []

    async def run() -> None:
        await world.delivery.take(_Event(batch_of("evt-1", "a@example.org"), 0, acked))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        taking = asyncio.create_task(
            world.delivery.take(_Event(batch_of("evt-2", "a@example.org", "b@example.org"), 1, acked))  # type: ignore[arg-type]
        )
        await asyncio.sleep(0.01)
        assert sink.prepared[-1] == (["evt-2", "evt-2"], 1)  # prepared with evt-1 still at the sink
        assert sink.delivered == []
        sink.gate.set()
        await taking
        await world.delivery.drain()

    asyncio.run(run())
    assert [event_ids for event_ids, _ in sink.prepared] == [["evt-1"], ["evt-2", "evt-2"]]
    assert [a.event_id for a in sink.alerts] == ["evt-1", "evt-2", "evt-2"] and acked == [0, 1]


def test_the_next_batch_goes_to_the_sink_before_the_delivery_records_are_acknowledged() -> None:
    world, sink = _world()
    bulk = _GatedBulk()
    world.delivery._bulk = bulk
    sink.gate.set()
    acked: list[int] = []

    async def run() -> None:
        await world.delivery.take(_Event(batch_of("evt-1", "a@example.org"), 0, acked))  # type: ignore[arg-type]
        await world.delivery.take(_Event(batch_of("evt-2", "b@example.org"), 1, acked))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        # Both batches went to the sink, one after the other, and both are in sent; neither
        # record is acked while its delivery records wait for the broker.
        assert [a.event_id for a in sink.alerts] == ["evt-1", "evt-2"] and sink.most_at_once == 1
        assert all(a.alert_id in world.delivery._sent for a in sink.alerts)
        assert acked == [] and bulk.events == []
        bulk.gate.set()
        await world.delivery.drain()

    asyncio.run(run())
    assert sorted(acked) == [0, 1]
    assert sorted(e.event_id for e in bulk.events) == ["evt-1", "evt-2"]


def test_delivery_records_the_broker_refused_are_raised_by_the_next_take_and_not_acked() -> None:
    world, sink = _world()
    bulk = _GatedBulk()
    bulk.fail = True
    bulk.gate.set()
    world.delivery._bulk = bulk
    sink.gate.set()
    acked: list[int] = []

    async def run() -> None:
        await world.delivery.take(_Event(batch_of("evt-1", "a@example.org"), 0, acked))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        with pytest.raises(KafkaError, match="did not take"):
            await world.delivery.take(_Event(batch_of("evt-2", "b@example.org"), 1, acked))  # type: ignore[arg-type]

    asyncio.run(run())
    assert acked == []  # the agent stops; the record is read again, and sent keeps it from the sink


class _SlowToOpenSink(MemorySink):
    """Counts its setups; the first ``failures`` of them fail as a server that is down would."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.setups = 0
        self.failures = failures

    async def setup(self) -> None:
        self.setups += 1
        await asyncio.sleep(0.01)
        if self.setups <= self.failures:
            raise ConnectionRefusedError("the mail server is down")


def test_the_sink_opened_at_start_is_opened_once_even_when_a_batch_comes_meanwhile() -> None:
    world = Partition()
    sink = _SlowToOpenSink()
    world.delivery._sink = sink
    acked: list[int] = []

    async def run() -> None:
        opening = asyncio.create_task(world.delivery.open())
        await asyncio.sleep(0)
        await world.delivery.take(_Event(batch_of("evt-1", "a@example.org"), 0, acked))  # type: ignore[arg-type]
        await opening
        await world.delivery.drain()

    asyncio.run(run())
    assert sink.setups == 1
    assert len(sink.delivered) == 1 and acked == [0]


def test_a_sink_that_cannot_open_at_start_is_opened_by_the_first_batch() -> None:
    world = Partition()
    sink = _SlowToOpenSink(failures=1)
    world.delivery._sink = sink
    acked: list[int] = []

    async def run() -> None:
        await world.delivery.open()  # logged, not raised
        assert sink.setups == 1 and sink.delivered == []
        await world.delivery.take(_Event(batch_of("evt-1", "a@example.org"), 0, acked))  # type: ignore[arg-type]
        await world.delivery.drain()

    asyncio.run(run())
    assert sink.setups == 2
    assert len(sink.delivered) == 1 and acked == [0]


class _HalfSink(MemorySink):
    """Takes the alert to a@example.org; the others fail for a temporary reason, every time."""

    async def deliver(self, records: Sequence[Alert]) -> Sequence[SinkOutcome]:
        taken = [r for r in records if r.email == "a@example.org"]
        await super().deliver(taken)
        return [SinkOutcome(record_id=r.alert_id, accepted=True) for r in taken] + [
            SinkOutcome(record_id=r.alert_id, accepted=False, retryable=True, error="451 greylisted")
            for r in records
            if r.email != "a@example.org"
        ]


def test_a_stop_while_part_of_a_batch_waits_for_a_retry_records_what_was_sent_and_acks_nothing() -> None:
    world = Partition()
    half = _HalfSink()
    world.delivery._sink = half
    acked: list[int] = []
    batch = batch_of("evt-1", "a@example.org", "b@example.org")
    ids = {r.email: r.alert_id for r in batch.alerts()}

    async def stop_during_the_backoff() -> None:
        await world.delivery.take(_Event(batch, 0, acked))  # type: ignore[arg-type]
        for _ in range(200):  # until the first attempt is answered (bounded)
            if half.delivered:
                break
            await asyncio.sleep(0.01)
        await world.delivery.close()  # the backoff before the second attempt is cut short

    asyncio.run(stop_during_the_backoff())
    assert half.delivered == [ids["a@example.org"]]  # one attempt, no second
    assert acked == []  # read again by the next worker
    assert ids["a@example.org"] in world.sent and ids["b@example.org"] not in world.sent
    # What the sink took is on the deliveries topic; b@'s fate is the next worker's to record.
    a, b = (r.subscriber_id for r in batch.recipients)
    assert [(e.subscriber_id, e.outcome.value) for e in world.bulk.events] == [(a, "accepted")]

    # The next worker: from the tables, with a sink that takes everything.
    world.restart()
    asyncio.run(world.delivery.process(_Event(batch, 0, acked)))  # type: ignore[arg-type]
    assert world.sink.delivered == [ids["b@example.org"]]  # a@ got one email, not two
    assert sorted((e.subscriber_id, e.outcome.value) for e in world.bulk.events) == sorted(
        [(a, "accepted"), (a, "duplicate"), (b, "accepted")]
    )


class _OneByOneSink(MemorySink):
    """Sends its batch one alert at a time, 50 ms each, and stops starting new ones once interrupted."""

    async def deliver(self, records: Sequence[Alert]) -> Sequence[SinkOutcome]:
        outcomes = []
        for record in records:
            if self.interrupted:
                outcomes.append(SinkOutcome.interrupted(record.alert_id))
                continue
            await asyncio.sleep(0.05)
            outcomes.extend(await super().deliver([record]))
        return outcomes


def test_a_stop_interrupts_the_batch_with_the_sink_and_records_what_it_sent() -> None:
    world = Partition()
    sink = _OneByOneSink()
    world.delivery._sink = sink
    acked: list[int] = []
    batch = batch_of("evt-1", *(f"p{n}@example.org" for n in range(40)))  # 2 s for the whole batch

    async def stop_mid_batch() -> None:
        await world.delivery.take(_Event(batch, 0, acked))  # type: ignore[arg-type]
        for _ in range(200):  # until the sink has sent two (bounded)
            if len(sink.delivered) >= 2:
                break
            await asyncio.sleep(0.01)
        await world.delivery.close()

    asyncio.run(stop_mid_batch())
    assert sink.interrupted
    sent = set(sink.delivered)
    assert 2 <= len(sent) < 10  # the batch came back soon after the stop, not after 2 s
    assert acked == []  # read again by the next worker, which sends the rest
    assert {r.alert_id for r in batch.alerts() if r.alert_id in world.sent} == sent
    assert {(e.alert_id, e.outcome.value) for e in world.bulk.events} == {(a, "accepted") for a in sent}
