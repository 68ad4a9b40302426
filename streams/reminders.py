"""Reminders of an action call before its deadline, and the latest status of each case.

When a coordinator asks for one (``ActionCall.remind_hours_before``), the matcher cuts,
beside an update's alerts, reminder batches for the same people: held (like a wave's) until
``deadline − hours`` of each person's deadline (their variant's), with alert ids of their
own (:func:`schemas.reminder_event_id_for`) and the wave id :func:`reminders_wave_id_for`,
by which a coordinator can call them off with ``mobilise waves cancel``. When one is
released, the delivery stage hands it only to people who (:class:`ReminderScreen`):

* got the call itself (its alert id is in ``sent``),
* have not said they acted on it (no ``taken_id_for(action_id, subscriber_id)`` on record),
* are still subscribed and confirmed,

and only if the case has not been won or closed since (:class:`CaseStatuses`). Everyone
else gets a ``cancelled`` delivery event saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import (
    Alert,
    AlertBatch,
    CaseStatus,
    MatchReason,
    PublicCase,
    Subscription,
    action_id_for,
    alert_id_for,
    reminded_event_id,
    taken_id_for,
)
from schemas._base import stable_id

from .shards import SubscriberShards
from .tables import PartitionedTable, on_partition

__all__ = [
    "CLOSING_STATUSES",
    "CaseStatuses",
    "ReminderScreen",
    "reminder_groups",
    "reminders_wave_id_for",
]

CLOSING_STATUSES = frozenset({CaseStatus.REMEDY_WON, CaseStatus.CLOSED})
"""After these, a reminder to act on the case is moot."""


def reminders_wave_id_for(case_id: str, action_id: str) -> str:
    """The wave id of the reminders of one action call: cancel it to call them all off."""
    return "rem-" + stable_id(case_id, action_id, length=20)


def reminder_groups(
    case: PublicCase,
    people: Iterable[tuple[Subscription, MatchReason]],
    now: datetime,
    released_at: Callable[[Subscription], datetime | None],
) -> list[tuple[datetime, list[tuple[Subscription, MatchReason]]]]:
    """``people`` who get a reminder of ``case``'s call, grouped by when, earliest first.

    A person gets one when the call asks for reminders and they have a deadline (their
    variant's, else the call's), and their reminder time (``deadline − remind_hours_before``)
    is still ahead of ``now`` and after the alert itself is released (``released_at``: its
    wave's time for them, or None for at once). The order of people is kept.
    """
    call = case.action_call
    if call is None or call.remind_hours_before is None:
        return []
    before = timedelta(hours=call.remind_hours_before)
    groups: dict[datetime, list[tuple[Subscription, MatchReason]]] = {}
    for subscription, reason in people:
        deadline = call.deadline_for(subscription.home_country)
        if deadline is None:
            continue
        when = deadline - before
        released = released_at(subscription) or now
        if when > now and when > released:
            groups.setdefault(when, []).append((subscription, reason))
    return [(when, groups[when]) for when in sorted(groups)]


def _key(case_id: str, partition: int) -> str:
    return f"{case_id}@{partition}"


def _instant(at: datetime) -> str:
    # In UTC, so that comparing the strings compares the instants, whatever offsets were given.
    return at.astimezone(UTC).isoformat()


class CaseStatuses:
    """The latest status of every case, as seen on each partition (every update reaches all).

    Table ``case-status``, key ``<case_id>@<partition>``: ``{"partition": p, "status": s,
    "occurred_at": iso, "event_id": e}``. An older update read later does not overwrite a
    newer one.
    """

    def __init__(self, table: PartitionedTable) -> None:
        self._table = table

    def record(self, case: PublicCase, event_id: str, partition: int) -> None:
        """Remember ``case``'s status on ``partition`` if it is the latest known."""
        key = _key(case.case_id, partition)
        with on_partition(partition):
            known = self._table.get(key)
            if isinstance(known, dict) and known.get("occurred_at", "") > _instant(case.occurred_at):
                return
            self._table[key] = {
                "partition": partition,
                "status": case.status.value,
                "occurred_at": _instant(case.occurred_at),
                "event_id": event_id,
            }

    def latest(self, case_id: str, partition: int) -> dict[str, Any] | None:
        """The latest update of ``case_id`` known on ``partition``, or None."""
        with on_partition(partition):
            row = self._table.get(_key(case_id, partition))
        return row if isinstance(row, dict) else None


class ReminderScreen:
    """Says, per person of a released batch, why they should not get it now (or None).

    For reminders: the rules of the module docstring. For any held batch (a wave's too):
    the person must still be subscribed and confirmed.
    """

    def __init__(
        self,
        *,
        shards: SubscriberShards,
        acted: PartitionedTable,
        statuses: CaseStatuses,
        was_sent: Callable[[str], bool],
    ) -> None:
        self._shards = shards
        self._acted = acted
        self._statuses = statuses
        self._was_sent = was_sent

    def batch_reason(self, batch: AlertBatch, partition: int) -> str | None:
        """Why nobody of ``batch`` should get it (a reminder of a case closed since), or None."""
        if not batch.reminder:
            return None
        latest = self._statuses.latest(batch.case.case_id, partition)
        if (
            latest is not None
            and latest.get("status") in {s.value for s in CLOSING_STATUSES}
            and latest.get("occurred_at", "") >= _instant(batch.case.occurred_at)
        ):
            return f"no reminder: the case is {latest['status']} since"
        return None

    def person_reason(self, batch: AlertBatch, alert: Alert, partition: int) -> str | None:
        """Why ``alert``'s person should not get ``batch`` now, or None."""
        shard = self._shards.shard(partition)
        subscription = shard.get(alert.subscriber_id) if shard is not None else None
        if subscription is None or not subscription.confirmed:
            return "not subscribed any more"
        if not batch.reminder:
            return None
        if not self._was_sent(alert_id_for(reminded_event_id(batch.event_id), alert.subscriber_id)):
            return "no reminder: the call itself was not delivered to them"
        call = batch.case.action_call
        if call is not None:
            taken = taken_id_for(action_id_for(batch.case.case_id, call), alert.subscriber_id)
            with on_partition(partition):
                row = self._acted.get(alert.subscriber_id)
            if isinstance(row, dict) and taken in (row.get("taken") or {}):
                return "no reminder: they said they acted"
        return None
