"""Producing many small records at once: one record batch per partition, not one send each.

A delivery record is written for every alert. Through ``Topic.send`` each costs about a
hundred microseconds of Python (futures, callbacks, per-message accounting), more than
the alert's whole budget; appended to an aiokafka record batch it costs about one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import faust

__all__ = ["BulkProducer"]


class BulkProducer:
    """Appends records to aiokafka batches of the app's own producer and awaits the acks.

    It uses the producer faust started (so its security settings and its acks=all), after
    faust started it; :meth:`send` returns once the broker acknowledged every record.
    """

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def send(self, topic: str, partition: int, records: Iterable[tuple[bytes | None, bytes]]) -> int:
        """Write ``(key, value)`` pairs to ``topic``'s ``partition``, in order; return how many.

        Raises:
            kafka.errors.KafkaError: the broker did not take a batch (after aiokafka's retries).

        """
        # faust's own accessor for the aiokafka producer of its transport driver.
        producer = self._app.producer._ensure_producer()  # type: ignore[attr-defined]  # aiokafka driver only
        acks = []
        count = 0
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                acks.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a record of {len(value)} bytes does not fit in a batch for {topic}")
            count += 1
        if batch.record_count():
            acks.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*acks)
        return count
