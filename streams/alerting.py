"""case-fanout × subscriber shard → alerts: every matching subscriber, in batches per language."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import faust
import structlog

from schemas import (
    AlertBatch,
    CaseUpdate,
    MatchReason,
    PublicCase,
    Recipient,
    Subscription,
    action_id_for,
    alert_ids_for,
    batch_id_for,
    release_at,
    reminder_event_id_for,
    wave_id_for,
    zone_for,
)

from .acted import ActedCases, follow_ups_for
from .digests import DigestBook, wants_digest
from .metrics import PipelineMetrics
from .records import DeadLetters, RawEvent
from .reminders import CaseStatuses, reminder_groups, reminders_wave_id_for
from .shards import SubscriberShards
from .waves import Clock, release_groups

__all__ = ["MAX_RECORD_BYTES", "Matcher", "alert_batches", "encode_batch", "split_follow_ups"]

MAX_RECORD_BYTES = 512 * 1024
"""Largest alert batch record written: half of Kafka's default ``message.max.bytes`` and of
faust's largest produce request (1 MB each), whatever the batch size and names."""


def encode_batch(batch: AlertBatch, max_bytes: int = MAX_RECORD_BYTES) -> list[tuple[bytes, bytes]]:
    """The (key, value) records of ``batch``: one, or halves of it until each fits ``max_bytes``.

    Halves are named ``<batch_id>-a`` and ``-b``, so the records stay the same on a re-match.
    """
    # Fields at their default are left out: smaller records, and a worker of the version
    # before reminders and digests still reads every batch that is neither.
    value = batch.model_dump_json(exclude_defaults=True).encode("utf-8")
    if len(value) <= max_bytes or len(batch.recipients) == 1:
        return [(batch.batch_id.encode("utf-8"), value)]
    half = len(batch.recipients) // 2
    return [
        record
        for suffix, people in (("a", batch.recipients[:half]), ("b", batch.recipients[half:]))
        for record in encode_batch(
            batch.model_copy(update={"batch_id": f"{batch.batch_id}-{suffix}", "recipients": people}),
            max_bytes,
        )
    ]


def alert_batches(
    *,
    event_id: str,
    partition: int,
    case: PublicCase,
    created_at: datetime,
    people: Iterable[tuple[Subscription, MatchReason]],
    batch_size: int,
    follow_up: bool = False,
    reminder: bool = False,
    release_at: datetime | None = None,
    wave_id: str | None = None,
) -> list[AlertBatch]:
    """The alert batches of ``case`` for ``people``: one language and ``batch_size`` people at most each.

    Batch ids are deterministic (``batch_id_for``); follow-up batches get their own, with a
    ``-follow-up`` suffix, so they never share an id (nor a ``sent-alerts`` row) with the
    update's other batches. A person's alert id is ``alert_id_for(event_id, subscriber_id)``
    either way, so nobody gets the update twice, whichever batch carries them. Batches
    held for a wave carry its ``wave_id`` and their ``release_at``, which is part of
    their id: people released at different times are in different batches. Reminder
    batches (``reminder``) are given the reminder's event id (:func:`schemas.reminder_event_id_for`).
    """
    by_language: dict[str, list[Recipient]] = {}
    alert_id_of = alert_ids_for(event_id)
    for subscription, reason in people:
        # Values come from a validated subscription and the validated case.
        by_language.setdefault(subscription.language, []).append(
            Recipient.trusted(
                alert_id=alert_id_of(subscription.subscriber_id),
                subscriber_id=subscription.subscriber_id,
                email=subscription.email,
                name=subscription.name,
                reason=reason,
                home_country=subscription.home_country,
            )
        )
    suffix = "-follow-up" if follow_up else ""
    return [
        AlertBatch.model_construct(
            schema_version=1,
            batch_id=batch_id_for(event_id, partition, language, index, release_at) + suffix,
            event_id=event_id,
            language=language,
            case=case,
            follow_up=follow_up,
            reminder=reminder,
            digest=(),
            digest_frequency=None,
            created_at=created_at,
            release_at=release_at,
            wave_id=wave_id if release_at is not None else None,
            recipients=tuple(recipients[start : start + batch_size]),
        )
        for language, recipients in sorted(by_language.items())
        for index, start in enumerate(range(0, len(recipients), batch_size))
    ]


def split_follow_ups(
    matched: Iterable[tuple[Subscription, MatchReason]],
    follow_ups: list[tuple[Subscription, MatchReason]],
) -> list[tuple[Subscription, MatchReason]]:
    """``matched`` without the people who get a follow-up: one email per person per update."""
    following = {s.subscriber_id for s, _ in follow_ups}
    return [(s, reason) for s, reason in matched if s.subscriber_id not in following]


log = structlog.get_logger(__name__)


class Matcher:
    """Matches each fanned-out update against the shard of its partition.

    Alerts go to the same partition number on the alerts topic, so the subscriber's
    alerts stay with the worker that owns the subscriber. They travel as
    :class:`AlertBatch` records of one language and at most ``batch_size`` people (the
    sink's batch), so a sink gets batches it can send whole (SendGrid: one request per
    batch). Every batch is acknowledged by the broker before the update's offset can be
    committed.

    An update that wins or closes a case also goes, as a follow-up, to the people of the
    partition who acted on it (``acted``): in follow-up batches of their own, and then in
    no other batch of that update.

    An update whose action call has a wave is cut, besides, by release time: one group
    per distinct ``release_at`` of its people (their zones), each batch carrying it, for
    the delivery stage to hold until then.

    People who chose a digest get the update in their next one (``digests``) instead,
    unless it bypasses digests. When the call asks for reminders, reminder batches are cut
    too, held until each person's reminder time (:mod:`streams.reminders`). Every update's
    status is recorded (``statuses``), for the reminders of a case won or closed since.
    """

    stage = "match"

    def __init__(
        self,
        *,
        shards: SubscriberShards,
        acted: ActedCases,
        alerts_topic: faust.TopicT,
        dead_letters: DeadLetters,
        metrics: PipelineMetrics,
        batch_size: int,
        digests: DigestBook,
        statuses: CaseStatuses,
        clock: Clock,
    ) -> None:
        self._digests = digests
        self._statuses = statuses
        self._clock = clock
        self._metrics = metrics
        self._batch_size = batch_size
        self._shards = shards
        self._acted = acted
        self._alerts = alerts_topic
        self._dead_letters = dead_letters

    async def process(self, event: RawEvent) -> None:
        """Handle one record of case-fanout."""
        partition = event.message.partition
        update = await self._dead_letters.read(CaseUpdate, event, stage=self.stage)
        if update is None:
            return
        bound = log.bind(event_id=update.event_id, case_id=update.case_id, partition=partition)
        shard = self._shards.shard(partition)
        if shard is None:
            # Co-partitioning guarantees this cannot happen; if it does, keep the
            # update where an operator can replay it rather than match nobody quietly.
            await self._dead_letters.send(
                event, stage=self.stage, reason=f"subscriber shard {partition} is not loaded on this worker"
            )
            return
        started = time.perf_counter()
        public = update.public()
        now = datetime.fromtimestamp(self._clock(), UTC)
        self._statuses.record(public, update.event_id, partition)
        follow_ups = follow_ups_for(public, self._acted.who_acted(partition, update.case_id), shard)
        normal = []
        digested = 0
        for subscription, reason in split_follow_ups(shard.match(public), follow_ups):
            if not wants_digest(subscription, public):
                normal.append((subscription, reason))
            elif self._digests.add(subscription, public, update.event_id, partition, now):
                digested += 1
        call = public.action_call
        wave = call.wave if call is not None else None
        wave_id = wave_id_for(update.case_id, wave) if wave is not None else None
        batches = [
            batch
            for people, follow_up in ((normal, False), (follow_ups, True))
            for when, group in release_groups(public, people)
            for batch in alert_batches(
                event_id=update.event_id,
                partition=partition,
                case=public,
                created_at=now,
                people=group,
                batch_size=self._batch_size,
                follow_up=follow_up,
                release_at=when,
                wave_id=wave_id,
            )
        ]
        reminded = 0
        if call is not None and call.remind_hours_before is not None:

            def released(subscription: Subscription) -> datetime | None:
                if wave is None:
                    return None
                return release_at(wave, zone_for(subscription.time_zone, subscription.home_country))

            reminders_id = reminders_wave_id_for(update.case_id, action_id_for(update.case_id, call))
            for when, group in reminder_groups(public, normal, now, released):
                reminded += len(group)
                batches.extend(
                    alert_batches(
                        event_id=reminder_event_id_for(update.event_id),
                        partition=partition,
                        case=public,
                        created_at=now,
                        people=group,
                        batch_size=self._batch_size,
                        reminder=True,
                        release_at=when,
                        wave_id=reminders_id,
                    )
                )
        pending = []
        for batch in batches:
            for key, value in encode_batch(batch):
                pending.append(await self._alerts.send(key=key, value=value, partition=partition))
        matched = len(normal) + len(follow_ups)
        await asyncio.gather(*pending)
        self._metrics.match_seconds.observe(time.perf_counter() - started)
        self._metrics.alerts.inc(matched)
        self._metrics.follow_ups.inc(len(follow_ups))
        self._metrics.digest_entries.inc(digested)
        self._metrics.reminders.inc(reminded)
        bound.info(
            "case_update.matched",
            matched=matched,
            follow_ups=len(follow_ups),
            digested=digested,
            reminders=reminded,
            batches=len(pending),
            shard_size=len(shard),
            wave_id=wave_id,
        )
