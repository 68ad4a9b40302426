"""The subscriber shard of each partition: subscriptions → table + inverted index.

The subscriptions topic carries Subscriptions, Suppressions and tombstones for each
subscriber_id. The ``subscribers`` table holds one row per subscriber of the partition:
``{"partition": p, "subscription": <json>}`` for a person being alerted, or
``{"partition": p, "suppressed": <json>}`` when the last word was a Suppression (the
subscription is gone; the row remembers the suppression, without any address, so that an
older subscription replayed or re-imported later does not bring the person back). A
tombstone removes the row whatever it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog
from pydantic import ValidationError

from schemas import Subscription, Suppression, read_subscriptions_record

from .matching import SubscriberIndex
from .records import DeadLetters, RawEvent
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
                # Suppressed subscribers have a row but no subscription: they match nothing.
                if index is not None and "subscription" in row:
                    index.upsert(Subscription.model_validate_json(row["subscription"]))
            self._indexes.update(fresh)
        return sorted(fresh)


class SubscriptionIntake:
    """Applies records of the subscriptions topic to the shard of their partition.

    * A Subscription is indexed, unless a Suppression that occurred at or after its
      ``created_at`` is on record for the person (then it is logged and left out).
    * A Suppression removes the person from the index and the table (keeping only the
      suppression), unless their stored subscription was created after it occurred: a
      bounce reported late must not cancel a fresh re-subscription.
    * A tombstone erases the person, suppression included, and calls each of ``on_erased``
      with their subscriber_id and partition, so other state about them goes too.

    Applying the same record twice gives the same state, so replays are harmless.
    """

    stage = "subscriptions"

    def __init__(
        self,
        *,
        shards: SubscriberShards,
        table: PartitionedTable,
        dead_letters: DeadLetters,
        on_erased: Sequence[Callable[[str, int], object]] = (),
    ) -> None:
        self._shards = shards
        self._table = table
        self._dead_letters = dead_letters
        self._on_erased = tuple(on_erased)

    async def process(self, event: RawEvent) -> None:
        """Upsert, suppress, or erase on a tombstone."""
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
            for erase in self._on_erased:
                erase(key, message.partition)
            log.info("subscription.erased", subscriber_id=key, partition=message.partition)
            return
        try:
            record = read_subscriptions_record(message.value)
        except ValidationError as exc:
            await self._dead_letters.invalid(event, stage=self.stage, exc=exc)
            return
        if key != record.subscriber_id:
            await self._dead_letters.send(
                event,
                stage=self.stage,
                reason=f"record key {key!r} is not the subscriber_id {record.subscriber_id!r}; "
                "produce subscriptions and suppressions keyed by subscriber_id so that erasure finds them",
            )
            return
        if isinstance(record, Suppression):
            self._suppress(shard, record, message.partition)
            return
        subscription = record
        earlier = self._suppression_of(key)
        if earlier is not None and earlier.overrides(subscription):
            log.info(
                "subscription.kept_suppressed",
                subscriber_id=key,
                partition=message.partition,
                reason=earlier.reason.value,
                suppression_id=earlier.event_id,
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

    def _suppression_of(self, subscriber_id: str) -> Suppression | None:
        row = self._table.get(subscriber_id)
        if isinstance(row, dict) and "suppressed" in row:
            return Suppression.model_validate_json(row["suppressed"])
        return None

    def _suppress(self, shard: SubscriberIndex, suppression: Suppression, partition: int) -> None:
        key = suppression.subscriber_id
        stored = shard.get(key)
        if stored is not None and not suppression.overrides(stored):
            log.info(
                "subscription.suppression_ignored",
                subscriber_id=key,
                partition=partition,
                reason=suppression.reason.value,
                suppression_id=suppression.event_id,
                detail="the subscription was created after the suppression occurred",
            )
            return
        earlier = self._suppression_of(key)
        if earlier is not None and earlier.occurred_at > suppression.occurred_at:
            suppression = earlier  # keep the latest on record; the person stays suppressed either way
        shard.remove(key)
        with on_partition(partition):
            self._table[key] = {"partition": partition, "suppressed": suppression.model_dump_json()}
        log.info(
            "subscription.suppressed",
            subscriber_id=key,
            partition=partition,
            reason=suppression.reason.value,
            source=suppression.source,
            suppression_id=suppression.event_id,
            was_subscribed=stored is not None,
        )
