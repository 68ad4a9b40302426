"""Connectors: where alerts go (sinks) and, later, where events come from (sources)."""

from .base import Sink, SinkConfig, SinkOutcome
from .registry import ENTRY_POINT_GROUP, available_connectors, load_sink

__all__ = [
    "ENTRY_POINT_GROUP",
    "Sink",
    "SinkConfig",
    "SinkOutcome",
    "available_connectors",
    "load_sink",
]
