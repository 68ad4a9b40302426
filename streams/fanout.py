"""case-updates → case-fanout: validate each update once and copy it to every partition."""

from __future__ import annotations

import asyncio

import faust
import structlog

from schemas import CaseUpdate

from .metrics import PipelineMetrics
from .records import DeadLetters, RawEvent
from .tables import PartitionedTable

__all__ = ["FanOut"]

log = structlog.get_logger(__name__)


class FanOut:
    """Validates case updates, drops replays and copies each update to every partition.

    A replay is an update whose event_id was already seen at a *different* offset: it is
    skipped. The same offset seen again means the worker is re-reading after a crash or
    rebalance, and the fan-out is repeated (its downstream effects are idempotent), so a
    crash between recording the event and fanning it out loses nothing.
    """

    stage = "fanout"

    def __init__(
        self,
        *,
        fanout_topic: faust.TopicT,
        partitions: int,
        seen: PartitionedTable,
        dead_letters: DeadLetters,
        metrics: PipelineMetrics,
    ) -> None:
        self._fanout = fanout_topic
        self._partitions = partitions
        self._seen = seen
        self._dead_letters = dead_letters
        self._metrics = metrics

    async def process(self, event: RawEvent) -> None:
        """Handle one record of case-updates."""
        update = await self._dead_letters.read(CaseUpdate, event, stage=self.stage)
        if update is None:
            self._metrics.case_updates.labels("invalid").inc()
            return
        bound = log.bind(event_id=update.event_id, case_id=update.case_id)
        position = f"{event.message.partition}:{event.message.offset}"
        first_seen = self._seen.get(update.event_id)
        if first_seen is not None and first_seen != position:
            bound.info("case_update.replay_skipped", first_seen=first_seen, position=position)
            self._metrics.case_updates.labels("replay_skipped").inc()
            return
        self._seen[update.event_id] = position
        payload = update.model_dump_json().encode("utf-8")
        key = update.case_id.encode("utf-8")
        pending = [
            await self._fanout.send(key=key, value=payload, partition=p) for p in range(self._partitions)
        ]
        await asyncio.gather(*pending)
        self._metrics.case_updates.labels("fanned_out").inc()
        bound.info("case_update.fanned_out", status=update.status.value, partitions=self._partitions)
