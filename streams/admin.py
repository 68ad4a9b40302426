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

__all__ = ["create_topics", "publish"]

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
