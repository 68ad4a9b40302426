"""Run the connectors of a connectors file against Kafka, each isolated from the others.

What every connector gets from here, as Kafka Connect gives its connectors:

* **Sinks**: a consumer group of their own (``mobilise-connector-<name>``), batches of up to
  ``batch_size`` records, the retry loop of :mod:`connectors.attempts`, permanent failures
  to dead-letters with the connector (``stage = connector:<name>``), the error and the
  original record, and offsets committed only after every record of a batch was delivered
  or dead-lettered: at least once.
* **Sources**: validation of what they emit, dead letters for what fails it, and
  checkpoints in Kafka written after the batch they mark (:mod:`connectors.source`).
* **Both**: a temporary failure (:class:`RetryableError`, the broker unreachable) restarts
  the connector after an exponential backoff capped at ``max_retry_delay``; any other error
  stops that connector alone, with its reason in the log, in :attr:`ConnectorRuntime.statuses`
  and in the metrics, while the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel, ValidationError

from mobilise.errors import RetryableError
from streams.records import dead_letter, dead_letter_of, field_errors, summarise
from streams.retry import backoff_delay
from streams.topics import TopicNames

from .attempts import deliver_with_retries
from .base import Sink
from .checkpoints import Checkpoint, CheckpointStore
from .declarations import LoadedConnector
from .metrics import ConnectorMetrics
from .records import SINK_TOPICS, SOURCE_TOPICS, TopicKind, record_key, topic_name
from .source import EmitReport, Rejection, Source, SourceContext, SourceRecord, validate_record

__all__ = ["ConnectorRuntime", "ConnectorStatus"]

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]
State = Literal["starting", "running", "restarting", "finished", "stopped", "failed"]


@dataclass
class ConnectorStatus:
    """How one connector is doing."""

    name: str
    type: str
    kind: Literal["source", "sink"]
    topic: str
    state: State = "starting"
    restarts: int = 0
    last_error: str | None = None


class ConnectorRuntime:
    """Runs ``connectors`` until ``stopping`` is set (or, for sources, until they are done).

    Args:
        connectors: Loaded declarations (:func:`connectors.declarations.load_connectors`).
        bootstrap: Kafka bootstrap servers.
        names: The deployment's topic names.
        metrics: Where to count (a fresh registry when not given).
        client_options: Security options for the aiokafka clients.
        sleep: Waits between attempts of a sink (injected in tests).

    """

    def __init__(
        self,
        connectors: Sequence[LoadedConnector],
        *,
        bootstrap: list[str],
        names: TopicNames,
        metrics: ConnectorMetrics | None = None,
        client_options: dict[str, Any] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._connectors = list(connectors)
        self._bootstrap = bootstrap
        self._names = names
        self.metrics = metrics or ConnectorMetrics()
        self._options = client_options or {}
        self._sleep = sleep
        self._checkpoints = CheckpointStore(bootstrap, names.connector_checkpoints, self._options)
        self._producer: AIOKafkaProducer | None = None
        self.statuses = {
            c.declaration.name: ConnectorStatus(
                name=c.declaration.name,
                type=c.declaration.type,
                kind="source" if issubclass(c.cls, Source) else "sink",
                topic=c.declaration.topic,
            )
            for c in self._connectors
        }

    async def run(self, stopping: asyncio.Event) -> dict[str, ConnectorStatus]:
        """Run every connector; return their statuses once all have ended."""
        tasks = [asyncio.create_task(self._supervise(c, stopping)) for c in self._connectors]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None
        return self.statuses

    async def _producer_ready(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                acks="all",
                linger_ms=5,
                client_id="mobilise-connectors",
                **self._options,
            )
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                raise RetryableError(f"cannot reach Kafka at {','.join(self._bootstrap)}: {exc}") from exc
            self._producer = producer
        return self._producer

    async def _supervise(self, connector: LoadedConnector, stopping: asyncio.Event) -> None:
        declaration = connector.declaration
        status = self.statuses[declaration.name]
        failures = 0
        while not stopping.is_set():
            started = time.monotonic()
            try:
                if status.kind == "source":
                    await self._run_source(connector, stopping)
                    status.state = "finished" if not stopping.is_set() else "stopped"
                else:
                    await self._run_sink(connector, stopping)
                    status.state = "stopped"
                log.info("connector.ended", connector=declaration.name, state=status.state)
                return
            except RetryableError as exc:
                # A run that went well for a while before failing starts the backoff over.
                failures = 1 if time.monotonic() - started > declaration.max_retry_delay else failures + 1
                status.state, status.last_error = "restarting", str(exc)
                status.restarts += 1
                self.metrics.restarts.labels(declaration.name).inc()
                delay = backoff_delay(failures, cap=declaration.max_retry_delay, retry_after=exc.retry_after)
                log.warning(
                    "connector.restarting", connector=declaration.name, error=str(exc), delay=round(delay, 3)
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=delay)
            except Exception as exc:  # one connector's bug must not stop the others
                status.state, status.last_error = "failed", f"{type(exc).__name__}: {exc}"
                log.error(
                    "connector.failed", connector=declaration.name, error=status.last_error, exc_info=True
                )
                return
            finally:
                self.metrics.running.labels(declaration.name).set(0)
        status.state = "stopped"

    # -- sinks -------------------------------------------------------------------------

    async def _run_sink(self, connector: LoadedConnector, stopping: asyncio.Event) -> None:
        declaration = connector.declaration
        kind = SINK_TOPICS[declaration.topic]
        sink = connector.build()
        assert isinstance(sink, Sink)
        consumer = AIOKafkaConsumer(
            topic_name(declaration.topic, self._names),
            bootstrap_servers=self._bootstrap,
            group_id=f"{self._names.prefix}mobilise-connector-{declaration.name}",
            client_id=f"mobilise-connector-{declaration.name}",
            enable_auto_commit=False,
            auto_offset_reset=declaration.start_from,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            rebalance_timeout_ms=10_000,
            **self._options,
        )
        await sink.setup()
        try:
            try:
                await consumer.start()
            except KafkaError as exc:
                raise RetryableError(f"cannot reach Kafka at {','.join(self._bootstrap)}: {exc}") from exc
            self._running(declaration.name)
            while not stopping.is_set():
                try:
                    batches = await consumer.getmany(timeout_ms=500, max_records=declaration.batch_size)
                    for partition, messages in batches.items():
                        await self._deliver(connector, sink, kind, messages)
                        await consumer.commit({partition: messages[-1].offset + 1})
                    await self._record_lag(declaration.name, consumer)
                except KafkaError as exc:
                    raise RetryableError(f"Kafka failed under connector {declaration.name}: {exc}") from exc
        finally:
            await consumer.stop()
            await sink.close()

    async def _deliver(
        self,
        connector: LoadedConnector,
        sink: Sink[Any, Any],
        kind: TopicKind,
        messages: list[ConsumerRecord[bytes, bytes]],
    ) -> None:
        name = connector.declaration.name
        stage = f"connector:{name}"
        held: dict[str, tuple[BaseModel, ConsumerRecord[bytes, bytes]]] = {}
        for message in messages:
            try:
                models = kind.read(message.value)
            except ValidationError as exc:
                await self._dead_letter(stage, message, summarise(exc), field_errors(exc))
                continue
            for model in models:
                # The same record twice in a batch (a replay) is delivered once.
                held.setdefault(sink.record_id(model), (model, message))
        self.metrics.count(name, "in", len(held))
        settled = await deliver_with_retries(
            sink,
            [model for model, _ in held.values()],
            max_attempts=connector.declaration.max_attempts,
            max_delay=connector.declaration.max_retry_delay,
            sleep=self._sleep,
            on_retry=lambda records: self.metrics.count(name, "retried", records),
        )
        for done in settled:
            if done.accepted:
                self.metrics.count(name, "out")
                continue
            model, message = held[sink.record_id(done.record)]
            key, value = message.key, message.value
            if kind.isolate is not None:
                key, value = kind.isolate(key, value, model)
            await self._dead_letter(stage, message, done.error or "rejected by the sink", (), key, value)
        log.info(
            "connector.delivered",
            connector=name,
            records=len(held),
            accepted=sum(1 for d in settled if d.accepted),
            dead_lettered=sum(1 for d in settled if not d.accepted),
        )

    async def _dead_letter(
        self,
        stage: str,
        message: ConsumerRecord[bytes, bytes],
        reason: str,
        errors: tuple[Any, ...] = (),
        key: bytes | None = None,
        value: bytes | None = None,
    ) -> None:
        letter = dead_letter_of(message, stage=stage, reason=reason, errors=errors, key=key, value=value)
        await self._send_letter(stage, letter.model_dump_json().encode("utf-8"), letter.key)

    async def _send_letter(self, stage: str, letter: bytes, key: bytes | None) -> None:
        producer = await self._producer_ready()
        try:
            await (await producer.send(self._names.dead_letters, key=key, value=letter))
        except KafkaError as exc:
            raise RetryableError(f"cannot write a dead letter of {stage}: {exc}") from exc
        self.metrics.count(stage.removeprefix("connector:"), "dead_lettered")

    async def _record_lag(self, name: str, consumer: AIOKafkaConsumer) -> None:
        lag = 0
        for partition in consumer.assignment():
            highwater = consumer.highwater(partition)
            if highwater is not None:
                lag += max(0, highwater - await consumer.position(partition))
        self.metrics.lag.labels(name).set(lag)

    # -- sources -----------------------------------------------------------------------

    async def _run_source(self, connector: LoadedConnector, stopping: asyncio.Event) -> None:
        declaration = connector.declaration
        checkpoint = await self._checkpoints.read(declaration.name)
        producer = await self._producer_ready()
        source = connector.build()
        assert isinstance(source, Source)
        context = _KafkaSourceContext(self, connector, producer, checkpoint, stopping)
        await source.setup()
        try:
            self._running(declaration.name)
            await source.run(context)
        finally:
            await source.close()

    def _running(self, name: str) -> None:
        self.statuses[name].state = "running"
        self.metrics.running.labels(name).set(1)
        log.info("connector.running", connector=name)


class _KafkaSourceContext(SourceContext):
    """A source's context on Kafka: emitted records go to its topic, checkpoints to Kafka."""

    def __init__(
        self,
        runtime: ConnectorRuntime,
        connector: LoadedConnector,
        producer: AIOKafkaProducer,
        checkpoint: Checkpoint | None,
        stopping: asyncio.Event,
    ) -> None:
        self._runtime = runtime
        self._name = connector.declaration.name
        self._kind = connector.declaration.topic
        self._topic = topic_name(self._kind, runtime._names)
        self._model = SOURCE_TOPICS[self._kind]
        self._producer = producer
        self.checkpoint = checkpoint
        self.stopping = stopping

    async def emit(self, records: Sequence[SourceRecord], checkpoint: Checkpoint | None = None) -> EmitReport:
        """Validate, produce and dead-letter ``records``; then store ``checkpoint``."""
        report = EmitReport()
        stage = f"connector:{self._name}"
        metrics = self._runtime.metrics
        metrics.count(self._name, "in", len(records))
        try:
            pending = []
            for record in records:
                result = validate_record(self._model, record)
                if isinstance(result, Rejection):
                    report.rejected.append(result)
                    letter = dead_letter(
                        stage=stage,
                        reason=f"{result.origin}: {result.reason}" if result.origin else result.reason,
                        errors=result.errors,
                        topic=self._topic,
                        partition=-1,
                        offset=-1,
                        key=None,
                        value=_raw(record),
                    )
                    await self._runtime._send_letter(stage, letter.model_dump_json().encode("utf-8"), None)
                    continue
                report.accepted.append(result)
                pending.append(
                    await self._producer.send(
                        self._topic,
                        key=record_key(result).encode("utf-8"),
                        value=result.model_dump_json().encode("utf-8"),
                    )
                )
            await asyncio.gather(*pending)
        except KafkaError as exc:
            raise RetryableError(f"cannot produce to {self._topic}: {exc}") from exc
        metrics.count(self._name, "out", len(report.accepted))
        if checkpoint is not None:
            await self._runtime._checkpoints.write(self._producer, self._name, checkpoint)
            self.checkpoint = checkpoint
        return report


def _raw(record: SourceRecord) -> bytes:
    if isinstance(record.value, BaseModel):
        return record.value.model_dump_json().encode("utf-8")
    return json.dumps(dict(record.value), default=str).encode("utf-8")
