"""Publishing records from the web process, acknowledged by Kafka before anyone is answered.

aiokafka rather than kafka-python (``streams/admin.py``) in a thread: the web process is
asyncio (aiohttp), and aiokafka is the client the workers already use through Faust, native
to that loop. A request awaits its acknowledgements without holding a thread, concurrent
requests share one producer's batches, and the partitioner is Kafka's murmur2 like
kafka-python's and Java's, so a record keyed by a subscriber id lands on the partition of
that subscriber's shard whichever client wrote it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError

from mobilise.errors import RetryableError

__all__ = ["KafkaPublisher", "Record"]

log = structlog.get_logger(__name__)

Record = tuple[str, str, bytes | None]
"""(topic, key, value) of one record to publish; a value of None is a tombstone (the key is erased)."""


class KafkaPublisher:
    """One aiokafka producer (acks=all), started lazily and re-created after a failure.

    Args:
        bootstrap: ``host:port`` of the brokers.
        options: TLS and SASL options of the client
            (:meth:`mobilise.kafka_security.KafkaSecurity.client_options`).
        timeout: Seconds to wait for the acknowledgements of one :meth:`publish`.

    """

    def __init__(
        self, bootstrap: list[str], *, options: Mapping[str, Any] | None = None, timeout: float = 30.0
    ) -> None:
        self._bootstrap = bootstrap
        self._options = dict(options or {})
        self._timeout = timeout
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """Whether the producer is started (it may still fail on the next send)."""
        return self._producer is not None

    async def start(self) -> bool:
        """Connect now if possible; False (logged) if Kafka cannot be reached yet.

        The web process serves anyway: pages that need Kafka answer 503 until it is
        reachable, and SendGrid retries what it could not deliver.
        """
        try:
            await self._ensure()
        except RetryableError as exc:
            log.warning("web.kafka_unavailable", error=str(exc))
            return False
        return True

    async def _ensure(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is not None:
                return self._producer
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                client_id="mobilise-web",
                acks="all",
                # Tansu and many clusters refuse InitProducerId; effects are idempotent by id anyway.
                enable_idempotence=False,
                linger_ms=5,
                request_timeout_ms=int(self._timeout * 1000),
                **self._options,
            )
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                where = ",".join(self._bootstrap)
                raise RetryableError(
                    f"cannot reach Kafka at {where}: {exc!r}; is KAFKA_BOOTSTRAP_SERVERS right?"
                ) from exc
            self._producer = producer
            log.info("web.kafka_connected", bootstrap=",".join(self._bootstrap))
            return producer

    async def publish(self, records: Sequence[Record]) -> None:
        """Send every record and return once Kafka acknowledged them all (acks=all).

        Raises:
            RetryableError: Kafka is unreachable, refused a record or did not answer in
                time; some records may have been written (their ids make a retry harmless).

        """
        if records:
            await self._send([(topic, key, value, None) for topic, key, value in records])

    async def publish_everywhere(self, topic: str, key: str, value: bytes) -> int:
        """Send one copy of ``key``/``value`` to every partition of ``topic``; return how many.

        For facts every worker must see for the partitions it owns (a wave cancellation):
        the key alone would put them all on one partition. Returns once Kafka acknowledged
        every copy.

        Raises:
            RetryableError: Kafka is unreachable, does not know ``topic``, refused a copy or
                did not answer in time; some copies may have been written.

        """
        producer = await self._ensure()
        try:
            partitions = await asyncio.wait_for(producer.partitions_for(topic), timeout=self._timeout)
        except UnknownTopicOrPartitionError as exc:
            raise RetryableError(
                f"Kafka does not know the topic {topic}; create it with `mobilise topics create`"
            ) from exc
        except (KafkaError, TimeoutError) as exc:
            await self._drop()
            raise RetryableError(f"Kafka did not say which partitions {topic} has: {exc!r}") from exc
        await self._send([(topic, key, value, partition) for partition in sorted(partitions)])
        return len(partitions)

    async def _send(self, records: Sequence[tuple[str, str, bytes | None, int | None]]) -> None:
        """Send ``(topic, key, value, partition)`` records (partition None: by key) and await every ack."""
        producer = await self._ensure()
        try:
            futures = [
                await producer.send(topic, key=key.encode(), value=value, partition=partition)
                for topic, key, value, partition in records
            ]
            await asyncio.wait_for(asyncio.gather(*futures), timeout=self._timeout)
        except (KafkaError, TimeoutError) as exc:
            await self._drop()
            raise RetryableError(f"Kafka did not acknowledge {len(records)} record(s): {exc!r}") from exc

    async def _drop(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError):  # it is being replaced anyway
                await producer.stop()

    async def close(self) -> None:
        """Flush and stop the producer."""
        await self._drop()
