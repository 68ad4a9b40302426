"""alerts → sink → deliveries: hand alerts to the sink in batches, never twice."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import faust
import structlog
from pydantic import ValidationError

from connectors.base import Sink, SinkOutcome
from mobilise.errors import RetryableError
from schemas import Alert, DeliveryEvent, DeliveryOutcome

from .metrics import PipelineMetrics
from .records import DeadLetters, RawEvent, read_model
from .retry import backoff_delay
from .tables import PartitionedTable, on_partition

__all__ = ["Delivery"]

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class Delivery:
    """Delivers batches of alerts through one sink.

    Guarantee: an alert id recorded in the ``sent`` table (changelog-backed, partitioned
    like the alerts) is never handed to the sink again, whatever is replayed. An alert is
    recorded only after the sink accepted it, so the one window for a duplicate is a
    worker dying between the sink's acceptance and the record: at most one batch.
    Retryable failures are retried with backoff up to ``max_attempts``; permanent ones,
    and those that ran out of attempts, go to dead-letters. Nothing is dropped.
    """

    def __init__(
        self,
        *,
        sink: Sink,  # type: ignore[type-arg]  # any sink's config
        sent: PartitionedTable,
        deliveries_topic: faust.TopicT,
        dead_letters: DeadLetters,
        max_attempts: int,
        metrics: PipelineMetrics,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._metrics = metrics
        self._sink = sink
        self._sent = sent
        self._deliveries = deliveries_topic
        self._dead_letters = dead_letters
        self._max_attempts = max_attempts
        self._sleep = sleep
        self.stage = f"delivery:{sink.name}"
        self._ready = False

    async def _setup_once(self) -> None:
        # The sink is opened on first use, inside the worker's event loop, so that a
        # sink's clients belong to the loop that will use them.
        if not self._ready:
            await self._sink.setup()
            self._ready = True

    async def close(self) -> None:
        """Close the sink if it was opened (its connections, its clients)."""
        if self._ready:
            self._ready = False
            await self._sink.close()
            log.info("sink.closed", sink=self._sink.name)

    async def process(self, events: Sequence[RawEvent]) -> None:
        """Deliver one batch of alert records."""
        await self._setup_once()
        batch: dict[str, tuple[Alert, RawEvent]] = {}
        for event in events:
            try:
                alert = read_model(Alert, event.message.value)
            except ValidationError as exc:
                await self._dead_letters.invalid(event, stage=self.stage, exc=exc)
                continue
            if self._sent.get(alert.alert_id) is not None or alert.alert_id in batch:
                await self._record(alert, event, DeliveryOutcome.DUPLICATE, attempts=0)
                continue
            batch[alert.alert_id] = (alert, event)
        attempt = 0
        while batch:
            attempt += 1
            outcomes, retry_after = await self._attempt([a for a, _ in batch.values()])
            retry: dict[str, tuple[Alert, RawEvent]] = {}
            for alert_id, (alert, event) in batch.items():
                outcome = outcomes.get(alert_id)
                if outcome is not None and outcome.accepted:
                    with on_partition(event.message.partition):
                        self._sent[alert_id] = {"at": datetime.now(UTC).isoformat(), "sink": self._sink.name}
                    kind = DeliveryOutcome.DUPLICATE if outcome.duplicate else DeliveryOutcome.ACCEPTED
                    await self._record(alert, event, kind, attempt, outcome.provider_message_id)
                elif outcome is not None and not outcome.retryable:
                    await self._give_up(alert, event, attempt, outcome.error or "rejected by the sink")
                elif attempt >= self._max_attempts:
                    error = outcome.error if outcome else "no outcome from the sink"
                    await self._give_up(alert, event, attempt, f"gave up after {attempt} attempts: {error}")
                else:
                    retry[alert_id] = (alert, event)
                    self._metrics.deliveries.labels(self._sink.name, "failed").inc()
                    if outcome is not None and outcome.retry_after is not None:
                        retry_after = max(retry_after or 0.0, outcome.retry_after)
            batch = retry
            if batch:
                delay = backoff_delay(attempt, retry_after=retry_after)
                log.warning(
                    "delivery.retrying",
                    sink=self._sink.name,
                    alerts=len(batch),
                    attempt=attempt,
                    delay=round(delay, 3),
                )
                await self._sleep(delay)

    async def _attempt(self, alerts: list[Alert]) -> tuple[dict[str, SinkOutcome], float | None]:
        try:
            outcomes = await self._sink.deliver(alerts)
        except RetryableError as exc:
            log.warning("delivery.batch_failed", sink=self._sink.name, alerts=len(alerts), error=str(exc))
            return {}, exc.retry_after
        return {o.alert_id: o for o in outcomes}, None

    async def _give_up(self, alert: Alert, event: RawEvent, attempts: int, error: str) -> None:
        await self._dead_letters.send(event, stage=self.stage, reason=error)
        await self._record(alert, event, DeliveryOutcome.DEAD_LETTERED, attempts, detail=error)

    async def _record(
        self,
        alert: Alert,
        event: RawEvent,
        outcome: DeliveryOutcome,
        attempts: int,
        provider_message_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        delivery = DeliveryEvent(
            alert_id=alert.alert_id,
            event_id=alert.event_id,
            case_id=alert.case.case_id,
            subscriber_id=alert.subscriber_id,
            sink=self._sink.name,
            outcome=outcome,
            provider_message_id=provider_message_id,
            attempts=attempts,
            detail=detail,
            at=datetime.now(UTC),
        )
        self._metrics.deliveries.labels(self._sink.name, outcome.value).inc()
        if outcome is DeliveryOutcome.ACCEPTED:
            latency = (delivery.at - alert.created_at).total_seconds()
            self._metrics.delivery_seconds.labels(self._sink.name).observe(max(0.0, latency))
        await self._deliveries.send(
            key=alert.subscriber_id.encode("utf-8"),
            value=delivery.model_dump_json().encode("utf-8"),
            partition=event.message.partition,
        )
        log.info(
            "alert.delivered" if outcome is not DeliveryOutcome.DEAD_LETTERED else "alert.dead_lettered",
            alert_id=alert.alert_id,
            event_id=alert.event_id,
            case_id=alert.case.case_id,
            subscriber_id=alert.subscriber_id,
            sink=self._sink.name,
            outcome=outcome.value,
            attempts=attempts,
        )
