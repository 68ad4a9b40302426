"""case-fanout × subscriber shard → alerts: one alert per matching subscriber."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import faust
import structlog
from pydantic import ValidationError

from schemas import Alert, CaseUpdate, alert_id_for

from .metrics import PipelineMetrics
from .records import DeadLetters, RawEvent, read_model
from .shards import SubscriberShards

__all__ = ["Matcher"]

log = structlog.get_logger(__name__)


class Matcher:
    """Matches each fanned-out update against the shard of its partition.

    Alerts go to the same partition number on the alerts topic, so the subscriber's
    alerts stay with the worker that owns the subscriber. Every alert is acknowledged by
    the broker before the update's offset can be committed.
    """

    stage = "match"

    def __init__(
        self,
        *,
        shards: SubscriberShards,
        alerts_topic: faust.TopicT,
        dead_letters: DeadLetters,
        metrics: PipelineMetrics,
    ) -> None:
        self._metrics = metrics
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
        pending = []
        for subscription, reason in shard.match(public):
            alert = Alert(
                alert_id=alert_id_for(update.event_id, subscription.subscriber_id),
                event_id=update.event_id,
                subscriber_id=subscription.subscriber_id,
                email=subscription.email,
                name=subscription.name,
                language=subscription.language,
                case=public,
                reason=reason,
                created_at=now,
            )
            pending.append(
                await self._alerts.send(
                    key=subscription.subscriber_id.encode("utf-8"),
                    value=alert.model_dump_json().encode("utf-8"),
                    partition=partition,
                )
            )
        await asyncio.gather(*pending)
        self._metrics.match_seconds.observe(time.perf_counter() - started)
        self._metrics.alerts.inc(len(pending))
        bound.info("case_update.matched", matched=len(pending), shard_size=len(shard))
