"""What the connector runtime counts, per connector, as Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["ConnectorMetrics"]


class ConnectorMetrics:
    """The connectors' metrics, in ``registry`` (the worker's, inside a worker, so /metrics has them)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.records = Counter(
            "mobilise_connector_records_total",
            "Records through each connector: in (read or received), out (delivered or produced), "
            "retried (handed to a sink again), dead_lettered.",
            ["connector", "direction"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "mobilise_connector_lag",
            "Records of its topic a sink connector has not read yet.",
            ["connector"],
            registry=self.registry,
        )
        self.running = Gauge(
            "mobilise_connector_running",
            "1 while the connector runs, 0 once it finished, stopped or failed.",
            ["connector"],
            registry=self.registry,
        )
        self.restarts = Counter(
            "mobilise_connector_restarts_total",
            "Times a connector was started again after a temporary failure.",
            ["connector"],
            registry=self.registry,
        )

    def count(self, connector: str, direction: str, records: int = 1) -> None:
        """Add ``records`` to ``connector``'s ``direction`` counter."""
        if records:
            self.records.labels(connector, direction).inc(records)
