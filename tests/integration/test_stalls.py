"""A partition the client holds records for but nobody takes is seen as stalled, and read again.

This is the shape of the stall the worker guards against (streams/stalls.py): the client
fetched records for a partition that the streams then never asked for, so it never fetched
that partition again while new records piled up on the broker. The test makes it with a real
aiokafka client on the embedded broker, by asking only for the other partition.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP

from mobilise.broker import EmbeddedBroker
from streams.admin import create_topics
from streams.consumer import fetch_view, refetch_at
from streams.stalls import FetchState, StallWatch
from streams.topics import TopicSpec

STALL = 30.0


async def _states(client: AIOKafkaConsumer, tps: list[TP], taken: set[TP]) -> dict[TP, FetchState]:
    ends = await client.end_offsets(tps)
    view = await fetch_view(client, tps)
    return {
        tp: FetchState(position=position, end=ends[tp], held=held, taken=tp in taken)
        for tp, (position, held) in view.items()
    }


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
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        client = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
        )
        await producer.start()
        await client.start()

        async def put(tp: TopicPartition, count: int) -> None:
            for _ in range(count):  # one record a batch: the embedded broker then reports true end offsets
                await producer.send_and_wait(tp.topic, b"x", partition=tp.partition)

        try:
            client.assign([p0, p1])
            await client.seek_to_beginning(p0, p1)
            await put(p0, 3)
            await put(p1, 3)
            # Only p1 is asked for, as faust asks only for the partitions it has active.
            assert await _read_until(client, p1, 3) == [0, 1, 2]
            deadline = time.monotonic() + 30
            while not (await fetch_view(client, [p0]))[p0][1] and time.monotonic() < deadline:
                await client.getmany(p1, timeout_ms=100)
            await put(p0, 2)
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
        finally:
            await client.stop()
            await producer.stop()

    asyncio.run(run())
