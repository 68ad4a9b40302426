"""The Faust app: topics, tables and agents wired into the pipeline."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
import structlog
from aiohttp import web
from faust.types import TP

from connectors.base import Sink
from connectors.declarations import load_connectors
from connectors.metrics import ConnectorMetrics
from connectors.runtime import ConnectorRuntime
from mobilise.kafka_security import kafka_security
from mobilise.settings import Settings

from .acted import ActedCases, ActionIntake
from .alerting import Matcher, encode_batch
from .bulk import BulkProducer
from .consumer import RewindingConsumer
from .delivery import Delivery
from .digests import DigestBook, DigestSender
from .fanout import FanOut
from .health import Readiness, health_app
from .metrics import PipelineMetrics
from .records import DeadLetters
from .reminders import CaseStatuses, ReminderScreen
from .sent import SentAlerts
from .shards import SubscriberShards, SubscriptionIntake
from .stalls import StallWatch
from .tables import PartitionedTable, declare_table
from .topics import TopicNames
from .waves import CancellationIntake, CancelledWaves, HeldAlerts, file_clock

__all__ = ["DIGEST_INTERVAL", "RELEASE_INTERVAL", "SENT_EXPIRY_INTERVAL", "Pipeline", "create_app"]

RELEASE_INTERVAL = 1.0
"""Seconds between two looks at the held alerts: a wave lands at most this late."""

SENT_EXPIRY_INTERVAL = 3600.0
"""Seconds between two looks for sent-alert rows past their retention (also done at each rebalance)."""

LAG_TIMEOUT = 5.0
"""Seconds a metrics scrape waits for the broker's end offsets."""

DIGEST_INTERVAL = 5.0
"""Seconds between two looks at the digests waiting: a digest goes at most this late
(each look goes through everyone waiting)."""

log = structlog.get_logger(__name__)


def _raw_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    # Values are read as bytes and validated by the schemas ourselves, so that a bad
    # record becomes a dead letter with its reason instead of a codec crash.
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=False,
    )


@dataclass
class Pipeline:
    """The app with the parts tests and the CLI need to reach."""

    app: faust.App
    names: TopicNames
    shards: SubscriberShards
    subscribers: PartitionedTable
    seen: PartitionedTable
    sent: PartitionedTable
    acted: PartitionedTable
    held: PartitionedTable
    cancelled: PartitionedTable
    digests: PartitionedTable
    statuses: PartitionedTable
    metrics: PipelineMetrics
    readiness: Readiness


def create_app(settings: Settings, sink: Sink) -> Pipeline:  # type: ignore[type-arg]  # any sink
    """Build the worker's Faust app for ``settings``, delivering through ``sink``."""
    partitions = settings.partitions
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers],
        broker_credentials=kafka_security().faust_credentials(),
        store=settings.store,
        datadir=str(settings.data_dir / settings.app_id),
        topic_partitions=partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        # Short group timeouts: a dead worker's partitions move on within seconds.
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_rebalance_timeout=10,
        producer_acks=-1,
        web_enabled=False,
        autodiscover=False,
        stream_wait_empty=False,
    )
    names = TopicNames(prefix=settings.topic_prefix)
    names_read = {
        names.case_updates,
        names.subscriptions,
        names.case_fanout,
        names.alerts,
        names.actions_taken,
        names.wave_cancellations,
    }
    # This app's transport only, not faust's class: other apps in the process are untouched.
    consumer_class = type(
        "PipelineConsumer",
        (RewindingConsumer,),
        {"inputs": frozenset(names_read), "fetch_max_wait_ms": settings.fetch_max_wait_ms},
    )
    app.transport.Consumer = consumer_class  # type: ignore[misc]  # faust declares it a class variable
    case_updates = _raw_topic(app, names.case_updates, partitions)
    subscriptions = _raw_topic(app, names.subscriptions, partitions)
    case_fanout = _raw_topic(app, names.case_fanout, partitions)
    alerts = _raw_topic(app, names.alerts, partitions)
    actions_taken = _raw_topic(app, names.actions_taken, partitions)
    wave_cancellations = _raw_topic(app, names.wave_cancellations, partitions)
    _raw_topic(app, names.deliveries, partitions)  # declared, written through the bulk producer
    metrics = PipelineMetrics()
    dead_letters = DeadLetters(_raw_topic(app, names.dead_letters, partitions), metrics=metrics)

    subscribers = declare_table(app, "subscribers", partitions, "Subscriptions by subscriber_id, per shard")
    seen = declare_table(app, "seen-events", partitions, "First position of each case update event_id")
    sent = declare_table(app, "sent-alerts", partitions, "Alert ids the sink accepted, per alert batch")
    sent_alerts = SentAlerts(sent)
    acted_table = declare_table(app, "acted-cases", partitions, "Who acted on which case, by subscriber_id")
    acted = ActedCases(acted_table)
    held_table = declare_table(app, "held-alerts", partitions, "Alert batches held for a wave, by batch_id")
    held = HeldAlerts(held_table)
    cancelled_table = declare_table(
        app, "cancelled-waves", partitions, "Waves called off, by wave_id@partition (a copy per partition)"
    )
    cancelled = CancelledWaves(cancelled_table)
    cancellations = CancellationIntake(cancelled=cancelled, dead_letters=dead_letters)
    digests_table = declare_table(
        app, "digests", partitions, "Updates waiting for a person's daily or weekly digest, by subscriber_id"
    )
    digests = DigestBook(
        digests_table, local_time=settings.digest_local_time, weekday=settings.digest_weekday
    )
    statuses_table = declare_table(
        app, "case-status", partitions, "Latest status of each case, by case_id@partition (one per partition)"
    )
    statuses = CaseStatuses(statuses_table)
    clock = file_clock(settings.clock_file) if settings.clock_file is not None else time.time
    shards = SubscriberShards()
    metrics.held_batches.set_function(lambda: len(held))
    metrics.held_alerts.set_function(lambda: held.people)
    metrics.digests_waiting.set_function(lambda: len(digests))
    metrics.subscribers.set_function(lambda: sum(len(s) for p in shards.partitions if (s := shards.shard(p))))
    readiness = Readiness()

    fanout = FanOut(
        fanout_topic=case_fanout, partitions=partitions, seen=seen, dead_letters=dead_letters, metrics=metrics
    )
    intake = SubscriptionIntake(
        shards=shards, table=subscribers, dead_letters=dead_letters, on_erased=[acted.forget, digests.forget]
    )
    actions = ActionIntake(acted=acted, subscribers=subscribers, dead_letters=dead_letters)
    matcher = Matcher(
        shards=shards,
        acted=acted,
        alerts_topic=alerts,
        dead_letters=dead_letters,
        metrics=metrics,
        batch_size=settings.delivery_batch_size,
        digests=digests,
        statuses=statuses,
        clock=clock,
    )
    digest_sender = DigestSender(
        book=digests,
        shards=shards,
        alerts_topic=alerts,
        batch_size=settings.delivery_batch_size,
        clock=clock,
        encode=encode_batch,
        on_sent=metrics.digests_sent.inc,
    )
    delivery = Delivery(
        sink=sink,
        sent=sent_alerts,
        deliveries_topic=names.deliveries,
        bulk=BulkProducer(app),
        dead_letters=dead_letters,
        max_attempts=settings.delivery_max_attempts,
        metrics=metrics,
        held=held,
        cancelled=cancelled,
        alerts_topic=names.alerts,
        screen=ReminderScreen(
            shards=shards, acted=acted_table, statuses=statuses, was_sent=sent_alerts.__contains__
        ),
        clock=clock,
    )
    inputs = names_read

    async def refresh_lag() -> None:
        consumer = cast(RewindingConsumer, app.consumer)
        owned = [tp for tp in consumer.assignment() if tp.topic in inputs]
        metrics.consumer_lag.clear()  # a figure from an earlier scrape would say all is well
        # Bounded: a scrape must answer even when the broker does not (the lag is then left out).
        lags = await asyncio.wait_for(consumer.lags(owned), LAG_TIMEOUT)
        for tp, lag in lags.items():
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    runners: list[web.AppRunner] = []

    if settings.health_port is not None:

        @app.task  # type: ignore[untyped-decorator]  # faust's decorators are untyped
        async def _serve_health() -> None:
            runner = web.AppRunner(
                health_app(
                    metrics=metrics,
                    readiness=readiness,
                    bootstrap_servers=settings.bootstrap_servers,
                    refresh_lag=refresh_lag,
                ),
                access_log=None,
            )
            await runner.setup()
            site = web.TCPSite(runner, settings.health_host, settings.health_port)
            await site.start()
            runners.append(runner)
            port = runner.addresses[0][1] if runner.addresses else settings.health_port
            log.info("health.serving", url=f"http://{settings.health_host}:{port}")

    connectors_stopping = asyncio.Event()
    if settings.connectors_file is not None:
        # Loaded here so that a wrong file stops the worker at start, naming the fields.
        declared = load_connectors(settings.connectors_file)
        connector_runtime = ConnectorRuntime(
            declared,
            bootstrap=settings.bootstrap_servers,
            names=names,
            metrics=ConnectorMetrics(metrics.registry),
            client_options=kafka_security().client_options(),
        )

        @app.task  # type: ignore[untyped-decorator]  # faust's decorators are untyped
        async def _run_connectors() -> None:
            await connector_runtime.run(connectors_stopping)

    @app.task  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def _open_sink() -> None:
        # A sink in its own process takes a second to start: not on the first urgent action's time.
        await delivery.open()

    @app.agent(case_updates, name="fanout")
    async def _fanout(stream: Any) -> None:
        async for event in stream.events():
            await fanout.process(event)

    @app.agent(subscriptions, name="subscriptions")
    async def _subscriptions(stream: Any) -> None:
        async for event in stream.events():
            await intake.process(event)

    @app.agent(actions_taken, name="acted")
    async def _acted(stream: Any) -> None:
        async for event in stream.events():
            await actions.process(event)

    @app.agent(wave_cancellations, name="wave-cancellations")
    async def _cancellations(stream: Any) -> None:
        async for event in stream.events():
            await cancellations.process(event)

    @app.timer(interval=RELEASE_INTERVAL)  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def _release_held() -> None:
        if readiness.shards_loaded:  # not while a rebalance is rebuilding what is held
            await delivery.release_due()

    def expire_sent() -> None:
        before = datetime.now(UTC) - timedelta(days=settings.sent_retention_days)
        forgotten = sent_alerts.expire(before, readiness.partitions, held.reminded_events())
        if forgotten:
            log.info("sent_alerts.expired", alerts=forgotten, before=before.isoformat())

    @app.timer(interval=SENT_EXPIRY_INTERVAL)  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def _expire_sent() -> None:
        if readiness.shards_loaded:  # the held reminders say which rows are still needed
            expire_sent()

    @app.timer(interval=DIGEST_INTERVAL)  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def _send_digests() -> None:
        if readiness.shards_loaded:  # the shards say who is still subscribed
            await digest_sender.send_due()

    if settings.stall_seconds > 0:
        watch: StallWatch[TP] = StallWatch(settings.stall_seconds)

        @app.timer(interval=max(1.0, settings.stall_seconds / 3))  # type: ignore[untyped-decorator]  # as above
        async def _refetch_stalled() -> None:
            consumer = cast(RewindingConsumer, app.consumer)
            if not readiness.shards_loaded or app.rebalancing or not consumer.flow_active:
                return  # faust pauses and seeks partitions itself until the assignment is ready
            try:
                states = await consumer.fetch_states(tp for tp in consumer.assignment() if tp.topic in inputs)
            except Exception as exc:  # a guard that fails must not stop the worker: the broker may be away
                log.warning("partition_watch.skipped", error=repr(exc))
                return
            stalled = watch.observe(time.monotonic(), states)
            for tp, offset in stalled.items():
                state = states[tp]
                if state.unaccounted:
                    # Read and then dropped between the client and the streams (streams/stalls.py).
                    log.warning(
                        "partition.lost",
                        topic=tp.topic,
                        partition=tp.partition,
                        position=state.position,
                        committed=state.committed,
                        read_from=offset,
                        seconds=settings.stall_seconds,
                    )
                    metrics.partitions_lost.labels(tp.topic, str(tp.partition)).inc()
                    continue
                log.warning(
                    "partition.stalled",
                    topic=tp.topic,
                    partition=tp.partition,
                    position=offset,
                    end=state.end,
                    held=state.held,
                    taken=state.taken,
                    seconds=settings.stall_seconds,
                )
                metrics.partition_stalls.labels(tp.topic, str(tp.partition)).inc()
            if stalled:
                try:
                    await consumer.refetch(stalled)
                except Exception as exc:  # as above; the next period tries again
                    log.warning("partition_watch.refetch_failed", error=repr(exc))

    @app.agent(case_fanout, name="match")
    async def _match(stream: Any) -> None:
        async for event in stream.events():
            await matcher.process(event)

    @app.agent(alerts, name="deliver")
    async def _deliver(stream: Any) -> None:
        # One alert batch at a time (the matcher made it a sink batch already), acked by
        # hand once recorded: the next record is read while the sink has this one.
        async for event in stream.noack().events():
            await delivery.take(event)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]  # mode types receivers as returning Awaitable, not Coroutine
    async def _load_shards(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == names.subscriptions}
        built = shards.assign(owned, subscribers.items())
        acted_people = acted.assign(owned, acted_table.items())
        sent_known = sent_alerts.load(sent.items())
        held_batches = held.assign(owned, held_table.items())
        cancelled_known = cancelled.load(cancelled_table.items())
        digests_waiting = digests.assign(owned, digests_table.items())
        readiness.partitions = frozenset(owned)
        readiness.shards_loaded = True
        expire_sent()
        log.info(
            "worker.ready",
            app_id=settings.app_id,
            partitions=sorted(owned),
            built=built,
            sent_known=sent_known,
            acted=acted_people,
            held=held_batches,
            cancelled_waves=cancelled_known,
            digests_waiting=digests_waiting,
            subscribers=sum(len(s) for p in owned if (s := shards.shard(p)) is not None),
        )

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # as above
    async def _not_ready(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        readiness.shards_loaded = False  # until the next assignment's shards are built

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # as above
    async def _close_sink(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        # After the consumer stopped, so no batch is in the sink while it closes.
        connectors_stopping.set()
        await delivery.close()
        for runner in runners:
            await runner.cleanup()

    return Pipeline(
        app=app,
        names=names,
        shards=shards,
        subscribers=subscribers,
        seen=seen,
        sent=sent,
        acted=acted_table,
        held=held_table,
        cancelled=cancelled_table,
        digests=digests_table,
        statuses=statuses_table,
        metrics=metrics,
        readiness=readiness,
    )
