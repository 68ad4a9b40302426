"""case-fanout × subscriber shard → alerts: every matching subscriber, in batches per language."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import faust
import structlog
from pydantic import ValidationError

from schemas import AlertBatch, CaseUpdate, Recipient, alert_id_for, batch_id_for

from .metrics import PipelineMetrics
from .records import DeadLetters, RawEvent, read_model
from .shards import SubscriberShards

__all__ = ["MAX_RECORD_BYTES", "Matcher", "encode_batch"]

MAX_RECORD_BYTES = 512 * 1024
"""Largest alert batch record written: half of Kafka's default ``message.max.bytes`` and of
faust's largest produce request (1 MB each), whatever the batch size and names."""


def encode_batch(batch: AlertBatch, max_bytes: int = MAX_RECORD_BYTES) -> list[tuple[bytes, bytes]]:
    """The (key, value) records of ``batch``: one, or halves of it until each fits ``max_bytes``.

    Halves are named ``<batch_id>-a`` and ``-b``, so the records stay the same on a re-match.
    """
    value = batch.model_dump_json().encode("utf-8")
    if len(value) <= max_bytes or len(batch.recipients) == 1:
        return [(batch.batch_id.encode("utf-8"), value)]
    half = len(batch.recipients) // 2
    return [
        record
        for suffix, people in (("a", batch.recipients[:half]), ("b", batch.recipients[half:]))
        for record in encode_batch(
            batch.model_copy(update={"batch_id": f"{batch.batch_id}-{suffix}", "recipients": people}),
            max_bytes,
        )
    ]


log = structlog.get_logger(__name__)


class Matcher:
    """Matches each fanned-out update against the shard of its partition.

    Alerts go to the same partition number on the alerts topic, so the subscriber's
    alerts stay with the worker that owns the subscriber. They travel as
    :class:`AlertBatch` records of one language and at most ``batch_size`` people (the
    sink's batch), so a sink gets batches it can send whole (SendGrid: one request per
    batch). Every batch is acknowledged by the broker before the update's offset can be
    committed.
    """

    stage = "match"

    def __init__(
        self,
        *,
        shards: SubscriberShards,
        alerts_topic: faust.TopicT,
        dead_letters: DeadLetters,
        metrics: PipelineMetrics,
        batch_size: int,
    ) -> None:
        self._metrics = metrics
        self._batch_size = batch_size
        self._shards = shards
        self._alerts = alerts_topic
        self._dead_letters = dead_letters

    async def process(self, event: RawEvent) -> None:
        """Handle one record of case-fanout."""
        partition = event.message.partition
        try:
            update = read_model(CaseUpdate, event.message.value)
        except ValidationError as exc:
            await self._dead_letters.invalid(event, stage=self.stage, exc=exc)
            return
        bound = log.bind(event_id=update.event_id, case_id=update.case_id, partition=partition)
        shard = self._shards.shard(partition)
        if shard is None:
            # Co-partitioning guarantees this cannot happen; if it does, keep the
            # update where an operator can replay it rather than match nobody quietly.
            await self._dead_letters.send(
                event, stage=self.stage, reason=f"subscriber shard {partition} is not loaded on this worker"
            )
            return
        started = time.perf_counter()
        public = update.public()
        now = datetime.now(UTC)
        by_language: dict[str, list[Recipient]] = {}
        for subscription, reason in shard.match(public):
            # Values come from a validated subscription and the validated case.
            by_language.setdefault(subscription.language, []).append(
                Recipient.model_construct(
                    alert_id=alert_id_for(update.event_id, subscription.subscriber_id),
                    subscriber_id=subscription.subscriber_id,
                    email=subscription.email,
                    name=subscription.name,
                    reason=reason,
                )
            )
        pending = []
        matched = 0
        size = self._batch_size
        for language, people in sorted(by_language.items()):
            matched += len(people)
            for index, start in enumerate(range(0, len(people), size)):
                batch = AlertBatch.model_construct(
                    schema_version=1,
                    batch_id=batch_id_for(update.event_id, partition, language, index),
                    event_id=update.event_id,
                    language=language,
                    case=public,
                    created_at=now,
                    recipients=tuple(people[start : start + size]),
                )
                for key, value in encode_batch(batch):
                    pending.append(await self._alerts.send(key=key, value=value, partition=partition))
        await asyncio.gather(*pending)
        self._metrics.match_seconds.observe(time.perf_counter() - started)
        self._metrics.alerts.inc(matched)
        bound.info("case_update.matched", matched=matched, batches=len(pending), shard_size=len(shard))
