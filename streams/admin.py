"""Create topics and publish records with kafka-python (CLI side, outside the worker)."""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from mobilise.errors import RetryableError
from mobilise.kafka_security import kafka_security

from .topics import TopicSpec

__all__ = ["create_topics", "publish", "publish_everywhere"]

log = structlog.get_logger(__name__)


def create_topics(bootstrap: list[str], specs: Iterable[TopicSpec], replication_factor: int) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Raises:
        RetryableError: the cluster cannot be reached or refused the request.

    """
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="mobilise-admin",
            request_timeout_ms=15_000,
            **kafka_security().client_options(),
        )
    except KafkaError as exc:
        raise RetryableError(
            f"cannot reach Kafka at {','.join(bootstrap)}: {exc}; is the broker running?"
        ) from exc
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=replication_factor,
                topic_configs=s.configs,
            )
            for s in specs
            if s.name not in existing
        ]
        created = []
        for topic in wanted:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass  # another process created it between list and create
        log.info("topics.created", created=created, existing=sorted(existing & {s.name for s in specs}))
        return created
    except KafkaError as exc:
        raise RetryableError(f"creating topics failed: {exc}") from exc
    finally:
        admin.close()


def _producer(bootstrap: list[str]) -> KafkaProducer:
    try:
        return KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            retries=5,
            linger_ms=5,
            client_id="mobilise-cli",
            **kafka_security().client_options(),
        )
    except KafkaError as exc:
        raise RetryableError(
            f"cannot reach Kafka at {','.join(bootstrap)}: {exc}; is the broker running?"
        ) from exc


def publish_everywhere(bootstrap: list[str], topic: str, key: str, value: bytes) -> int:
    """Send one copy of ``key``/``value`` to every partition of ``topic``; return how many.

    For facts every worker must see for the partitions it owns (a wave cancellation).

    Raises:
        RetryableError: the broker could not be reached, does not know ``topic``, or did
            not acknowledge in time.

    """
    producer = _producer(bootstrap)
    try:
        partitions = producer.partitions_for(topic)
        if not partitions:
            raise RetryableError(f"topic {topic} has no partitions; create it with `mobilise topics create`")
        raw_key = key.encode("utf-8")
        futures = [producer.send(topic, key=raw_key, value=value, partition=p) for p in sorted(partitions)]
        for future in futures:
            future.get(timeout=30)
        return len(futures)
    except KafkaError as exc:
        raise RetryableError(f"publishing to {topic} failed: {exc}") from exc
    finally:
        producer.close()


def publish(bootstrap: list[str], topic: str, records: Iterable[tuple[str, bytes | None]]) -> int:
    """Send ``(key, value)`` records and wait until the broker acknowledged every one.

    Raises:
        RetryableError: the broker could not be reached or did not acknowledge in time.

    """
    producer = _producer(bootstrap)
    try:
        futures = [producer.send(topic, key=key.encode("utf-8"), value=value) for key, value in records]
        for future in futures:
            future.get(timeout=30)
        return len(futures)
    except KafkaError as exc:
        raise RetryableError(f"publishing to {topic} failed: {exc}") from exc
    finally:
        producer.close()
