"""The worker's Kafka consumer: faust's, made to re-read what it would skip or stop reading.

It rewinds partitions that have no commit yet, hands no record on while it seeks a new
assignment, fetches again a partition it has stopped reading or has read and lost
(streams/stalls.py), and stops within seconds when the broker has gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, cast

import aiokafka
import structlog
from faust.transport.consumer import ensure_TP
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP

from .stalls import FetchState

__all__ = ["FINAL_COMMIT_SECONDS", "RewindingConsumer", "fetch_view", "refetch_at"]

log = structlog.get_logger(__name__)

FINAL_COMMIT_SECONDS = 10.0
"""How long a stopping worker waits for its last commit (within a usual 30 s grace period)."""


async def fetch_view(
    client: aiokafka.AIOKafkaConsumer, tps: Iterable[TP]
) -> dict[TP, tuple[int | None, bool]]:
    """Each partition's position and whether the client holds fetched records for it.

    Awaited in the client's own thread (its event loop). A partition not assigned, or whose
    position is being reset, has no position.
    """
    assignment = client._subscription.subscription.assignment if client._subscription.subscription else None
    held = client._fetcher._records
    view: dict[TP, tuple[int | None, bool]] = {}
    for tp in tps:
        state = assignment.state_value(tp) if assignment is not None else None
        position = state.position if state is not None and state.has_valid_position else None
        view[tp] = (position, tp in held)
    return view


async def refetch_at(client: aiokafka.AIOKafkaConsumer, positions: Mapping[TP, int]) -> None:
    """Seek each still-assigned partition to ``positions``, which drops what the client held for it.

    Awaited in the client's own thread. Given the positions the client already has, it fetches
    those partitions again from where it was, skipping and repeating nothing.
    """
    assigned = client.assignment()
    for tp, position in positions.items():
        if tp in assigned:
            client.seek(tp, position)


class _PromptConsumerThread(AIOKafkaConsumerThread):
    """faust's consumer thread, with a fetch wait the pipeline chooses.

    faust fixes the fetch wait at 1.5 s. A broker that does not answer a waiting fetch as
    soon as a record arrives (the embedded one does not) then holds every hop of the
    pipeline (case-updates → case-fanout → alerts) for up to that long; Kafka answers at
    once. ``MOBILISE_FETCH_MAX_WAIT_MS`` sets it (500 by default, Kafka's own default).
    """

    fetch_max_wait_ms: int = 500

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by the fetcher that aiokafka creates when the consumer starts.
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer

    async def on_thread_stop(self) -> None:
        """Stop the client even when the broker is gone, so the worker exits at once.

        With the broker unreachable, aiokafka's fetcher is waiting out a retry backoff; closing
        it cancels that wait and re-raises the CancelledError. mode's thread takes it for its own
        cancellation and never reports the thread stopped, so the worker hung for mode's 60 s
        shutdown timeout after SIGTERM, and an orchestrator would have killed it first.
        """
        try:
            await super().on_thread_stop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this thread is being cancelled, not just the fetch it closed
            if self._consumer is not None:
                # consumer.stop() ended in its fetcher's close, before the client's own.
                await self._consumer._client.close()


class RewindingConsumer(AIOKafkaConsumer):
    """Seeks input partitions without a committed offset back to their beginning.

    After a rebalance faust recovers the tables while the client already reads ahead on
    the input partitions, then seeks every partition to its committed offset. A partition
    nobody has committed on yet (a worker that died before its first commit) is left
    where the read-ahead stopped, and the records before it would never be processed:
    alerts lost. Rewinding it re-reads them, which is safe because every effect is
    idempotent (replayed updates are recognised by offset, sent alerts by id).

    ``inputs`` names the topics the pipeline's agents read; changelogs are left to
    faust's recovery.
    """

    inputs: frozenset[str] = frozenset()
    fetch_max_wait_ms: int = 500

    async def commit_and_end_transactions(self) -> None:
        """The last commit as the worker stops, given up after :data:`FINAL_COMMIT_SECONDS`.

        faust's waits until the group's coordinator answers: with the broker gone, forever, and
        the worker never exits. Offsets left uncommitted are read again by the next worker,
        which every effect allows (see above): the same as a worker that dies.
        """
        try:
            await asyncio.wait_for(super().commit_and_end_transactions(), FINAL_COMMIT_SECONDS)
        except TimeoutError:
            log.warning(
                "worker.final_commit_abandoned", seconds=FINAL_COMMIT_SECONDS, reason="no broker answered"
            )

    async def fetch_states(self, tps: Iterable[TP]) -> dict[TP, FetchState]:
        """What the client and the broker say of each partition (see streams/stalls.py)."""
        wanted = list(tps)
        if not wanted:
            return {}
        ends = await self.highwaters(*wanted)  # asks the broker
        view = await self._thread.call_thread(fetch_view, self._thread._ensure_consumer(), wanted)
        active = self._active_partitions
        # Records the streams have and the commit does not cover yet: queued for a stream
        # (not tracked until a stream takes them, so counted by topic), being processed
        # (tracked until acked; dropped ones vanish from the weak set), or acked.
        channels = cast(Any, self.app.topics)._topic_name_index  # the conductor's, by topic name
        queued = {tp.topic for tp in wanted if any(not c.queue.empty() for c in channels.get(tp.topic, ()))}
        pending = {message.tp for message in list(self._unacked_messages)}
        pending.update(tp for tp, acked in self._acked.items() if acked)
        return {
            tp: FetchState(
                position=position,
                end=ends.get(tp),
                held=held,
                taken=active is None or tp in active,
                committed=self._committed_offset.get(tp),
                pending=tp in pending or tp.topic in queued,
            )
            for tp, (position, held) in view.items()
        }

    async def lags(self, tps: Iterable[TP]) -> dict[TP, int]:
        """Records of each partition not yet committed: the broker's end offset minus the commit.

        Not the client's fetch position and last-seen high watermark: those say nothing of the
        records fetched and still waiting for a slow stage, nor of a partition whose fetching
        stopped (streams/stalls.py), which is when the figure matters.
        """
        wanted = list(tps)
        if not wanted:
            return {}
        ends = await self.highwaters(*wanted)  # asks the broker
        committed = self._committed_offset  # the group's, from the broker at assignment, then ours
        return {tp: max(0, end - (committed.get(tp) or 0)) for tp, end in ends.items() if end is not None}

    async def refetch(self, positions: Mapping[TP, int]) -> None:
        """Make the partitions readable again and fetch them anew from ``positions``.

        As faust's own seek does, the read offsets follow, or faust would drop the records
        fetched again below them as read already (which is how a partition gets lost:
        streams/stalls.py).
        """
        active = self._get_active_partitions()
        self.resume_partitions([tp for tp in positions if tp not in active])
        # Before the seek, so that none of the records fetched after it meets the old ones.
        for tp, offset in positions.items():
            self._read_offset[tp] = offset if offset else None
        await self._thread.call_thread(refetch_at, self._thread._ensure_consumer(), positions)

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        thread = _PromptConsumerThread(self, loop=self.loop, beacon=self.beacon)
        thread.fetch_max_wait_ms = self.fetch_max_wait_ms  # before it creates its client
        return thread

    async def perform_seek(self) -> None:
        """Seek to the committed offsets, and to the beginning where there is none; hold the flow meanwhile.

        faust resumes the partitions of a new assignment before this seek, and resumes the
        flow only after it. Records the client fetched in between were handed on to streams
        that did not process them (their flow was not resumed yet; seen committed past them,
        too), and raised the read offsets past them, so the same records fetched again after
        the seek were dropped as read already: the partition read to its end, nothing of it
        processed, and alerts never sent. With the flow stopped, no record is handed on until
        the seek and the read offsets agree. faust resumes the flow after every seek it asks
        for, so it is not resumed here.
        """
        self.stop_flow()
        committed = await self.seek_to_committed()
        # As faust's own perform_seek does:
        self._read_offset.update(
            {tp: offset if offset is not None and offset >= 0 else None for tp, offset in committed.items()}
        )
        self._committed_offset.update(
            {
                ensure_TP(tp): offset if offset else None
                for tp, offset in committed.items()
                if offset is not None
            }
        )
        # ...and then the partitions it leaves where the read-ahead stopped.
        never = [tp for tp, offset in committed.items() if tp.topic in self.inputs and (offset or 0) <= 0]
        if never:
            await self._thread.seek_to_beginning(*never)
            for tp in never:
                self._read_offset[tp] = None
