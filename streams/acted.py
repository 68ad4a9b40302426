"""Who acted on which case, per partition: actions-taken → a changelog-backed table and an index.

The table ``acted-cases`` has one row per subscriber of the partition who said they acted:
``{"partition": p, "taken": {taken_id: case_id, ...}}``. It is keyed by subscriber_id, like
the ``subscribers`` table, so the row lives on the partition of the person's subscription,
moves with their shard on a rebalance, and an erasure drops it in one step. In memory each
owned partition has ``case_id → subscriber ids``, rebuilt from the table after every
rebalance; when a case is won or closed, that index says who gets a follow-up.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog

from schemas import ActionTaken, CaseStatus, MatchReason, PublicCase, Subscription

from .matching import SubscriberIndex, reason_for
from .records import DeadLetters, RawEvent
from .tables import PartitionedTable, on_partition

__all__ = ["FOLLOW_UP_STATUSES", "ActedCases", "ActionIntake", "follow_ups_for"]

log = structlog.get_logger(__name__)

FOLLOW_UP_STATUSES = frozenset({CaseStatus.REMEDY_WON, CaseStatus.CLOSED})
"""The statuses that close the loop: everyone who acted on the case hears how it ended."""


def follow_ups_for(
    case: PublicCase, acted: Iterable[str], shard: SubscriberIndex
) -> list[tuple[Subscription, MatchReason]]:
    """The people of ``shard`` among ``acted`` who get ``case`` as a follow-up, with their reason.

    Nobody does unless the case reached one of :data:`FOLLOW_UP_STATUSES`. Of those who acted,
    only people still subscribed (in the shard: erased and suppressed people are not) and
    confirmed get one, whatever their filters say: they acted, so they hear the outcome. The
    reason is the match rule's when their filters match too, else an empty one (the email
    says they acted). Sorted by subscriber id, so a re-match builds the same batches.
    """
    if case.status not in FOLLOW_UP_STATUSES:
        return []
    found = []
    for subscriber_id in sorted(set(acted)):
        subscription = shard.get(subscriber_id)
        if subscription is None or not subscription.confirmed:
            continue
        found.append((subscription, reason_for(subscription, case) or MatchReason()))
    return found


def _taken_of(row: Any) -> dict[str, str]:
    if isinstance(row, dict) and isinstance(row.get("taken"), dict):
        return {k: v for k, v in row["taken"].items() if isinstance(k, str) and isinstance(v, str)}
    return {}


class ActedCases:
    """Who acted on which case, on the partitions this worker owns.

    The table is the durable copy (a restart or a rebalance loses nothing); the index of
    each owned partition is rebuilt from it by :meth:`assign`.
    """

    def __init__(self, table: PartitionedTable) -> None:
        self._table = table
        self._by_case: dict[int, dict[str, set[str]]] = {}

    @property
    def partitions(self) -> frozenset[int]:
        """Partitions whose index is loaded here."""
        return frozenset(self._by_case)

    def assign(self, partitions: Iterable[int], stored: Iterable[tuple[str, Any]]) -> int:
        """Keep exactly ``partitions``; build the new ones from the table rows ``stored``.

        Returns how many people of the owned partitions acted on something.
        """
        wanted = set(partitions)
        for gone in set(self._by_case) - wanted:
            del self._by_case[gone]
        fresh: dict[int, dict[str, set[str]]] = {p: {} for p in wanted - set(self._by_case)}
        if fresh:
            for subscriber_id, row in stored:
                index = fresh.get(row["partition"]) if isinstance(row, dict) else None
                if index is None:
                    continue
                for case_id in _taken_of(row).values():
                    index.setdefault(case_id, set()).add(subscriber_id)
            self._by_case.update(fresh)
        return len({s for p in wanted for people in self._by_case[p].values() for s in people})

    def who_acted(self, partition: int, case_id: str) -> frozenset[str]:
        """Subscriber ids of ``partition`` who said they acted on ``case_id``."""
        return frozenset(self._by_case.get(partition, {}).get(case_id, ()))

    def record(self, taken: ActionTaken, partition: int) -> bool:
        """Remember ``taken`` on ``partition``; False if its ``taken_id`` was on record already.

        The same taken_id twice (a second click, a replay) changes nothing.
        """
        subscriber_id = taken.subscriber_id
        with on_partition(partition):
            known = _taken_of(self._table.get(subscriber_id))
            if taken.taken_id in known:
                return False
            self._table[subscriber_id] = {
                "partition": partition,
                "taken": {**known, taken.taken_id: taken.case_id},
            }
        index = self._by_case.get(partition)
        if index is not None:  # else the table has it, and the index is built when the partition comes
            index.setdefault(taken.case_id, set()).add(subscriber_id)
        return True

    def forget(self, subscriber_id: str, partition: int) -> bool:
        """Erase everything recorded of ``subscriber_id``; False if nothing was."""
        with on_partition(partition):
            row = self._table.get(subscriber_id)
            if row is None:
                return False
            self._table.pop(subscriber_id, None)
        index = self._by_case.get(partition, {})
        for case_id in set(_taken_of(row).values()):
            people = index.get(case_id)
            if people is not None:
                people.discard(subscriber_id)
                if not people:
                    del index[case_id]
        return True


class ActionIntake:
    """Applies records of the actions-taken topic to the acted state of their partition.

    * A valid ActionTaken of a known subscriber (subscribed or suppressed) is recorded,
      once per ``taken_id``: applying the same record twice gives the same state.
    * One for a person the partition does not know (erased, or never subscribed) is logged
      and left out: erasure removed their data, so it is not brought back, not even into
      dead-letters.
    * An invalid record, one whose key is not its subscriber_id (it would sit on another
      partition than the person's shard), or one of a partition not loaded here goes to
      dead-letters with the reason.
    """

    stage = "actions-taken"

    def __init__(
        self, *, acted: ActedCases, subscribers: PartitionedTable, dead_letters: DeadLetters
    ) -> None:
        self._acted = acted
        self._subscribers = subscribers
        self._dead_letters = dead_letters

    async def process(self, event: RawEvent) -> None:
        """Record one "I did this"."""
        message = event.message
        partition = message.partition
        if partition not in self._acted.partitions:
            await self._dead_letters.send(
                event, stage=self.stage, reason=f"partition {partition} is not loaded on this worker"
            )
            return
        taken = await self._dead_letters.read(ActionTaken, event, stage=self.stage)
        if taken is None:
            return
        key = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else None
        if key != taken.subscriber_id:
            await self._dead_letters.send(
                event,
                stage=self.stage,
                reason=f"record key {key!r} is not the subscriber_id {taken.subscriber_id!r}; "
                "produce actions-taken keyed by subscriber_id, so that it is on the partition of the "
                "person's subscription",
            )
            return
        bound = log.bind(
            taken_id=taken.taken_id,
            case_id=taken.case_id,
            subscriber_id=taken.subscriber_id,
            partition=partition,
        )
        with on_partition(partition):
            known = self._subscribers.get(taken.subscriber_id) is not None
        if not known:
            bound.warning("action_taken.unknown_subscriber", detail="erased, or never subscribed")
            return
        if self._acted.record(taken, partition):
            bound.info("action_taken.recorded", action_id=taken.action_id)
        else:
            bound.info("action_taken.duplicate")
