"""Alert: one case update for one subscriber; AlertBatch: many of them, as the topic carries them.

The ``alerts`` topic carries :class:`AlertBatch` records: one case update for up to a
sink batch of subscribers of one partition and one language, the case written once. An
:class:`Alert` is what a sink is handed, one per person, expanded from a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, StringConstraints

from ._base import Event, stable_id, stable_ids, trusted_maker
from .case_update import PublicCase
from .geography import Region
from .vocabulary import Language

__all__ = [
    "BATCH_FIELDS",
    "Alert",
    "AlertBatch",
    "DigestEntry",
    "MatchReason",
    "Recipient",
    "alert_id_for",
    "alert_ids_for",
    "batch_id_for",
    "digest_event_id_for",
    "reminded_event_id",
    "reminder_event_id_for",
]


_REMINDER = ".reminder"


def reminder_event_id_for(event_id: str) -> str:
    """The event id a reminder of the update ``event_id`` is sent under: its own alert ids."""
    return event_id + _REMINDER


def reminded_event_id(reminder_event_id: str) -> str:
    """The update a reminder's event id (:func:`reminder_event_id_for`) reminds of."""
    return reminder_event_id.removesuffix(_REMINDER)


def digest_event_id_for(frequency: str, due: datetime) -> str:
    """The event id of the digests due at ``due``: a person gets one digest per due time."""
    return "dig-" + stable_id(frequency, due.astimezone(UTC).isoformat(), length=24)


def alert_id_for(event_id: str, subscriber_id: str) -> str:
    """The alert id of (event, subscriber): the same on every replay, on every worker."""
    return "alr-" + stable_id(event_id, subscriber_id, length=32)


def alert_ids_for(event_id: str) -> Callable[[str], str]:
    """:func:`alert_id_for` of ``event_id`` as a function of the subscriber id, for many people."""
    ids = stable_ids(event_id, length=32)
    return lambda subscriber_id: "alr-" + ids(subscriber_id)


def batch_id_for(
    event_id: str, partition: int, language: str, index: int, release_at: datetime | None = None
) -> str:
    """The id of the ``index``-th alert batch of an update for one partition, language and release time.

    Batches sent at once (``release_at`` None) keep the ids they always had.
    """
    if release_at is None:
        return "alb-" + stable_id(event_id, partition, language, index, length=32)
    when = release_at.astimezone(UTC).isoformat()
    return "alb-" + stable_id(event_id, partition, language, index, when, length=32)


_EmailShape = Annotated[
    str,
    StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320),
    Field(json_schema_extra={"format": "email"}),
]


class MatchReason(Event):
    """Why the person got the alert, shown to them in the email."""

    worldwide: bool = False
    """They follow cases everywhere."""
    region: Region | None = None
    """The followed region the case is in."""
    country: str | None = None
    """The followed country the case is in."""
    interests: tuple[str, ...] = ()
    """Followed interests among the case's issues."""
    brands: tuple[str, ...] = ()
    """Followed brands among the case's brands (as the case spells them)."""


class DigestEntry(Event):
    """One case of a digest: the latest update of it the person has not had yet."""

    event_id: str
    """The update's idempotency key."""
    case: PublicCase
    """The case as of that update (the public projection)."""
    earlier: tuple[str, ...] = ()
    """The statuses the case went through before it since the last digest, oldest first."""


class Alert(Event):
    """A case update addressed to one subscriber, ready for a sink to deliver."""

    schema_version: Literal[1] = 1
    """Version of this schema; a reader rejects versions it does not know."""
    alert_id: str
    """Deterministic: ``alert_id_for(event_id, subscriber_id)``; sinks deduplicate on it."""
    event_id: str
    """The case update's idempotency key."""
    subscriber_id: str
    """Who it is for."""
    email: _EmailShape
    """Where it goes: the subscription's address, fully checked when the subscription was
    read; here only its shape is checked, as this runs once per alert at every stage."""
    name: str | None = None
    """How to greet them."""
    language: Language
    """Their language."""
    case: PublicCase
    """What changed (the public projection: internal fields are not here)."""
    reason: MatchReason
    """Why it matched."""
    home_country: str | None = None
    """Where they live, if they said: picks their variant of the action call."""
    follow_up: bool = False
    """A follow-up for someone who acted on the case: it has reached remedy_won or closed,
    and the email tells them what their action achieved."""
    reminder: bool = False
    """A reminder of the case's action call, before its deadline, for someone who got the
    call and has not said they acted."""
    digest: tuple[DigestEntry, ...] = ()
    """A digest: every case here, open action calls first (``case`` is the first of them)."""
    digest_frequency: Literal["daily", "weekly"] | None = None
    """Which digest the person chose, when this is one."""
    created_at: AwareDatetime
    """When the match was made."""


class Recipient(Event):
    """One person of an :class:`AlertBatch`: what their alert has that the others' do not."""

    alert_id: str
    """Deterministic: ``alert_id_for(event_id, subscriber_id)``; sinks deduplicate on it."""
    subscriber_id: str
    """Who it is for."""
    email: _EmailShape
    """Where it goes (shape only; fully checked when the subscription was read)."""
    name: str | None = None
    """How to greet them."""
    reason: MatchReason
    """Why it matched."""
    home_country: str | None = None
    """Where they live, if they said: picks their variant of the action call."""


class AlertBatch(Event):
    """One case update for several subscribers of one partition who speak one language.

    Topic ``alerts``: key ``batch_id``, on the partition of the subscribers (the same
    partition as their subscriptions). A case update reaching many people is carried in a
    few of these instead of one record per person, so the per-record cost of Kafka and of
    the stream processor is paid per batch; every person still has their own alert id,
    delivery record and never-twice guarantee.
    """

    schema_version: Literal[1] = 1
    """Version of this schema; a reader rejects versions it does not know."""
    batch_id: str
    """Deterministic: ``batch_id_for(event_id, partition, language, index, release_at)``."""
    event_id: str
    """The case update's idempotency key."""
    language: Language
    """The recipients' language."""
    case: PublicCase
    """What changed (the public projection: internal fields are not here)."""
    follow_up: bool = False
    """Follow-ups for people who acted on the case (see :attr:`Alert.follow_up`)."""
    reminder: bool = False
    """Reminders of the action call (see :attr:`Alert.reminder`); held until ``release_at``."""
    digest: tuple[DigestEntry, ...] = ()
    """A digest's cases (see :attr:`Alert.digest`); ``event_id`` is then the digest's
    (:func:`digest_event_id_for`) and ``case`` the first entry's."""
    digest_frequency: Literal["daily", "weekly"] | None = None
    """Which digest, when this is one."""
    created_at: AwareDatetime
    """When the match was made."""
    release_at: AwareDatetime | None = None
    """Not to be handed to a sink before this instant (the update's wave); at once if None."""
    wave_id: str | None = None
    """The wave holding this batch, by which a coordinator can cancel it before ``release_at``."""
    recipients: tuple[Recipient, ...] = Field(min_length=1)
    """Who gets it, each with their own alert id and reason."""

    def alerts(self) -> list[Alert]:
        """One :class:`Alert` per recipient, sharing this batch's case.

        Built without validating again: every value was validated as part of this batch.
        """
        alert = trusted_maker(
            Alert,
            {
                "schema_version": 1,
                "alert_id": "",
                "event_id": self.event_id,
                "subscriber_id": "",
                "email": "",
                "name": None,
                "language": self.language,
                "case": self.case,
                "reason": None,
                "home_country": None,
                "follow_up": self.follow_up,
                "reminder": self.reminder,
                "digest": self.digest,
                "digest_frequency": self.digest_frequency,
                "created_at": self.created_at,
            },
        )
        return [
            alert(
                alert_id=r.alert_id,
                subscriber_id=r.subscriber_id,
                email=r.email,
                name=r.name,
                reason=r.reason,
                home_country=r.home_country,
            )
            for r in self.recipients
        ]

    @classmethod
    def of(cls, alerts: Sequence[Alert], batch_id: str) -> list[AlertBatch]:
        """The inverse of :meth:`alerts`: ``alerts`` as batches named ``batch_id``.

        One batch per run of alerts that share the :data:`BATCH_FIELDS`. Built without
        validating again: every value was validated as part of an alert.
        """
        runs: list[list[Alert]] = []
        for alert in alerts:
            if runs and all(_same(getattr(runs[-1][0], f), getattr(alert, f)) for f in BATCH_FIELDS):
                runs[-1].append(alert)
            else:
                runs.append([alert])
        return [
            cls.model_construct(
                batch_id=batch_id,
                recipients=tuple(
                    Recipient.trusted(**{f: getattr(a, f) for f in _PERSONAL_FIELDS}) for a in run
                ),
                **{f: getattr(run[0], f) for f in BATCH_FIELDS},
            )
            for run in runs
        ]

    def only(self, alert_ids: frozenset[str]) -> AlertBatch:
        """This batch narrowed to the recipients in ``alert_ids`` (for a dead letter)."""
        kept = tuple(r for r in self.recipients if r.alert_id in alert_ids)
        return self.model_copy(update={"recipients": kept})


BATCH_FIELDS = tuple(f for f in Alert.model_fields if f in AlertBatch.model_fields and f != "schema_version")
"""The fields of an :class:`Alert` that its :class:`AlertBatch` holds once for all its recipients."""
_PERSONAL_FIELDS = tuple(Recipient.model_fields)
"""The fields of an :class:`Alert` that its :class:`Recipient` holds."""


def _same(a: object, b: object) -> bool:
    return a is b or a == b
