"""A live, in-memory view of topics for the web process: every record, folded as it arrives.

Pages and the coordinators' API answer from state that lives on Kafka (who is subscribed
and to what, each case's latest status and counts, API tokens). The web process keeps its
own copy: a :class:`TopicView` reads its topics from the beginning with no consumer group
(every web replica sees every record, and nothing is committed), hands each record to a
fold function, and keeps following the topics. A restarted web process rebuilds the same
state from the same records, so there is nothing to migrate and nothing to lose.

What is served is only as fresh as the records read: :attr:`TopicView.caught_up` says
whether the view has reached the ends the topics had when it started (a page that must not
answer from a partial view answers 503 until then), and a route that has just published a
record can fold it at once (:meth:`TopicView.apply`) to read its own write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from mobilise.snapshot import StoredRecord, stored_record

__all__ = ["Fold", "Follower", "TopicView", "follow_with_app"]

log = structlog.get_logger(__name__)

Fold = Callable[[StoredRecord], None]
"""Applies one record to the view's state; must not raise for a record it cannot read."""

_RETRY_SECONDS = 2.0
_POLL_MS = 500


class TopicView:
    """Follows ``topics`` from their beginning and folds every record into a state.

    Args:
        bootstrap: ``host:port`` of the brokers.
        topics: The topics to follow; one that does not exist yet is waited for.
        fold: Called with every record, in offset order within a partition, on the event
            loop (so the state needs no lock against readers on the same loop).
        name: Names the view in logs.
        options: TLS and SASL options of the client
            (:meth:`mobilise.kafka_security.KafkaSecurity.client_options`).

    Records are read at least once per process life: after a lost connection the view
    reconnects and goes on from the next offset it has not folded, so a fold sees each
    record once unless the process restarts (then it starts over from an empty state).

    """

    def __init__(
        self,
        bootstrap: Sequence[str],
        topics: Sequence[str],
        fold: Fold,
        *,
        name: str,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self._bootstrap = list(bootstrap)
        self._topics = tuple(topics)
        self._fold = fold
        self._name = name
        self._options = dict(options or {})
        self._next: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self.records = 0
        """Records folded so far."""

    @property
    def caught_up(self) -> bool:
        """Whether every record stored when the view started has been folded."""
        return self._caught_up.is_set()

    async def wait_caught_up(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :attr:`caught_up`; its value at the end."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._caught_up.wait(), timeout)
        return self.caught_up

    def apply(self, record: StoredRecord) -> None:
        """Fold a record this process has just published, before it is read back.

        The fold sees the record again when the view reads it from Kafka, so it must be
        idempotent for a repeated record (a view keyed by id, as a compacted topic is, is).
        """
        self._fold(record)

    def start(self) -> None:
        """Begin following the topics on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"view-{self._name}")

    async def close(self) -> None:
        """Stop following."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                client_id=f"mobilise-web-{self._name}",
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **self._options,
            )
            try:
                await consumer.start()
                await self._follow(consumer)
            except KafkaError as exc:
                log.warning("web.view_interrupted", view=self._name, error=repr(exc))
            finally:
                with contextlib.suppress(KafkaError):
                    await consumer.stop()
            await asyncio.sleep(_RETRY_SECONDS)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        partitions = await self._partitions(consumer)
        consumer.assign(partitions)
        for tp in partitions:
            if tp in self._next:
                consumer.seek(tp, self._next[tp])
            else:
                await consumer.seek_to_beginning(tp)
        if not self.caught_up:
            ends = await consumer.end_offsets(partitions)
            # Tansu may report a partition's end as its last batch's base + 1, which is
            # reached once that batch is read; a real broker's end is exact.
            pending = {tp: end for tp, end in ends.items() if end > self._next.get(tp, 0)}
        while True:
            batches = await consumer.getmany(timeout_ms=_POLL_MS)
            for tp, records in batches.items():
                for record in records:
                    self._fold_one(record)
                    self._next[tp] = record.offset + 1
            if not self.caught_up:
                pending = {tp: end for tp, end in pending.items() if self._next.get(tp, 0) < end}
                if not pending:
                    self._caught_up.set()
                    log.info("web.view_caught_up", view=self._name, records=self.records)

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """Every partition of every topic, waiting for topics that do not exist yet."""
        while True:
            # aiokafka's public ``partitions_for_topic`` only knows topics already assigned;
            # this is the metadata request that ``consumer.topics()`` makes, kept whole.
            cluster = await consumer._client.fetch_all_metadata()
            found = {topic: cluster.partitions_for_topic(topic) for topic in self._topics}
            missing = [topic for topic, ids in found.items() if not ids]
            if not missing:
                return [TopicPartition(topic, p) for topic, ids in found.items() for p in sorted(ids or ())]
            log.warning("web.view_waiting_for_topics", view=self._name, missing=missing)
            await asyncio.sleep(_RETRY_SECONDS)

    def _fold_one(self, record: Any) -> None:
        self.records += 1
        try:
            self._fold(stored_record(record))
        except Exception as exc:  # a view must not stop on one bad record; pipelines dead-letter it
            log.warning(
                "web.view_record_skipped",
                view=self._name,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                error=repr(exc),
            )


class Follower(Protocol):
    """A view that follows its topics between :meth:`start` and :meth:`close`."""

    def start(self) -> None:
        """Begin following."""

    async def close(self) -> None:
        """Stop following."""


def follow_with_app(app: web.Application, *views: Follower) -> None:
    """Start ``views`` when ``app`` starts and close them when it stops."""

    async def follow(_app: web.Application) -> AsyncIterator[None]:
        for view in views:
            view.start()
        yield
        for view in views:
            await view.close()

    app.cleanup_ctx.append(follow)
