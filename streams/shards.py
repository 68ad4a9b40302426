"""The subscriber shard of each partition: subscriptions → table + inverted index."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog
from pydantic import ValidationError

from schemas import Subscription

from .matching import SubscriberIndex
from .records import DeadLetters, RawEvent, read_model
from .tables import PartitionedTable, on_partition

__all__ = ["SubscriberShards", "SubscriptionIntake"]

log = structlog.get_logger(__name__)


class SubscriberShards:
    """One SubscriberIndex per partition this worker owns.

    The table ``subscribers`` (changelog-backed) is the durable copy; the indexes are
    rebuilt from it for newly assigned partitions after every rebalance, and dropped for
    partitions that moved away.
    """

    def __init__(self) -> None:
        self._indexes: dict[int, SubscriberIndex] = {}

    @property
    def partitions(self) -> frozenset[int]:
        """Partitions whose shard is loaded here."""
        return frozenset(self._indexes)

    def shard(self, partition: int) -> SubscriberIndex | None:
        """The shard of ``partition``, or None when this worker does not own it."""
        return self._indexes.get(partition)

    def assign(self, partitions: Iterable[int], stored: Iterable[tuple[str, Any]]) -> list[int]:
        """Keep exactly ``partitions``; build the new ones from the table rows ``stored``.

        Returns the partitions that were built.
        """
        wanted = set(partitions)
        for gone in set(self._indexes) - wanted:
            del self._indexes[gone]
        fresh = {p: SubscriberIndex() for p in wanted - set(self._indexes)}
        if fresh:
            for _key, row in stored:
                index = fresh.get(row["partition"]) if isinstance(row, dict) else None
                if index is not None:
                    index.upsert(Subscription.model_validate_json(row["subscription"]))
            self._indexes.update(fresh)
        return sorted(fresh)


class SubscriptionIntake:
    """Applies records of the subscriptions topic to the shard of their partition."""

    stage = "subscriptions"

    def __init__(
        self, *, shards: SubscriberShards, table: PartitionedTable, dead_letters: DeadLetters
    ) -> None:
        self._shards = shards
        self._table = table
        self._dead_letters = dead_letters

    async def process(self, event: RawEvent) -> None:
        """Upsert, or erase on a tombstone."""
        message = event.message
        key = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else None
        shard = self._shards.shard(message.partition)
        if shard is None:
            await self._dead_letters.send(
                event, stage=self.stage, reason=f"partition {message.partition} is not loaded on this worker"
            )
            return
        if message.value is None:
            if not key:
                await self._dead_letters.send(event, stage=self.stage, reason="tombstone without a key")
                return
            shard.remove(key)
            with on_partition(message.partition):
                self._table.pop(key, None)
            log.info("subscription.erased", subscriber_id=key, partition=message.partition)
            return
        try:
            subscription = read_model(Subscription, message.value)
        except ValidationError as exc:
            await self._dead_letters.invalid(event, stage=self.stage, exc=exc)
            return
        if key != subscription.subscriber_id:
            await self._dead_letters.send(
                event,
                stage=self.stage,
                reason=f"record key {key!r} is not the subscriber_id {subscription.subscriber_id!r}; "
                "produce subscriptions keyed by subscriber_id so that erasure finds them",
            )
            return
        shard.upsert(subscription)
        with on_partition(message.partition):
            self._table[key] = {
                "partition": message.partition,
                "subscription": subscription.model_dump_json(),
            }
        log.info(
            "subscription.indexed",
            subscriber_id=key,
            partition=message.partition,
            confirmed=subscription.confirmed,
        )
