"""Helpers for testing a connector without a broker: a source context that keeps what it is given.

An integrator tests a connector's own logic with these, then runs it through
``mobilise connectors run`` against a broker for the rest (the built-in connectors' tests do
both). The validation is the runtime's own (:func:`connectors.source.validate_record`), so a
record this context accepts is one the runtime would produce.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from schemas import CaseUpdate, Subscription

from .base import Sink
from .records import SOURCE_TOPICS
from .source import Checkpoint, EmitReport, Rejection, Source, SourceContext, SourceRecord, validate_record

__all__ = ["MemorySourceContext", "check_sink_outcomes", "run_source"]


class MemorySourceContext(SourceContext):
    """Keeps every emitted record, rejection and checkpoint in lists.

    Args:
        topic: The topic kind the source is declared on (its schema validates records).
        checkpoint: What an earlier run left, to test resuming.

    """

    def __init__(self, topic: str = "case-updates", checkpoint: Checkpoint | None = None) -> None:
        self.model = SOURCE_TOPICS[topic]
        self.checkpoint = checkpoint
        self.stopping = asyncio.Event()
        self.records: list[CaseUpdate | Subscription] = []
        self.rejected: list[Rejection] = []
        self.checkpoints: list[Checkpoint] = []

    async def emit(self, records: Sequence[SourceRecord], checkpoint: Checkpoint | None = None) -> EmitReport:
        """Validate ``records`` as the runtime would; keep them and ``checkpoint``."""
        report = EmitReport()
        for record in records:
            result = validate_record(self.model, record)
            if isinstance(result, Rejection):
                report.rejected.append(result)
            else:
                report.accepted.append(result)
        self.records.extend(report.accepted)
        self.rejected.extend(report.rejected)
        if checkpoint is not None:
            self.checkpoint = checkpoint
            self.checkpoints.append(checkpoint)
        return report


async def run_source(
    source: Source[Any], context: MemorySourceContext, *, timeout: float = 10.0
) -> MemorySourceContext:
    """Set up ``source``, run it until it returns (or ``timeout``), close it; return ``context``."""
    await source.setup()
    try:
        await asyncio.wait_for(source.run(context), timeout)
    except TimeoutError:
        context.stopping.set()
    finally:
        await source.close()
    return context


def check_sink_outcomes(sink: Sink[Any, Any], records: Sequence[BaseModel], outcomes: Sequence[Any]) -> None:
    """Assert the contract of :meth:`Sink.deliver`: one outcome per record, of a known id, coherent.

    Raises:
        AssertionError: naming the record and what is wrong with its outcome.

    """
    ids = [sink.record_id(r) for r in records]
    seen: set[str] = set()
    for outcome in outcomes:
        assert outcome.record_id in ids, f"outcome for an unknown record {outcome.record_id!r}"
        assert outcome.record_id not in seen, f"two outcomes for record {outcome.record_id!r}"
        seen.add(outcome.record_id)
        if outcome.accepted:
            assert not outcome.retryable, f"record {outcome.record_id!r} accepted and retryable"
        else:
            assert outcome.error, f"record {outcome.record_id!r} failed without saying why"
