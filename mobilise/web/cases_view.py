"""Each case's timeline, delivery and action counts: case-updates, deliveries and actions-taken folded.

The coordinators' API and console answer "where does this case stand, how many people
did it reach, and how many acted" from this view, which every web process builds for
itself by reading the topics from the beginning (:class:`~mobilise.web.topic_view.TopicView`).

Counts are of distinct alerts (an alert is one case update for one subscriber), from the
delivery events recorded for them:

* ``matched``: alerts with any delivery event (alerts still on their way are not counted);
* ``sent``: alerts the sink took (``accepted``) or had already sent (``duplicate``);
* ``failed``: alerts dead-lettered (a permanent failure) and never sent since, e.g. by a replay;
* ``bounced``: sent alerts the provider then reported as ``bounced``, ``blocked`` or
  ``dropped``: they did not reach the person;
* ``opened``: alerts the provider reported ``opened`` (or ``clicked``); null while no open
  was ever reported for the case, as with a sink that cannot tell (outbox, SMTP);
* ``acted``: people who said they did one of the case's action calls (distinct
  ``taken_id``: a person counts once per action, however often they click).

Each action call of a case (:func:`~schemas.action_id_for` names it across the updates
that repeat it) has its own counters (:class:`ActionCounts`): ``sent`` and ``opened`` of
the alerts of the updates carrying it, ``acted``, its goal and the progress toward it, and
who acted per UN M49 region of where they live.

Every record is folded idempotently (updates by event id, deliveries by alert id, actions
taken by taken id), so a record read twice, or folded once when published here and again
when read back, counts once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from pydantic import ValidationError

from mobilise.snapshot import StoredRecord
from schemas import (
    ActionKind,
    ActionTaken,
    CaseStatus,
    CaseUpdate,
    DeliveryEvent,
    DeliveryOutcome,
    action_id_for,
)

from .answers import Answer

__all__ = [
    "BOUNCED_OUTCOMES",
    "OPENED_OUTCOMES",
    "SENT_OUTCOMES",
    "UNKNOWN_REGION",
    "ActionCounts",
    "CaseCounts",
    "CaseDetail",
    "CaseList",
    "CaseSummary",
    "CasesView",
    "GoalInfo",
    "TimelineEntry",
]

log = structlog.get_logger(__name__)

SENT_OUTCOMES = frozenset({DeliveryOutcome.ACCEPTED, DeliveryOutcome.DUPLICATE})
"""Outcomes that count an alert as sent."""
BOUNCED_OUTCOMES = frozenset({DeliveryOutcome.BOUNCED, DeliveryOutcome.BLOCKED, DeliveryOutcome.DROPPED})
"""Provider outcomes that count a sent alert as bounced: it did not reach the person."""
OPENED_OUTCOMES = frozenset({DeliveryOutcome.OPENED, DeliveryOutcome.CLICKED})
"""Provider outcomes that count an alert as opened (a click is an open that tracking missed)."""
UNKNOWN_REGION = "unknown"
"""The key of :attr:`ActionCounts.by_region` for people who did not say where they live."""

_SENT, _DEAD, _BOUNCED, _OPENED = 1, 2, 4, 8


class CaseCounts(Answer):
    """What happened to a case's alerts, over all its updates."""

    matched: int
    """Alerts with a delivery event."""
    sent: int
    """Alerts accepted by the sink (or already sent)."""
    failed: int
    """Alerts dead-lettered and not sent since."""
    bounced: int
    """Sent alerts the provider reported bounced, blocked or dropped."""
    opened: int | None
    """Alerts the provider reported opened (or clicked); null when no open was ever reported
    for the case (a sink that cannot tell, or open tracking off)."""
    acted: int
    """People who said they did one of the case's action calls, once per person and action."""


class GoalInfo(Answer):
    """What the coordinators aim for with an action call."""

    count: int
    """The number to reach."""
    label: dict[str, str] | None
    """What is counted, per language code, e.g. ``{"en": "emails to H&M"}``; null if not said."""


class ActionCounts(Answer):
    """One action call of a case, over every update that carried it."""

    action_id: str
    """The action (``schemas.action_id_for``): the same across updates repeating the call."""
    kind: ActionKind
    """What people are asked to do (as the latest update carrying it says)."""
    goal: GoalInfo | None
    """Its goal, if the latest update carrying it sets one."""
    sent: int
    """Alerts of the updates carrying it that the sink took (or had already sent)."""
    opened: int | None
    """Of those, alerts the provider reported opened (or clicked); null when the provider
    reported no open for them (a sink that cannot tell, or open tracking off)."""
    acted: int
    """People who said they did it (or something else for the case), each counted once."""
    progress: float | None
    """``acted / goal.count`` (1.0 is the goal reached; it may pass it); null without a goal."""
    by_region: dict[str, int]
    """People who acted, per UN M49 region slug of where they live
    (``"unknown"`` for those who did not say)."""


class TimelineEntry(Answer):
    """One update of a case."""

    event_id: str
    """The update's id."""
    status: CaseStatus
    """The status it set."""
    title: dict[str, str]
    """Its headline, per language code."""
    occurred_at: datetime
    """When the status changed."""
    published_by: str
    """Who published it."""


class CaseSummary(Answer):
    """A case as listed: its latest status and its counts."""

    case_id: str
    """The case."""
    status: CaseStatus
    """Its latest status (the update that occurred last)."""
    title: dict[str, str]
    """The latest update's headline, per language code."""
    country: str
    """ISO 3166-1 alpha-2 code of the latest update."""
    occurred_at: datetime
    """When the latest update occurred."""
    updates: int
    """How many updates the case has had."""
    counts: CaseCounts
    """What happened to its alerts."""


class CaseDetail(CaseSummary):
    """A case with its whole timeline."""

    brands: list[str]
    """Brands named by the latest update."""
    issues: list[str]
    """Issues of the latest update."""
    actions: list[ActionCounts]
    """Each action call of the case, in the order it first occurred, with its counters."""
    timeline: list[TimelineEntry]
    """Every update, in the order they occurred (oldest first)."""


class CaseList(Answer):
    """Every case, the one updated most recently first."""

    cases: list[CaseSummary]
    """The cases."""


@dataclass
class _Case:
    updates: dict[str, tuple[int, CaseUpdate]] = field(default_factory=dict)
    """event id → (arrival order, update)."""

    def ordered(self) -> list[CaseUpdate]:
        return [u for _, u in sorted(self.updates.values(), key=lambda item: (item[1].occurred_at, item[0]))]


@dataclass
class _Deliveries:
    flags: dict[str, int] = field(default_factory=dict)
    """alert id → _SENT | _DEAD | _BOUNCED | _OPENED bits seen."""
    matched: int = 0
    sent: int = 0
    failed: int = 0
    bounced: int = 0
    opened: int = 0
    by_event: dict[str, list[int]] = field(default_factory=dict)
    """event id → [sent, opened] of its alerts."""

    def add(self, alert_id: str, event_id: str, outcome: DeliveryOutcome) -> None:
        old = self.flags.get(alert_id)
        bit = (
            (_SENT if outcome in SENT_OUTCOMES else _DEAD if outcome is DeliveryOutcome.DEAD_LETTERED else 0)
            | (_BOUNCED if outcome in BOUNCED_OUTCOMES else 0)
            | (_OPENED if outcome in OPENED_OUTCOMES else 0)
        )
        new = (old or 0) | bit
        if old is not None and new == old:
            return
        self.flags[alert_id] = new
        before, after = _categories(old), _categories(new)
        self.matched += after[0] - before[0]
        self.sent += after[1] - before[1]
        self.failed += after[2] - before[2]
        self.bounced += after[3] - before[3]
        self.opened += after[4] - before[4]
        event = self.by_event.setdefault(event_id, [0, 0])
        event[0] += after[1] - before[1]
        event[1] += after[4] - before[4]


def _categories(flags: int | None) -> tuple[int, int, int, int, int]:
    """(matched, sent, failed, bounced, opened) membership of an alert with ``flags`` (None: unseen)."""
    if flags is None:
        return (0, 0, 0, 0, 0)
    sent = bool(flags & _SENT)
    return (
        1,
        int(sent),
        int(bool(flags & _DEAD) and not sent),
        int(bool(flags & _BOUNCED)),
        int(bool(flags & _OPENED)),
    )


@dataclass
class _Actions:
    taken: dict[str, ActionTaken] = field(default_factory=dict)
    """taken id → the latest record of it (a person's second click may say something else)."""

    def add(self, record: ActionTaken) -> None:
        known = self.taken.get(record.taken_id)
        if known is None or record.at > known.at:
            self.taken[record.taken_id] = record

    def by_region(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.taken.values():
            key = record.region.value if record.region is not None else UNKNOWN_REGION
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))


class CasesView:
    """Cases and their counts, folded from the case-updates and deliveries topics.

    Args:
        case_updates: Name of the case-updates topic.
        deliveries: Name of the deliveries topic.
        actions_taken: Name of the actions-taken topic; None for a view without it.

    """

    def __init__(self, *, case_updates: str, deliveries: str, actions_taken: str | None = None) -> None:
        self._case_updates = case_updates
        self._deliveries_topic = deliveries
        self._actions_taken = actions_taken
        self._cases: dict[str, _Case] = {}
        self._deliveries: dict[str, _Deliveries] = {}
        self._actions: dict[str, _Actions] = {}
        """action id → who acted on it."""
        self._acted_by_case: dict[str, set[str]] = {}
        """case id → taken ids of its actions."""
        self._events: dict[str, CaseUpdate] = {}
        self._arrivals = itertools.count()
        self.skipped = 0
        """Records that could not be read (the pipeline dead-letters them; the view skips them)."""

    def fold(self, record: StoredRecord) -> None:
        """Apply one record of either topic; an unreadable one is counted and skipped."""
        if record.value is None:
            return
        try:
            if record.topic == self._case_updates:
                self.add_update(CaseUpdate.model_validate_json(record.value))
            elif record.topic == self._deliveries_topic:
                self.add_delivery(DeliveryEvent.model_validate_json(record.value))
            elif record.topic == self._actions_taken:
                self.add_taken(ActionTaken.model_validate_json(record.value))
        except ValidationError as exc:
            self.skipped += 1
            log.warning(
                "cases_view.record_skipped",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                error_count=exc.error_count(),
            )

    def add_update(self, update: CaseUpdate) -> None:
        """Add a case update to its case's timeline (once per event id)."""
        # The first update with an event id is the one the pipeline keeps; so does the view.
        if update.event_id in self._events:
            return
        self._events[update.event_id] = update
        case = self._cases.setdefault(update.case_id, _Case())
        case.updates[update.event_id] = (next(self._arrivals), update)

    def add_delivery(self, event: DeliveryEvent) -> None:
        """Count a delivery event towards its case."""
        self._deliveries.setdefault(event.case_id, _Deliveries()).add(
            event.alert_id, event.event_id, event.outcome
        )

    def add_taken(self, record: ActionTaken) -> None:
        """Count a person's "I did this" towards its action and case (once per taken id)."""
        self._actions.setdefault(record.action_id, _Actions()).add(record)
        self._acted_by_case.setdefault(record.case_id, set()).add(record.taken_id)

    def acted(self, action_id: str) -> int:
        """How many people said they did ``action_id``."""
        actions = self._actions.get(action_id)
        return len(actions.taken) if actions is not None else 0

    def event(self, event_id: str) -> CaseUpdate | None:
        """The update ``event_id``, whatever its case; None if it has not been folded."""
        return self._events.get(event_id)

    def latest_update(self, case_id: str) -> CaseUpdate | None:
        """The update of ``case_id`` that occurred last; None if it has none."""
        case = self._cases.get(case_id)
        return case.ordered()[-1] if case is not None else None

    def counts(self, case_id: str) -> CaseCounts:
        """The counts of ``case_id`` (all zero for a case nothing was delivered for)."""
        deliveries = self._deliveries.get(case_id) or _Deliveries()
        return CaseCounts(
            matched=deliveries.matched,
            sent=deliveries.sent,
            failed=deliveries.failed,
            bounced=deliveries.bounced,
            opened=deliveries.opened or None,
            acted=len(self._acted_by_case.get(case_id, ())),
        )

    def actions(self, case_id: str) -> list[ActionCounts]:
        """The counters of each action call of ``case_id``, in the order each first occurred."""
        case = self._cases.get(case_id)
        if case is None:
            return []
        deliveries = self._deliveries.get(case_id) or _Deliveries()
        calls: dict[str, list[CaseUpdate]] = {}
        for update in case.ordered():
            if update.action_call is not None:
                calls.setdefault(action_id_for(case_id, update.action_call), []).append(update)
        return [self._action(action_id, updates, deliveries) for action_id, updates in calls.items()]

    def _action(self, action_id: str, updates: list[CaseUpdate], deliveries: _Deliveries) -> ActionCounts:
        call = updates[-1].action_call
        assert call is not None  # only updates with a call are grouped
        per_event = [deliveries.by_event.get(u.event_id, [0, 0]) for u in updates]
        opened = sum(counts[1] for counts in per_event)
        acted = self.acted(action_id)
        goal = (
            GoalInfo(count=call.goal.count, label=dict(call.goal.label) if call.goal.label else None)
            if call.goal is not None
            else None
        )
        taken = self._actions.get(action_id)
        return ActionCounts(
            action_id=action_id,
            kind=call.kind,
            goal=goal,
            sent=sum(counts[0] for counts in per_event),
            opened=opened or None,
            acted=acted,
            progress=acted / goal.count if goal is not None else None,
            by_region=taken.by_region() if taken is not None else {},
        )

    def cases(self) -> CaseList:
        """Every case with at least one update, the one whose latest update occurred last first."""
        summaries = [self._summary(case_id, case.ordered()) for case_id, case in self._cases.items()]
        summaries.sort(key=lambda s: (s.occurred_at, s.case_id), reverse=True)
        return CaseList(cases=summaries)

    def case(self, case_id: str) -> CaseDetail | None:
        """The case's timeline, latest status and counts; None if it has no update."""
        case = self._cases.get(case_id)
        if case is None:
            return None
        ordered = case.ordered()
        latest = ordered[-1]
        return CaseDetail(
            **self._summary(case_id, ordered).model_dump(),
            brands=list(latest.brands),
            issues=list(latest.issues),
            actions=self.actions(case_id),
            timeline=[
                TimelineEntry(
                    event_id=u.event_id,
                    status=u.status,
                    title=dict(u.title),
                    occurred_at=u.occurred_at,
                    published_by=u.published_by,
                )
                for u in ordered
            ],
        )

    def _summary(self, case_id: str, ordered: list[CaseUpdate]) -> CaseSummary:
        latest = ordered[-1]
        return CaseSummary(
            case_id=case_id,
            status=latest.status,
            title=dict(latest.title),
            country=latest.country,
            occurred_at=latest.occurred_at,
            updates=len(ordered),
            counts=self.counts(case_id),
        )
