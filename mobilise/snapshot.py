"""Bounded reads of topics as they stand now, for the operator's commands (kafka-python).

The operator's commands (``mobilise status``, ``mobilise dead-letters …``) read topics
without a consumer group: partitions are assigned by hand (a kafka-python group consumer
does not finish joining on the embedded broker), nothing is committed, and a read stops
at the end offsets captured when it began, so it always terminates even while workers
keep writing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from .errors import ConfigurationError, RetryableError

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "READ_TIMEOUT_SECONDS",
    "StoredRecord",
    "TopicOffsets",
    "admin_client",
    "consumer",
    "producer",
    "read_topic",
    "stored_record",
    "topic_offsets",
    "unreachable",
]

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_SECONDS = 10.0
"""How long a command tries to reach the brokers before it says it cannot."""
READ_TIMEOUT_SECONDS = 60.0
"""Longest a bounded read may take before it gives up rather than print half a topic."""
_OFFSET_ATTEMPTS = 3


@dataclass(frozen=True)
class StoredRecord:
    """One record as it is stored on a topic: position, time, key, value and headers."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime
    """The record's timestamp (producer's create time on this pipeline's topics)."""
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class TopicOffsets:
    """The first and the next offset of every partition of a topic, read at one moment."""

    topic: str
    beginning: dict[int, int]
    """Partition → earliest offset still stored."""
    end: dict[int, int]
    """Partition → the high watermark: the offset the next record will get on Apache Kafka.

    Tansu reports the base offset of the partition's last record batch + 1 instead, which
    is lower when that batch holds several records.
    """

    @property
    def partitions(self) -> list[int]:
        """The partition numbers, in order."""
        return sorted(self.end)

    @property
    def stored(self) -> int:
        """Records between the beginning and the end offsets, over all partitions.

        On a compacted topic this is an upper bound: compaction leaves gaps.
        """
        return sum(self.end[p] - self.beginning.get(p, 0) for p in self.end)


def unreachable(bootstrap: Sequence[str], exc: Exception) -> ConfigurationError:
    """The error for brokers that cannot be reached, naming the variable to check."""
    return ConfigurationError(
        f"cannot reach Kafka at {','.join(bootstrap)} ({type(exc).__name__}: {exc}); check that "
        "KAFKA_BOOTSTRAP_SERVERS names running brokers as host:port (`mobilise dev` prints the "
        "address of its embedded broker)"
    )


def _bootstrap_failed(exc: KafkaError) -> bool:
    # kafka-python 3 raises KafkaTimeoutError("Unable to bootstrap from ...") when no
    # broker answers within bootstrap_timeout_ms; older versions raised NoBrokersAvailable.
    return (
        isinstance(exc, KafkaConnectionError)
        or (isinstance(exc, KafkaTimeoutError) and "bootstrap" in str(exc).lower())
        or type(exc).__name__ == "NoBrokersAvailable"
    )


def _client_options(timeout: float) -> dict[str, Any]:
    return {"bootstrap_timeout_ms": int(timeout * 1000), "client_id": "mobilise-cli"}


@contextmanager
def consumer(bootstrap: Sequence[str], *, timeout: float = CONNECT_TIMEOUT_SECONDS) -> Iterator[Any]:
    """A kafka-python consumer without a group (manual assignment, no commits); closed on exit.

    Raises:
        ConfigurationError: no broker in ``bootstrap`` answered within ``timeout`` seconds.

    """
    try:
        client = KafkaConsumer(
            bootstrap_servers=list(bootstrap), enable_auto_commit=False, **_client_options(timeout)
        )
    except KafkaError as exc:
        if _bootstrap_failed(exc):
            raise unreachable(bootstrap, exc) from exc
        raise
    try:
        yield client
    finally:
        client.close()


@contextmanager
def producer(bootstrap: Sequence[str], *, timeout: float = CONNECT_TIMEOUT_SECONDS) -> Iterator[Any]:
    """A kafka-python producer that waits for every replica (``acks=all``) and keeps order; closed on exit.

    Raises:
        ConfigurationError: no broker in ``bootstrap`` answered within ``timeout`` seconds.

    """
    try:
        client = KafkaProducer(
            bootstrap_servers=list(bootstrap),
            acks="all",
            retries=5,
            # One request in flight: a retried send cannot overtake the next, so records of a
            # key keep their order.
            max_in_flight_requests_per_connection=1,
            **_client_options(timeout),
        )
    except KafkaError as exc:
        if _bootstrap_failed(exc):
            raise unreachable(bootstrap, exc) from exc
        raise
    try:
        yield client
    finally:
        client.close()


@contextmanager
def admin_client(
    bootstrap: Sequence[str],
    *,
    timeout: float = CONNECT_TIMEOUT_SECONDS,
    client_class: type[Any] = KafkaAdminClient,
) -> Iterator[Any]:
    """A kafka-python admin client (``client_class``, a KafkaAdminClient), closed on exit.

    Raises:
        ConfigurationError: no broker in ``bootstrap`` answered within ``timeout`` seconds.

    """
    try:
        client = client_class(
            bootstrap_servers=list(bootstrap),
            request_timeout_ms=int(timeout * 1000),
            **_client_options(timeout),
        )
    except KafkaError as exc:
        if _bootstrap_failed(exc):
            raise unreachable(bootstrap, exc) from exc
        raise
    try:
        yield client
    finally:
        client.close()


def topic_offsets(client: Any, topic: str) -> TopicOffsets | None:
    """The beginning and end offsets of every partition of ``topic``; None if it does not exist.

    Raises:
        RetryableError: the broker did not answer in time, or not with every partition.

    """
    for attempt in range(1, _OFFSET_ATTEMPTS + 1):
        try:
            # partitions_for_topic also puts the topic into the client's metadata, without
            # which kafka-python 3.0 leaves its partitions out of the offsets request (KeyError).
            partitions = client.partitions_for_topic(topic)
            if not partitions:
                return None
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            beginning = client.beginning_offsets(tps)
            end = client.end_offsets(tps)
            break
        except (KafkaError, KeyError) as exc:
            if attempt == _OFFSET_ATTEMPTS:
                raise RetryableError(
                    f"the broker did not report the offsets of {topic} ({type(exc).__name__}: {exc}); "
                    "try again, and check that KAFKA_BOOTSTRAP_SERVERS names running brokers"
                ) from exc
            time.sleep(0.2 * attempt)
    return TopicOffsets(
        topic=topic,
        beginning={tp.partition: int(beginning[tp]) for tp in tps},
        end={tp.partition: int(end[tp]) for tp in tps},
    )


def read_topic(
    client: Any,
    topic: str,
    *,
    tail: int | None = None,
    start: Mapping[int, int] | None = None,
    timeout: float = READ_TIMEOUT_SECONDS,
) -> list[StoredRecord]:
    """The records of ``topic`` up to the end offsets captured now.

    Args:
        client: A consumer from :func:`consumer`; its assignment is replaced.
        topic: The topic; one that does not exist reads as empty.
        tail: Only the last ``tail`` records of each partition (about: see TopicOffsets.end).
        start: Only these partitions, each from the offset given.
        timeout: Seconds before giving up.

    The read stops once every partition's position reached the end offset captured when
    it began, so it ends even while others write; records in the last batch fetched may
    be newer than that. The result is in partition, then offset order.

    Raises:
        RetryableError: the end offsets were not reached within ``timeout`` seconds, or
            the broker stopped answering.

    """
    offsets = topic_offsets(client, topic)
    if offsets is None:
        return []
    chosen = [p for p in offsets.partitions if start is None or p in start]
    starts = {p: offsets.beginning[p] for p in chosen}
    for p in chosen:
        if start is not None:
            # From the last batch at the latest: Tansu's end offset can be that batch's base,
            # and records after ``start`` may be in it.
            starts[p] = max(starts[p], min(start[p], offsets.end[p] - 1))
        if tail is not None:
            starts[p] = max(starts[p], offsets.end[p] - tail)
    wanted = [TopicPartition(topic, p) for p in chosen if starts[p] < offsets.end[p]]
    if not wanted:
        return []
    records: list[StoredRecord] = []
    deadline = time.monotonic() + timeout
    try:
        client.assign(wanted)
        for tp in wanted:
            client.seek(tp, starts[tp.partition])
        while any(client.position(tp) < offsets.end[tp.partition] for tp in wanted):
            if time.monotonic() > deadline:
                raise RetryableError(
                    f"reading {topic} did not reach its end offsets within {timeout:.0f}s; "
                    "is the broker overloaded? Try again"
                )
            for batch in client.poll(timeout_ms=500).values():
                # Kept even past the end offset: Tansu reports the end of a partition as the
                # base offset of its last record batch + 1, so the records after that base,
                # which were stored before the read began, are at or past the reported end.
                records.extend(stored_record(record) for record in batch)
    except KafkaError as exc:
        raise RetryableError(
            f"reading {topic} failed ({type(exc).__name__}: {exc}); try again, and check that "
            "KAFKA_BOOTSTRAP_SERVERS names running brokers"
        ) from exc
    if start is not None:
        records = [r for r in records if r.offset >= start[r.partition]]
    records.sort(key=lambda r: (r.partition, r.offset))
    log.debug("topic.read", topic=topic, records=len(records), tail=tail)
    return records


def stored_record(record: Any) -> StoredRecord:
    """A consumed record (kafka-python's or aiokafka's, which have the same fields) as stored."""
    return StoredRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
        key=record.key,
        value=record.value,
        headers=tuple((name, value or b"") for name, value in (record.headers or ())),
    )
