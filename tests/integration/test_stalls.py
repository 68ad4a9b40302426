"""A partition the client holds records for but nobody takes is seen as stalled, and read again.

This is the shape of the stall the worker guards against (streams/stalls.py): the client
fetched records for a partition that the streams then never asked for, so it never fetched
that partition again while new records piled up on the broker. The test makes it with a real
aiokafka client on the embedded broker, by asking only for the other partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP

from mobilise.broker import EmbeddedBroker
from streams.admin import create_topics
from streams.consumer import fetch_view, refetch_at
from streams.stalls import FetchState, StallWatch
from streams.topics import TopicSpec

STALL = 30.0


async def _states(
    client: AIOKafkaConsumer, tps: list[TP], taken: set[TP], committed: Mapping[TP, int] | None = None
) -> dict[TP, FetchState]:
    """What the worker would see: ``committed`` as its group's commits, nothing with the streams."""
    ends = await client.end_offsets(tps)
    view = await fetch_view(client, tps)
    return {
        tp: FetchState(
            position=position,
            end=ends[tp],
            held=held,
            taken=tp in taken,
            committed=(committed or {}).get(tp),
        )
        for tp, (position, held) in view.items()
    }


async def _put(producer: AIOKafkaProducer, tp: TopicPartition, count: int) -> None:
    # One record a batch: the embedded broker then reports true end offsets.
    for _ in range(count):
        await producer.send_and_wait(tp.topic, b"x", partition=tp.partition)


@contextlib.asynccontextmanager
async def _clients(broker: EmbeddedBroker) -> AsyncIterator[tuple[AIOKafkaProducer, AIOKafkaConsumer]]:
    """A producer, and a consumer that commits nothing, on the embedded broker."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    client = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await producer.start()
    await client.start()
    try:
        yield producer, client
    finally:
        await client.stop()
        await producer.stop()


async def _read_until(client: AIOKafkaConsumer, tp: TopicPartition, count: int) -> list[int]:
    offsets: list[int] = []
    deadline = time.monotonic() + 30
    while len(offsets) < count and time.monotonic() < deadline:
        batch = await client.getmany(tp, timeout_ms=500)
        offsets += [record.offset for record in batch.get(tp, [])]
    return offsets


def test_records_held_and_never_taken_stall_the_partition_and_a_refetch_reads_on(
    broker: EmbeddedBroker,
) -> None:
    topic = f"stalls-{uuid.uuid4().hex[:8]}"
    create_topics([broker.bootstrap], [TopicSpec(name=topic, partitions=2)], 1)
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)

    async def run() -> None:
        async with _clients(broker) as (producer, client):
            client.assign([p0, p1])
            await client.seek_to_beginning(p0, p1)
            await _put(producer, p0, 3)
            await _put(producer, p1, 3)
            # Only p1 is asked for, as faust asks only for the partitions it has active.
            assert await _read_until(client, p1, 3) == [0, 1, 2]
            deadline = time.monotonic() + 30
            while not (await fetch_view(client, [p0]))[p0][1] and time.monotonic() < deadline:
                await client.getmany(p1, timeout_ms=100)
            await _put(producer, p0, 2)
            for _ in range(10):  # p0 is never fetched again: its position stays, its end grows
                await client.getmany(p1, timeout_ms=100)

            watch: StallWatch[TP] = StallWatch(STALL)
            first = await _states(client, [p0, p1], taken={p1})
            assert first[p0] == FetchState(position=0, end=5, held=True, taken=False)
            assert first[p1] == FetchState(position=3, end=3, held=False, taken=True)
            assert watch.observe(0.0, first) == {}
            stalled = watch.observe(STALL, await _states(client, [p0, p1], taken={p1}))
            assert stalled == {p0: 0}

            # Fetched again from where it was: every record once, none skipped.
            await refetch_at(client, stalled)
            assert (await fetch_view(client, [p0]))[p0] == (0, False)
            assert await _read_until(client, p0, 5) == [0, 1, 2, 3, 4]
            after = await _states(client, [p0, p1], taken={p0, p1})
            assert not after[p0].behind
            assert watch.observe(2 * STALL, after) == {}

    asyncio.run(run())


def test_records_read_past_the_commit_and_then_dropped_are_seen_as_lost_and_read_again_from_the_commit(
    broker: EmbeddedBroker,
) -> None:
    # The shape of the loss after a rebalance (streams/stalls.py): the client handed records
    # on, the streams dropped them, and the position is at the end while the commit is not.
    topic = f"lost-{uuid.uuid4().hex[:8]}"
    create_topics([broker.bootstrap], [TopicSpec(name=topic, partitions=1)], 1)
    p0 = TopicPartition(topic, 0)

    async def run() -> None:
        async with _clients(broker) as (producer, client):
            await _put(producer, p0, 5)
            client.assign([p0])
            await client.seek_to_beginning(p0)
            assert await _read_until(client, p0, 5) == [0, 1, 2, 3, 4]  # and dropped

            # Offset 0 was processed and committed; nothing is with the streams.
            watch: StallWatch[TP] = StallWatch(STALL)
            first = await _states(client, [p0], taken={p0}, committed={p0: 1})
            assert first[p0].unaccounted and not first[p0].behind
            assert watch.observe(0.0, first) == {}
            lost = watch.observe(STALL, await _states(client, [p0], taken={p0}, committed={p0: 1}))
            assert lost == {p0: 1}

            await refetch_at(client, lost)
            assert await _read_until(client, p0, 4) == [1, 2, 3, 4]

    asyncio.run(run())
