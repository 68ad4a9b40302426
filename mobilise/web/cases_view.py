"""Each case's timeline and delivery counts: a fold of ``case-updates`` and ``deliveries``.

The coordinators' API and console answer "where does this case stand, and how many
people did it reach" from this view, which every web process builds for itself by
reading both topics from the beginning (:class:`~mobilise.web.topic_view.TopicView`).

Counts are of distinct alerts (an alert is one case update for one subscriber), from the
delivery events recorded for them:

* ``matched``: alerts with any delivery event (alerts still on their way are not counted);
* ``sent``: alerts the sink took (``accepted``) or had already sent (``duplicate``);
* ``failed``: alerts dead-lettered (a permanent failure) and never sent since, e.g. by a replay;
* ``bounced``: sent alerts the provider then reported as ``bounced``, ``blocked`` or
  ``dropped``: they did not reach the person.

Every record is folded idempotently (updates by event id, deliveries by alert id), so a
record read twice, or folded once when published here and again when read back, counts once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from pydantic import ValidationError

from mobilise.snapshot import StoredRecord
from schemas import CaseStatus, CaseUpdate, DeliveryEvent, DeliveryOutcome

from .answers import Answer

__all__ = [
    "BOUNCED_OUTCOMES",
    "SENT_OUTCOMES",
    "CaseCounts",
    "CaseDetail",
    "CaseList",
    "CaseSummary",
    "CasesView",
    "TimelineEntry",
]

log = structlog.get_logger(__name__)

SENT_OUTCOMES = frozenset({DeliveryOutcome.ACCEPTED, DeliveryOutcome.DUPLICATE})
"""Outcomes that count an alert as sent."""
BOUNCED_OUTCOMES = frozenset({DeliveryOutcome.BOUNCED, DeliveryOutcome.BLOCKED, DeliveryOutcome.DROPPED})
"""Provider outcomes that count a sent alert as bounced: it did not reach the person."""

_SENT, _DEAD, _BOUNCED = 1, 2, 4


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
    """alert id → _SENT | _DEAD | _BOUNCED bits seen."""
    matched: int = 0
    sent: int = 0
    failed: int = 0
    bounced: int = 0

    def add(self, alert_id: str, outcome: DeliveryOutcome) -> None:
        old = self.flags.get(alert_id)
        bit = (
            _SENT if outcome in SENT_OUTCOMES else _DEAD if outcome is DeliveryOutcome.DEAD_LETTERED else 0
        ) | (_BOUNCED if outcome in BOUNCED_OUTCOMES else 0)
        new = (old or 0) | bit
        if old is not None and new == old:
            return
        self.flags[alert_id] = new
        before, after = _categories(old), _categories(new)
        self.matched += after[0] - before[0]
        self.sent += after[1] - before[1]
        self.failed += after[2] - before[2]
        self.bounced += after[3] - before[3]

    def counts(self) -> CaseCounts:
        return CaseCounts(matched=self.matched, sent=self.sent, failed=self.failed, bounced=self.bounced)


def _categories(flags: int | None) -> tuple[int, int, int, int]:
    """(matched, sent, failed, bounced) membership of an alert with ``flags`` (None: unseen)."""
    if flags is None:
        return (0, 0, 0, 0)
    sent = bool(flags & _SENT)
    return (1, int(sent), int(bool(flags & _DEAD) and not sent), int(bool(flags & _BOUNCED)))


class CasesView:
    """Cases and their counts, folded from the case-updates and deliveries topics.

    Args:
        case_updates: Name of the case-updates topic.
        deliveries: Name of the deliveries topic.

    """

    def __init__(self, *, case_updates: str, deliveries: str) -> None:
        self._case_updates = case_updates
        self._deliveries_topic = deliveries
        self._cases: dict[str, _Case] = {}
        self._deliveries: dict[str, _Deliveries] = {}
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
        self._deliveries.setdefault(event.case_id, _Deliveries()).add(event.alert_id, event.outcome)

    def event(self, event_id: str) -> CaseUpdate | None:
        """The update ``event_id``, whatever its case; None if it has not been folded."""
        return self._events.get(event_id)

    def latest_update(self, case_id: str) -> CaseUpdate | None:
        """The update of ``case_id`` that occurred last; None if it has none."""
        case = self._cases.get(case_id)
        return case.ordered()[-1] if case is not None else None

    def counts(self, case_id: str) -> CaseCounts:
        """The counts of ``case_id`` (all zero for a case nothing was delivered for)."""
        deliveries = self._deliveries.get(case_id)
        return deliveries.counts() if deliveries else CaseCounts(matched=0, sent=0, failed=0, bounced=0)

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
