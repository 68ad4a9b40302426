"""Source checkpoints, kept in Kafka: a compacted topic, one record per connector name.

The latest record of a name is where that source is up to; a tombstone resets it, so the
source starts from the beginning on its next run (``mobilise connectors reset NAME``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from mobilise.errors import RetryableError

__all__ = ["CheckpointStore"]

Checkpoint = dict[str, Any]

# Tansu's end offset can lag the last records of a batch just written; one more short
# fetch after reaching it picks those up, so a fresh checkpoint is not missed.
_STRAGGLER_WAIT_MS = 300


class CheckpointStore:
    """Reads and writes checkpoints on ``topic`` (partition 0).

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: The checkpoints topic (``connector-checkpoints`` with the deployment's prefix).
        client_options: Security options for aiokafka clients.

    """

    def __init__(
        self, bootstrap: list[str], topic: str, client_options: dict[str, Any] | None = None
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._options = client_options or {}

    async def read_all(self) -> dict[str, Checkpoint]:
        """Every connector's latest checkpoint (reset ones left out).

        Raises:
            RetryableError: the broker cannot be reached.

        """
        partition = TopicPartition(self._topic, 0)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, group_id=None, **self._options
        )
        latest: dict[str, Checkpoint | None] = {}
        try:
            await consumer.start()
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            end = (await consumer.end_offsets([partition]))[partition]
            while True:
                reaching = await consumer.position(partition) >= end
                batch = await consumer.getmany(partition, timeout_ms=_STRAGGLER_WAIT_MS if reaching else 2000)
                for message in batch.get(partition, []):
                    if message.key is None:
                        continue
                    name = message.key.decode("utf-8")
                    latest[name] = json.loads(message.value) if message.value is not None else None
                if reaching and not batch:
                    break
        except KafkaError as exc:
            raise RetryableError(f"cannot read connector checkpoints from {self._topic}: {exc}") from exc
        finally:
            await consumer.stop()
        return {name: checkpoint for name, checkpoint in latest.items() if checkpoint is not None}

    async def read(self, name: str) -> Checkpoint | None:
        """``name``'s latest checkpoint, or None when it has none (or it was reset)."""
        return (await self.read_all()).get(name)

    async def write(self, producer: AIOKafkaProducer, name: str, checkpoint: Checkpoint | None) -> None:
        """Store ``checkpoint`` for ``name`` (None: reset it) and wait for the broker's ack.

        Raises:
            RetryableError: the broker did not acknowledge it.

        """
        value = None if checkpoint is None else json.dumps(checkpoint, sort_keys=True).encode("utf-8")
        try:
            sent = await producer.send(self._topic, key=name.encode("utf-8"), value=value, partition=0)
            await asyncio.wait_for(sent, timeout=30)
        except (KafkaError, TimeoutError) as exc:
            raise RetryableError(f"cannot store the checkpoint of connector {name}: {exc}") from exc
