"""CaseUpdate: a coordinator's change of a case's status, with an optional action call."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, model_validator

from ._base import Event, stable_id
from .geography import Country, Region, region_of
from .vocabulary import ActionKind, CaseStatus, Interest, Language
from .wave import Wave

__all__ = [
    "ActionCall",
    "ActionGoal",
    "ActionTarget",
    "ActionVariant",
    "CaseUpdate",
    "Factory",
    "Localised",
    "PublicCase",
    "action_id_for",
]

Localised = Annotated[
    dict[Language, Annotated[str, Field(min_length=1, max_length=20_000)]],
    Field(min_length=1, description="Text per language code; at least one language."),
]
"""Text in one or more languages, keyed by language code."""

Slug = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


class Factory(Event):
    """The workplace where the violation happened."""

    name: Annotated[str, Field(min_length=1, max_length=300)]
    """The factory's name as workers and brands know it."""
    city: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """City or industrial zone."""


class ActionTarget(Event):
    """Who the action is aimed at: a brand's CEO, a store, an investor, a ministry."""

    name: Annotated[str, Field(min_length=1, max_length=300)]
    """Name of the person or body."""
    email: Annotated[str, Field(max_length=320)] | None = None
    """Address to write to, for email actions."""
    url: Annotated[str, Field(pattern=r"^https?://", max_length=2000)] | None = None
    """Petition, form or profile page."""
    address: Annotated[str, Field(max_length=500)] | None = None
    """Street address, for a protest at a store or office."""
    handle: Annotated[str, Field(max_length=200)] | None = None
    """Social media handle, for public posts."""


class ActionGoal(Event):
    """How many actions the coordinators aim for, e.g. 5,000 emails to the brand."""

    count: Annotated[int, Field(ge=1, le=100_000_000)]
    """The number to reach."""
    label: Localised | None = None
    """What is counted, per language, e.g. ``{"en": "emails to H&M"}``."""


class ActionVariant(Event):
    """A different ask for the people who live in some countries or regions.

    People in the Netherlands: protest at the Amsterdam store on Saturday; everyone else:
    email the brand. The fields left out are the call's own.
    """

    countries: tuple[Country, ...] = ()
    """For people who live in one of these countries."""
    regions: tuple[Region, ...] = ()
    """Or in one of these UN M49 regions."""
    kind: ActionKind | None = None
    """What these people are asked to do instead."""
    instructions: Localised | None = None
    """Their instructions, per language."""
    suggested_message: Localised | None = None
    """Their message to send or say, per language."""
    target: ActionTarget | None = None
    """Their target (the store in their city, say)."""
    deadline: AwareDatetime | None = None
    """Their deadline (the day of the protest)."""

    @model_validator(mode="after")
    def _names_a_place(self) -> ActionVariant:
        if not self.countries and not self.regions:
            raise ValueError("a variant applies to some countries or regions: give at least one")
        return self


class ActionCall(Event):
    """A call to act: what to do, to whom, by when; optionally a goal and regional variants."""

    kind: ActionKind
    """What people are asked to do."""
    instructions: Localised
    """What to do, per language."""
    target: ActionTarget
    """Who the action is aimed at."""
    deadline: AwareDatetime | None = None
    """When the action stops mattering; shown to people in the alert."""
    action_id: Slug | None = None
    """Names the action across updates, so that a person counts once however many alerts
    repeat the call; derived from the case, the kind and the target when left out."""
    suggested_message: Localised | None = None
    """A message people can send or say as it is, per language."""
    goal: ActionGoal | None = None
    """How many actions the coordinators aim for."""
    variants: tuple[ActionVariant, ...] = ()
    """Different asks for people in some places; the first that matches a person applies."""
    wave: Wave | None = None
    """When the alerts go out: held until then (one instant, or one local time in each
    subscriber's zone), so that a day of action lands everywhere together; at once if None."""
    remind_hours_before: Annotated[int, Field(ge=1, le=24 * 60)] | None = None
    """Ask for a reminder: this many hours before a person's deadline, everyone who got the
    call and has not said they acted gets one reminder. Needs a deadline (the call's, or a
    variant's: people without one get none). None: no reminders."""

    @model_validator(mode="after")
    def _reminder_needs_deadline(self) -> ActionCall:
        if self.remind_hours_before is not None and not (
            self.deadline is not None or any(v.deadline is not None for v in self.variants)
        ):
            raise ValueError(
                "remind_hours_before needs a deadline: give the action call (or its variants) a "
                "deadline, or leave remind_hours_before out"
            )
        return self

    def deadline_for(self, country: str | None) -> AwareDatetime | None:
        """The deadline a person living in ``country`` has (their variant's, else the call's)."""
        return self.for_place(country).deadline if self.variants else self.deadline

    def for_place(self, country: str | None) -> ActionCall:
        """The call as a person living in ``country`` gets it: their variant applied, no variants left.

        Someone whose country is unknown, or matches no variant, gets the call itself.
        """
        chosen = None
        if country is not None:
            region = region_of(country)
            chosen = next(
                (v for v in self.variants if country in v.countries or region in v.regions),
                None,
            )
        changes: dict[str, Any] = {"variants": ()}
        if chosen is not None:
            for name in ("kind", "instructions", "suggested_message", "target", "deadline"):
                value = getattr(chosen, name)
                if value is not None:
                    changes[name] = value
        return self.model_copy(update=changes)


def action_id_for(case_id: str, call: ActionCall) -> str:
    """The action's id: the coordinator's ``action_id``, else one derived from case, kind and target."""
    if call.action_id is not None:
        return call.action_id
    return "act-" + stable_id(case_id, call.kind.value, call.target.name, length=20)


class PublicCase(Event):
    """The part of a case update that may be shown to activists.

    Alerts carry this projection, never the CaseUpdate itself, so coordinator-only
    fields cannot reach a rendered email by construction.
    """

    case_id: Slug
    """Stable identifier of the case."""
    status: CaseStatus
    """The case's new status."""
    title: Localised
    """Short headline per language."""
    summary: Localised
    """What happened and why it matters, per language."""
    country: Country
    """Where the factory is."""
    region: Region = Field(default=None, validate_default=False)  # type: ignore[assignment]  # filled in by CaseUpdate._derive
    """UN M49 region of ``country``; derived from it when left out."""
    brands: tuple[Annotated[str, Field(min_length=1, max_length=200)], ...] = ()
    """Brands sourcing from the factory, as they spell themselves."""
    factory: Factory | None = None
    """The factory, when it can be named."""
    issues: Annotated[tuple[Interest, ...], Field(min_length=1)]
    """The violations at stake, from the interest vocabulary."""
    action_call: ActionCall | None = None
    """What people are asked to do, if anything."""
    occurred_at: AwareDatetime
    """When the status changed."""
    bypass_digests: bool = False
    """Send this update at once to everyone it matches, also to people who chose a daily or
    weekly digest. Only an ``urgent_action`` may bypass digests."""

    @model_validator(mode="after")
    def _bypass_only_urgent(self) -> PublicCase:
        if self.bypass_digests and self.status is not CaseStatus.URGENT_ACTION:
            raise ValueError(
                f"bypass_digests is for urgent_action updates only, and this one is {self.status.value!r}; "
                "leave bypass_digests out, or publish it as urgent_action"
            )
        return self


class CaseUpdate(PublicCase):
    """A case status change as published by a coordinator (topic ``case-updates``, key case_id).

    ``event_id`` is the idempotency key: publishing the same update twice alerts nobody
    twice. When a publisher leaves it out it is derived from the update's content, so
    re-publishing the same file is harmless. ``region`` is derived from ``country``;
    a publisher may send it, but only if it agrees.
    """

    schema_version: Literal[1] = 1
    """Version of this schema; a reader rejects versions it does not know."""
    event_id: Slug = Field(default="", validate_default=False)
    """Idempotency key of this update; derived from the content when left out."""
    published_by: Annotated[str, Field(min_length=1, max_length=200)]
    """Coordinator (or connector) that published the update."""
    internal: dict[str, Any] = Field(default_factory=dict)
    """Coordinator-only details, e.g. the names of workers at risk. Stored, never rendered."""

    @model_validator(mode="after")
    def _derive(self) -> CaseUpdate:
        # A "before" validator would turn strict JSON validation into strict Python
        # validation (no datetimes from strings), so derived fields are filled in after.
        derived = region_of(self.country)
        if self.region is not None and self.region != derived:
            raise ValueError(
                f"region {self.region.value!r} does not match country {self.country!r}, which "
                f"is in {derived.value!r}; leave region out and it is derived from the country"
            )
        object.__setattr__(self, "region", derived)
        if not self.event_id:
            content = self.model_dump(mode="json", exclude={"event_id", "internal", "region"})
            # Fields added later count only when set, so an update published before they
            # existed keeps its event id (a replay of it stays a replay).
            if not self.bypass_digests:
                del content["bypass_digests"]
            call = content.get("action_call")
            if call is not None and call.get("remind_hours_before") is None:
                del call["remind_hours_before"]
            object.__setattr__(self, "event_id", "evt-" + stable_id(content, length=24))
        return self

    def public(self) -> PublicCase:
        """The projection that may be shown to activists (drops the internal fields)."""
        return PublicCase.model_validate({name: getattr(self, name) for name in PublicCase.model_fields})
