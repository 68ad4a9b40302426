"""Calling off a wave: one :class:`~schemas.WaveCancellation` on every partition of wave-cancellations.

The one code path of ``mobilise waves cancel`` and of ``POST /api/v1/waves/{wave_id}/cancel``
(:mod:`mobilise.web.coordinator_api`). Each worker holds the waved alerts of the partitions
it owns, so each partition gets its own copy (key: the wave id); a worker drops the held
alerts of that wave, each with a ``cancelled`` delivery event, and alerts already released
stay sent (``streams/waves.py``). Cancelling again is harmless: the workers keep one
cancellation per wave and partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from schemas import WaveCancellation

if TYPE_CHECKING:
    from streams.topics import TopicNames

    from .web.publisher import KafkaPublisher

__all__ = ["WaveCancelled", "cancel_wave"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class WaveCancelled:
    """A cancellation Kafka acknowledged on every partition."""

    cancellation: WaveCancellation
    """What was published."""
    partitions: int
    """How many partitions of wave-cancellations got a copy: all of them."""


async def cancel_wave(
    publisher: KafkaPublisher,
    topics: TopicNames,
    *,
    wave_id: str,
    case_id: str,
    cancelled_by: str,
    at: datetime,
) -> WaveCancelled:
    """Publish the cancellation of ``wave_id`` to every partition of wave-cancellations.

    Args:
        publisher: Where the copies go; the caller starts and closes it.
        topics: The deployment's topic names.
        wave_id: The wave called off (``schemas.wave_id_for``: the coordinators' ``wave_id``,
            or the id ``mobilise publish`` printed).
        case_id: The case whose update carried the wave.
        cancelled_by: Who calls it off (a token's name, a login name).
        at: When it was called off.

    Returns:
        The cancellation and how many partitions got it, once Kafka acknowledged every copy.

    Raises:
        ValidationError: ``wave_id`` or ``case_id`` is not an id (letters, digits and
            ``. _ : -``), or ``cancelled_by`` is empty or too long; nothing was published.
        RetryableError: Kafka did not acknowledge every copy (some may be written; a retry
            is harmless).

    """
    cancellation = WaveCancellation(wave_id=wave_id, case_id=case_id, cancelled_by=cancelled_by, at=at)
    partitions = await publisher.publish_everywhere(
        topics.wave_cancellations, wave_id, cancellation.model_dump_json().encode("utf-8")
    )
    log.info(
        "wave.cancel_published",
        wave_id=wave_id,
        case_id=case_id,
        cancelled_by=cancelled_by,
        partitions=partitions,
    )
    return WaveCancelled(cancellation=cancellation, partitions=partitions)
