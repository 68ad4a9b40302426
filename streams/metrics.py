"""What the pipeline counts and measures, as Prometheus metrics (one registry per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["PipelineMetrics", "observe_many"]

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


def observe_many(histogram: Histogram, amount: float, count: int) -> None:
    """``histogram.observe(amount)`` ``count`` times, in one step.

    Every alert of a batch has the same delivery latency; observing a thousand of them one
    by one cost more than delivering them. prometheus_client has no call for it, so this
    adds to the histogram's sum and bucket as ``observe`` does (its own fields; a test
    holds it equal to repeated ``observe``).
    """
    if count <= 0:
        return
    if count == 1:
        histogram.observe(amount)
        return
    histogram._sum.inc(amount * count)  # see the docstring
    for index, bound in enumerate(histogram._upper_bounds):
        if amount <= bound:
            histogram._buckets[index].inc(count)
            break


class PipelineMetrics:
    """The pipeline's metrics, registered in their own :class:`CollectorRegistry`.

    Each app gets its own registry so that several apps in one process (tests) do not
    share counts. Names follow Prometheus conventions: ``_total`` for counters,
    ``_seconds`` for durations.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.case_updates = Counter(
            "mobilise_case_updates_total",
            "Case update records read from case-updates, by what became of them.",
            ["outcome"],  # fanned_out, replay_skipped, invalid
            registry=registry,
        )
        self.alerts = Counter(
            "mobilise_alerts_emitted_total",
            "Alerts produced on the alerts topic (one per matching subscriber and update).",
            registry=registry,
        )
        self.follow_ups = Counter(
            "mobilise_follow_ups_emitted_total",
            "Alerts produced as follow-ups for people who acted on a won or closed case (also in alerts).",
            registry=registry,
        )
        self.match_seconds = Histogram(
            "mobilise_match_seconds",
            "Time to match one update against one shard and produce its alerts.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.deliveries = Counter(
            "mobilise_deliveries_total",
            "Outcomes of alerts at the sink: accepted, duplicate, failed (retried), dead_lettered.",
            ["sink", "outcome"],
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "mobilise_delivery_latency_seconds",
            "From an alert's creation to its acceptance by the sink.",
            ["sink"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.dead_letters = Counter(
            "mobilise_dead_letters_total",
            "Records sent to dead-letters, by the stage that gave up on them.",
            ["stage"],
            registry=registry,
        )
        self.subscribers = Gauge(
            "mobilise_subscribers",
            "Subscriptions held in this worker's shards.",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "mobilise_consumer_lag",
            "Records not yet processed and committed, per input topic and partition assigned to this worker.",
            ["topic", "partition"],
            registry=registry,
        )
        self.partition_stalls = Counter(
            "mobilise_partition_stalls_total",
            "Times an input partition was found behind and not read, and fetched again.",
            ["topic", "partition"],
            registry=registry,
        )
        self.partitions_lost = Counter(
            "mobilise_partitions_lost_total",
            "Times an input partition's records past the commit were in nobody's hands, and were read again.",
            ["topic", "partition"],
            registry=registry,
        )
        self.held_batches = Gauge(
            "mobilise_held_alert_batches",
            "Alert batches held for a wave or a reminder on this worker's partitions.",
            registry=registry,
        )
        self.held_alerts = Gauge(
            "mobilise_held_alerts",
            "Alerts (people) in the held batches.",
            registry=registry,
        )
        self.reminders = Counter(
            "mobilise_reminders_scheduled_total",
            "Reminders of an action call cut and held until their time (one per person and update).",
            registry=registry,
        )
        self.digests_waiting = Gauge(
            "mobilise_digests_waiting",
            "People on this worker's partitions with a digest waiting for their morning.",
            registry=registry,
        )
        self.digest_entries = Counter(
            "mobilise_digest_entries_total",
            "Matched updates put into a person's next digest instead of sent at once.",
            registry=registry,
        )
        self.digests_sent = Counter(
            "mobilise_digests_sent_total",
            "Digests handed to the alerts topic (one per person and digest).",
            registry=registry,
        )
