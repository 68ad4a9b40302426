"""alerts → sink → deliveries: hand alert batches to the sink, never an alert twice."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from connectors.attempts import deliver_with_retries
from connectors.base import Sink
from connectors.sink_process import SinkProcess
from schemas import Alert, AlertBatch, DeliveryOutcome, DeliveryRecords

from .bulk import BulkProducer
from .metrics import PipelineMetrics, observe_many
from .records import DeadLetters, RawEvent
from .reminders import ReminderScreen
from .sent import SentAlerts
from .waves import CancelledWaves, Clock, HeldAlerts

__all__ = ["Delivery", "DeliveryInterrupted"]

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class DeliveryInterrupted(Exception):
    """The worker is stopping while part of a batch waits to be tried again: left to the next worker.

    The alerts the sink took are recorded as sent; the batch's record is not acknowledged, so
    its offset is not committed. Whichever worker reads the partition next reads it again,
    skips those recorded and delivers the rest. Waiting out the retries instead would keep a
    worker whose sink is down from stopping for minutes.
    """


def _report_failure(task: asyncio.Task[None]) -> None:
    # Raised again by the next take(); said here too, in case no record comes after it.
    if task.cancelled() or task.exception() is None:
        return
    if isinstance(task.exception(), DeliveryInterrupted):
        log.info("delivery.interrupted", task=task.get_name(), reason="the worker is stopping")
    else:
        log.error("delivery.failed", task=task.get_name(), error=repr(task.exception()))


@dataclass
class _HeldMessage:
    """Where a held batch came from, for a dead letter of it: the alerts topic, offset unknown."""

    topic: str
    partition: int
    key: Any
    value: Any
    offset: int = -1


@dataclass(frozen=True)
class _Held:
    """A released batch in place of the record it was read from (which was committed)."""

    message: _HeldMessage


@dataclass
class _Part:
    """One alert batch record, the alerts of it to hand to the sink, and what became of them."""

    event: RawEvent | _Held
    batch: AlertBatch
    alerts: list[Alert]
    outcomes: list[tuple[Alert, DeliveryOutcome, int, str | None, str | None]] = field(default_factory=list)
    """(alert, outcome, attempts, provider message id, detail)."""

    @property
    def partition(self) -> int:
        return self.event.message.partition


class Delivery:
    """Delivers alert batches through one sink.

    Guarantee: an alert id recorded in ``sent`` (changelog-backed, partitioned like the
    alerts) is never handed to the sink again, whatever is replayed. An alert is recorded
    only after the sink accepted it, and the record is written after each alert batch,
    before the next one is handed over; so the one window for a duplicate is a worker
    dying between the sink's acceptance and that record: at most one alert batch (which
    the matcher cut to the sink batch size). Retryable failures are retried with backoff up to
    ``max_attempts``; permanent ones, and those that ran out of attempts, go to
    dead-letters, one per alert. Nothing is dropped. The worker's agent uses :meth:`take`,
    which reads the next record while the sink has the current batch (one batch with the
    sink at a time still), and acks each record once its outcomes are recorded.

    A batch whose ``release_at`` is still ahead (a wave) is not handed to the sink: it is
    kept in ``held`` (changelog-backed) and :meth:`release_due`, called by a timer, hands
    it over through the same path once ``clock() >= release_at`` — never early, and never
    twice, as ``sent`` still decides. Its held row is deleted only after its outcomes were
    recorded, so a crash in between releases it again, into ``sent``'s check. A held batch
    of a wave in ``cancelled`` is never sent: each person gets a ``cancelled`` delivery event.

    A held batch (a wave's or a reminder) is screened by ``screen`` before it goes: people
    no longer subscribed, and for a reminder those who acted, who never got the call, or
    whose case was won or closed since, get a ``cancelled`` delivery event saying why.
    """

    def __init__(
        self,
        *,
        sink: Sink,  # type: ignore[type-arg]  # any sink's config
        sent: SentAlerts,
        deliveries_topic: str,
        bulk: BulkProducer,
        dead_letters: DeadLetters,
        max_attempts: int,
        metrics: PipelineMetrics,
        held: HeldAlerts,
        cancelled: CancelledWaves,
        alerts_topic: str,
        screen: ReminderScreen | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._screen = screen
        self._metrics = metrics
        self._held = held
        self._cancelled = cancelled
        self._alerts_topic = alerts_topic
        self._clock = clock
        # The agent and the release timer both deliver; one batch at a time through the sink.
        self._lock = asyncio.Lock()
        self._sink = sink
        self._sent = sent
        self._deliveries = deliveries_topic
        self._bulk = bulk
        self._dead_letters = dead_letters
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._stopping = asyncio.Event()
        self.stage = f"delivery:{sink.name}"
        self._ready = False
        self._opening = asyncio.Lock()
        self._inflight: asyncio.Task[None] | None = None
        self._tails: set[asyncio.Task[None]] = set()
        """Batches whose sent ids are recorded and whose delivery records are being written."""
        self._failed_tail: BaseException | None = None

    async def _setup_once(self) -> None:
        # Inside the worker's event loop, so that a sink's clients belong to the loop that
        # will use them; by :meth:`open` at start, or else on first use.
        async with self._opening:
            if not self._ready:
                await self._sink.setup()
                self._ready = True

    async def open(self) -> None:
        """Open the sink ahead of the first batch, which then goes out without waiting for it.

        A sink that cannot open yet (its server down, its process not starting) is only
        logged: the first batch tries again and, failing, is retried as before.
        """
        try:
            await self._setup_once()
        except Exception as exc:
            log.warning("sink.open_failed", sink=self._sink.name, error=str(exc), retry="on the first batch")
        else:
            log.info("sink.opened", sink=self._sink.name)

    async def _backoff(self, delay: float) -> None:
        """Wait ``delay`` before the next attempt, or until :meth:`close` is called."""
        if not self._stopping.is_set():
            waits = [asyncio.ensure_future(self._sleep(delay)), asyncio.ensure_future(self._stopping.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()

    async def close(self) -> None:
        """Close the sink if it was opened (its connections, its clients), once its batch is recorded.

        The sink is interrupted first (:meth:`~connectors.base.Sink.interrupt`): what it has
        sent of its batch is recorded, and the rest, like a batch waiting to be tried again,
        is left to the next worker (:class:`DeliveryInterrupted`).
        """
        self._stopping.set()
        if self._ready:
            # The batch with the sink comes back once the message in flight is sent, not when
            # all of it is: the rest is left to the next worker, like a batch waiting to retry.
            await self._sink.interrupt()
        with contextlib.suppress(Exception):  # reported by _report_failure; the sink closes anyway
            await self.drain()
        if self._ready:
            self._ready = False
            await self._sink.close()
            log.info("sink.closed", sink=self._sink.name)

    async def process(self, event: RawEvent) -> None:
        """Deliver the alert batch of one record of the alerts topic as one sink batch.

        Or hold it, if its wave's time has not come; or cancel it, if its wave was called off.
        """
        part = await self._prepare(event)
        if part is not None:
            await self._finish(part)
            await self._publish(part)

    async def take(self, event: RawEvent) -> None:
        """:meth:`process` as a pipeline, for an agent that acks by hand: ack ``event`` once done.

        The record is read, checked against ``sent``, made into alerts and given to the
        sink's :meth:`~connectors.base.Sink.prepare` (rendering, encoding) while the
        previous batch is still with the sink; it is handed over only once that batch's
        accepted ids are recorded and the broker has the row, so one batch at most is ever
        with the sink and not recorded (the duplicate window stays one batch). A batch's
        delivery records are written while the next one is with the sink, and its record is
        acked once the broker has them (faust commits an offset only when every record
        before it is acked). A failure of the previous batch, or of its delivery records, is
        raised here, as :meth:`process` would have raised it.
        """
        part = await self._prepare(event)
        if part is not None and part.alerts:
            # Rendering and encoding of this batch overlap the sending of the one before.
            await self._prepare_next(part)
        previous, self._inflight = self._inflight, None
        if previous is not None:
            await previous
        self._raise_failed_tail()
        if part is None:
            event.ack()
            return

        async def publish() -> None:
            await self._publish(part)
            event.ack()

        async def finish() -> None:
            await self._finish(part)
            # The sent ids are recorded: the next batch may go to the sink while this one's
            # delivery records are written and acknowledged.
            tail = asyncio.create_task(publish(), name=f"{self.stage}:{part.batch.batch_id}:records")
            self._tails.add(tail)
            tail.add_done_callback(self._tail_done)

        self._inflight = asyncio.create_task(finish(), name=f"{self.stage}:{part.batch.batch_id}")
        self._inflight.add_done_callback(_report_failure)

    async def _prepare_next(self, part: _Part) -> None:
        if isinstance(self._sink, SinkProcess) and len(part.alerts) == len(part.batch.recipients):
            # Everyone of the record goes: its bytes go to the sink's process as they came.
            await self._sink.prepare(part.alerts, encoded=part.event.message.value)
        else:
            await self._sink.prepare(part.alerts)

    def _tail_done(self, task: asyncio.Task[None]) -> None:
        self._tails.discard(task)
        _report_failure(task)
        if not task.cancelled() and task.exception() is not None and self._failed_tail is None:
            self._failed_tail = task.exception()

    def _raise_failed_tail(self) -> None:
        failed, self._failed_tail = self._failed_tail, None
        if failed is not None:
            raise failed

    async def drain(self) -> None:
        """Wait until the batch :meth:`take` handed over, if any, is recorded, with its delivery records."""
        previous, self._inflight = self._inflight, None
        if previous is not None:
            await previous
        while self._tails:
            await asyncio.gather(*self._tails, return_exceptions=True)
        self._raise_failed_tail()

    async def _prepare(self, event: RawEvent) -> _Part | None:
        """The alerts of ``event`` to hand over; None if it was settled here (invalid, held, cancelled)."""
        await self._setup_once()
        batch = await self._dead_letters.read(AlertBatch, event, stage=self.stage)
        if batch is None:
            return None
        if batch.wave_id is not None and batch.wave_id in self._cancelled:
            async with self._lock:
                cancelled = self._part(event, batch)
                await self._cancel(cancelled)
                await self._publish(cancelled)
            return None
        waiting = batch.release_at is not None and self._clock() < batch.release_at.timestamp()
        # A batch everyone of which is in sent went out already: not held, recorded as duplicates.
        if waiting and batch.release_at and not all(r.alert_id in self._sent for r in batch.recipients):
            held = self._held.hold(batch, event.message.partition)
            log.info(
                "alerts.held" if held else "alerts.held_already",
                batch_id=batch.batch_id,
                event_id=batch.event_id,
                wave_id=batch.wave_id,
                partition=event.message.partition,
                release_at=batch.release_at.isoformat(),
                alerts=len(batch.recipients),
            )
            return None
        return self._part(event, batch)

    async def _finish(self, part: _Part) -> None:
        """Deliver ``part`` and record its sent ids; its delivery records are the caller's to write."""
        async with self._lock:
            # Read again under the lock: the batch before may have sent one of these since.
            kept = []
            for alert in part.alerts:
                if alert.alert_id in self._sent:
                    part.outcomes.append((alert, DeliveryOutcome.DUPLICATE, 0, None, None))
                else:
                    kept.append(alert)
            part.alerts = kept
            await self._deliver(part)

    async def release_due(self) -> int:
        """Settle the held batches that are due at ``clock()``, or cancelled; return how many.

        Called by the worker's timer. A batch is due only when the clock has reached its
        ``release_at``. Each is delivered (or cancelled) and recorded, then its row deleted.
        """
        due = self._held.due(self._clock(), self._cancelled)
        if not due:
            return 0
        await self._setup_once()
        for partition, batch in due:
            if batch.batch_id not in self._held:
                continue  # the partition moved away, or another pass settled it
            value = batch.model_dump_json().encode("utf-8")
            held = _Held(_HeldMessage(self._alerts_topic, partition, batch.batch_id.encode("utf-8"), value))
            async with self._lock:
                part = self._part(held, batch)
                if batch.wave_id is not None and batch.wave_id in self._cancelled:
                    await self._cancel(part)
                else:
                    log.info(
                        "alerts.released",
                        batch_id=batch.batch_id,
                        wave_id=batch.wave_id,
                        partition=partition,
                        release_at=batch.release_at.isoformat() if batch.release_at else None,
                    )
                    await self._deliver(part)
                await self._publish(part)
                self._held.release(batch.batch_id)
        return len(due)

    async def _cancel(self, part: _Part, detail: str | None = None) -> None:
        """Mark everyone of ``part`` not sent already ``cancelled``; hand nothing to the sink."""
        part.outcomes.extend((alert, DeliveryOutcome.CANCELLED, 0, None, detail) for alert in part.alerts)
        log.info(
            "alerts.cancelled",
            batch_id=part.batch.batch_id,
            wave_id=part.batch.wave_id,
            partition=part.partition,
            alerts=len(part.alerts),
        )
        part.alerts = []
        await self._record_sent(part)

    def _part(self, event: RawEvent | _Held, batch: AlertBatch) -> _Part:
        part = _Part(event=event, batch=batch, alerts=[])
        seen: set[str] = set()
        for alert in batch.alerts():
            if alert.alert_id in self._sent or alert.alert_id in seen:
                part.outcomes.append((alert, DeliveryOutcome.DUPLICATE, 0, None, None))
            else:
                seen.add(alert.alert_id)
                part.alerts.append(alert)
        return part

    def _screened(self, part: _Part) -> str | None:
        """Take the people ``screen`` keeps from ``part`` out of it; the reason when it keeps everyone."""
        batch = part.batch
        if self._screen is None or (batch.release_at is None and not batch.reminder):
            return None
        whole = self._screen.batch_reason(batch, part.partition)
        if whole is not None:
            return whole
        kept = []
        for alert in part.alerts:
            reason = self._screen.person_reason(batch, alert, part.partition)
            if reason is None:
                kept.append(alert)
            else:
                part.outcomes.append((alert, DeliveryOutcome.CANCELLED, 0, None, reason))
        part.alerts = kept
        return None

    async def _deliver(self, part: _Part) -> None:
        """Hand ``part`` to the sink and record its sent ids (the delivery records are :meth:`_publish`'s)."""
        whole = self._screened(part)
        if whole is not None:
            await self._cancel(part, whole)
            return

        def count_retries(records: int) -> None:
            self._metrics.deliveries.labels(self._sink.name, "failed").inc(records)

        settled = await deliver_with_retries(
            self._sink,
            part.alerts,
            max_attempts=self._max_attempts,
            sleep=self._backoff,
            on_retry=count_retries,
            stopping=self._stopping.is_set,
        )
        for done in settled:
            if done.accepted:
                kind = DeliveryOutcome.DUPLICATE if done.duplicate else DeliveryOutcome.ACCEPTED
                part.outcomes.append((done.record, kind, done.attempts, done.provider_message_id, None))
            else:
                part.outcomes.append(
                    (done.record, DeliveryOutcome.DEAD_LETTERED, done.attempts, None, done.error)
                )
        await self._record_sent(part)
        if len(settled) < len(part.alerts):
            # Those the sink took are recorded, so the next worker skips them; the rest it sends.
            # Their delivery records go now: the next worker sees them only as duplicates. (Any
            # that failed for good it tries again: they are not in sent.)
            accepted = [o for o in part.outcomes if o[1] is DeliveryOutcome.ACCEPTED]
            if accepted:
                await self._publish(replace(part, outcomes=accepted))
            raise DeliveryInterrupted(
                f"the worker stopped with {len(part.alerts) - len(settled)} of batch "
                f"{part.batch.batch_id} still to try"
            )

    async def _record_sent(self, part: _Part) -> None:
        """Add the alerts of ``part`` the sink took to ``sent``, and wait until the broker has the row.

        Only then may the next batch go to the sink: a worker dying later replays neither
        batch to anyone recorded, so the duplicate window stays the one batch in flight.
        """
        # Cancelled alerts stay out of sent: nothing was sent, and a replay is cancelled again.
        unsent = (DeliveryOutcome.DEAD_LETTERED, DeliveryOutcome.CANCELLED)
        accepted = [a.alert_id for a, kind, *_ in part.outcomes if kind not in unsent]
        self._sent.record(part.batch.batch_id, part.partition, accepted, self._sink.name, part.batch.event_id)
        await self._sent.durable()

    async def _publish(self, part: _Part) -> None:
        """Write ``part``'s dead letters and delivery events, and wait until the broker has them."""
        for alert, kind, _, _, detail in part.outcomes:
            if kind is DeliveryOutcome.DEAD_LETTERED:
                # One dead letter per person, keyed by the subscriber and holding a batch of
                # just them, so that a replay reaches that person only, on their partition.
                await self._dead_letters.send(
                    part.event,
                    stage=self.stage,
                    reason=detail or "rejected by the sink",
                    key=alert.subscriber_id.encode("utf-8"),
                    value=part.batch.only(frozenset({alert.alert_id})).model_dump_json().encode("utf-8"),
                )
        now = datetime.now(UTC)
        sink = self._sink.name
        encoder = DeliveryRecords(sink, now)
        counts: dict[str, int] = {}
        records = []
        # Bound once: each attribute access of the module's lazy logger binds a new one.
        per_alert = log.bind()
        for alert, kind, attempts, message_id, detail in part.outcomes:
            counts[kind.value] = counts.get(kind.value, 0) + 1
            value = encoder.encode(
                alert_id=alert.alert_id,
                event_id=alert.event_id,
                case_id=alert.case.case_id,
                subscriber_id=alert.subscriber_id,
                outcome=kind,
                provider_message_id=message_id,
                attempts=attempts,
                detail=detail,
            )
            records.append((alert.subscriber_id.encode("utf-8"), value))
            per_alert.debug(
                "alert.delivered" if kind is not DeliveryOutcome.DEAD_LETTERED else "alert.dead_lettered",
                alert_id=alert.alert_id,
                subscriber_id=alert.subscriber_id,
                outcome=kind.value,
                attempts=attempts,
            )
        await self._bulk.send(self._deliveries, part.partition, records)
        for outcome, count in counts.items():
            self._metrics.deliveries.labels(sink, outcome).inc(count)
        latency = max(0.0, (now - part.batch.created_at).total_seconds())
        observe_many(
            self._metrics.delivery_seconds.labels(sink),
            latency,
            counts.get(DeliveryOutcome.ACCEPTED.value, 0),
        )
        log.info(
            "alerts.delivered",
            batch_id=part.batch.batch_id,
            event_id=part.batch.event_id,
            case_id=part.batch.case.case_id,
            partition=part.partition,
            sink=sink,
            alerts=len(part.outcomes),
            attempts=max((o[2] for o in part.outcomes), default=0),
            **counts,
        )
