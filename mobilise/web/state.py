"""What every route of the web process shares, kept on the application."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from mobilise.settings import Settings
from streams.topics import TopicNames

from .publisher import KafkaPublisher

__all__ = ["STATE", "WebState"]


@dataclass(frozen=True)
class WebState:
    """The settings, the topic names, the Kafka publisher and the clock of one web process."""

    settings: Settings
    topics: TopicNames
    publisher: KafkaPublisher
    clock: Callable[[], float] = time.time
    """Current Unix time; tests inject a fixed one."""


STATE = web.AppKey("mobilise_state", WebState)
"""``app[STATE]``: the shared :class:`WebState`."""
