"""Turn an alert into an email: subject, text and HTML bodies, headers. Pure functions.

An alert email has two kinds of content. Everything about the case (subject, what
happened, the action call) is the same for every person who gets that update in that
language and gets the same variant of the action call (people in some countries may be
asked something else: :func:`action_variant`), and who get the same kind of email (an
alert, or a follow-up thanking those who acted): :func:`render_shared` renders it once,
with a placeholder token in each of the per-person slots (the greeting, the "why you got
this" sentence, and the subscriber id in the unsubscribe instructions or, with signed
links, the person's unsubscribe URL, the "Manage your alerts" link to their signed
preferences page right after the reason, and the signed "I did this" URL of the action
call). :func:`render_personal` renders one person's slot values, in plain text and in
escaped HTML; :func:`fill` puts them in. :func:`render_alert` is exactly that
composition: the reference every sink is held to. Sinks that send whole messages (the
outbox, SMTP) build them with :mod:`connectors.mime` from a template of the shared part,
and SendGrid fills the slots itself from the substitutions: the same email.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parseaddr
from functools import cache, lru_cache
from typing import ClassVar
from urllib.parse import quote

import jinja2
from markupsafe import escape
from pydantic import BaseModel, ConfigDict

from mobilise.links import PublicLinks
from schemas import (
    ActionCall,
    Alert,
    DigestEntry,
    MatchReason,
    PublicCase,
    action_id_for,
    country_name,
    known_countries,
    region_of,
)

from .addresses import transport_address

__all__ = [
    "ONE_CLICK",
    "PLACEHOLDER_MARK",
    "SUPPORTED_LANGUAGES",
    "EmailIdentity",
    "PersonalParts",
    "RenderedEmail",
    "SharedEmail",
    "action_variant",
    "body_key",
    "fill",
    "fill_split",
    "personal_substitutions",
    "render_alert",
    "render_digest",
    "render_personal",
    "render_shared",
    "render_shared_for",
    "shared_email",
    "split_slots",
    "template_language",
    "unsubscribe_headers",
    "unsubscribe_mailto",
]

SUPPORTED_LANGUAGES = ("en", "fr", "es")
"""Languages with their own templates; any other falls back to English."""

PLACEHOLDER_MARK = "%mobilise_"
"""Every placeholder token starts with this; case texts may not contain it."""

ONE_CLICK = {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
"""The RFC 8058 header that makes the https:// List-Unsubscribe URL a one-click POST."""


class EmailIdentity(BaseModel):
    """Who the alert emails come from and where people can unsubscribe."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    from_email: str
    """The From header, e.g. ``Network alerts <alerts@example.org>``."""
    unsubscribe_email: str
    """Mailbox that receives unsubscribe requests (the List-Unsubscribe mailto)."""
    links: PublicLinks | None = None
    """Signed one-click unsubscribe URLs; None for the mailto: only. Email sinks take them
    from :meth:`connectors.email_config.EmailSinkConfig.identity`."""


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """An alert rendered for one person, before it is put into a transport's format.

    A plain dataclass, not a model: one is made per recipient from values already
    validated, and handed straight to a transport in the same process.
    """

    alert_id: str
    to_email: str
    to_name: str | None
    language: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]
    """Extra headers (List-Unsubscribe and the ids of the alert and case)."""


class SharedEmail(BaseModel):
    """What every recipient of one case update in one language gets, with placeholders.

    ``text`` and ``html`` contain the tokens of :attr:`PersonalParts.placeholders` (text
    tokens in ``text``, HTML tokens in ``html``); the subject has none.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    language: str
    """The template language (the person's language, or English)."""
    subject: str
    """The subject line, on one line."""
    text: str
    """The plain-text body with text placeholders."""
    html: str
    """The HTML body with HTML placeholders."""


class PersonalParts(BaseModel):
    """One person's values for the slots of a :class:`SharedEmail`.

    The HTML values are already escaped: a provider that substitutes the same value into
    the text and the HTML body could not escape it, hence a separate token for each.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    greeting_text: str
    greeting_html: str
    why_text: str
    why_html: str
    subscriber_text: str
    subscriber_html: str
    unsubscribe_url_text: str | None = None
    """The person's signed unsubscribe URL, when the identity has links."""
    unsubscribe_url_html: str | None = None
    """The same, escaped for an HTML attribute."""
    manage_text: str | None = None
    """The "Manage your alerts" line with the person's signed preferences URL, when the identity
    has links (it follows the reason, on a line of its own)."""
    manage_html: str | None = None
    """The same as an HTML link."""
    acted_url_text: str | None = None
    """The person's signed "I did this" URL for the case's action call, when the identity has
    links and the case has a call."""
    acted_url_html: str | None = None
    """The same, escaped for an HTML attribute."""

    placeholders: ClassVar[dict[str, str]] = {
        field: f"{PLACEHOLDER_MARK}{field}%"
        for field in (
            "greeting_text",
            "greeting_html",
            "why_text",
            "why_html",
            "subscriber_text",
            "subscriber_html",
            "unsubscribe_url_text",
            "unsubscribe_url_html",
            "manage_text",
            "manage_html",
            "acted_url_text",
            "acted_url_html",
        )
    }
    """Field name → the token that stands for it in a shared body."""

    def substitutions(self) -> dict[str, str]:
        """Token → value, for :func:`fill` or a provider's substitutions (slots without a value left out)."""
        values = ((token, getattr(self, field)) for field, token in self.placeholders.items())
        return {token: value for token, value in values if value is not None}


_TOKENS = PersonalParts.placeholders
# Every slot, the digests' numbered "I did this" slots (:func:`_digest_acted_token`) too: a
# case text cannot hold the mark (render_shared refuses it), so only slots match.
_TOKEN_SPLIT = re.compile("(" + re.escape(PLACEHOLDER_MARK) + r"[a-z0-9_]+%)")


def _digest_acted_token(index: int, form: str) -> str:
    """The slot of the person's "I did this" URL of a digest's ``index``-th case (``text``/``html``)."""
    return f"{PLACEHOLDER_MARK}acted_{index}_{form}%"


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("connectors", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # templates ship with the package: no stat() per alert
    )


def _pick(texts: Mapping[str, str], language: str) -> str:
    """The text in ``language``, else English, else whichever language there is."""
    return texts.get(language) or texts.get("en") or next(iter(texts.values()))


def template_language(language: str) -> str:
    """The language whose templates render an alert for a person speaking ``language``."""
    return language if language in SUPPORTED_LANGUAGES else "en"


@lru_cache(maxsize=64)
def _mailbox(address: str) -> str:
    # Called per person with the same few configured addresses; parsing is not cheap. In its
    # transport form: a mailto: URI in a header wants an internationalised domain in ASCII.
    mailbox = parseaddr(address)[1]
    try:
        return transport_address(mailbox)
    except ValueError:
        return mailbox  # what the settings let through, as it was written


_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]+")


def unsubscribe_mailto(identity: EmailIdentity, subscriber_id: str) -> str:
    """The ``mailto:`` URI a person uses to unsubscribe (List-Unsubscribe and the footer)."""
    # Generated subscriber ids need no escaping; quote() per person costs more than this check.
    escaped = subscriber_id if _URL_SAFE.fullmatch(subscriber_id) else quote(subscriber_id)
    return f"mailto:{_mailbox(identity.unsubscribe_email)}?subject=unsubscribe%20{escaped}"


def unsubscribe_headers(identity: EmailIdentity, subscriber_id: str) -> dict[str, str]:
    """``List-Unsubscribe`` for one person, and with signed links the RFC 8058 one-click header.

    ``<mailto:…>`` always; ``, <{public_url}/unsubscribe/{token}>`` and
    ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` when the identity has links.
    """
    value = f"<{unsubscribe_mailto(identity, subscriber_id)}>"
    if identity.links is None:
        return {"List-Unsubscribe": value}
    return {"List-Unsubscribe": f"{value}, <{_unsubscribe_url(identity.links, subscriber_id)}>", **ONE_CLICK}


@lru_cache(maxsize=2048)
def _unsubscribe_url(links: PublicLinks, subscriber_id: str) -> str:
    # Every email needs it twice, in its footer and in its List-Unsubscribe header: sign once.
    return links.unsubscribe_url(subscriber_id)


@cache
def _known_countries() -> frozenset[str]:
    return known_countries()


def _place(home_country: str | None) -> str | None:
    # Alerts are built without validating again; a code the table does not know (which a
    # validated subscription cannot hold) is a person whose country is unknown.
    return home_country if home_country in _known_countries() else None


def action_variant(alert: Alert) -> int | None:
    """Which variant of the case's action call ``alert``'s person gets: its index, or None.

    None is the call itself: no call, no variants, a home country that is unknown or that
    no variant names. The rule is :meth:`schemas.ActionCall.for_place`'s (the first variant
    naming the person's country, or its region), without building the call: this runs per
    person, and people with the same answer share one rendered body.
    """
    return _variant(alert.case.action_call, alert.home_country)


def _variant(call: ActionCall | None, home_country: str | None) -> int | None:
    if call is None or not call.variants:
        return None
    country = _place(home_country)
    if country is None:
        return None
    region = region_of(country)
    return next(
        (index for index, v in enumerate(call.variants) if country in v.countries or region in v.regions),
        None,
    )


def body_key(alert: Alert) -> tuple[object, ...]:
    """What decides ``alert``'s shared body: alerts with equal keys (and equal cases) share one.

    The update (a replay is the same update), the person's language (titles are picked in
    it), the variant of the call they get, the kind of email; for a digest, its cases and
    the variant of each case's call.
    """
    digest = tuple((e.event_id, _variant(e.case.action_call, alert.home_country)) for e in alert.digest)
    return (alert.event_id, alert.language, action_variant(alert), alert.follow_up, alert.reminder, digest)


def _count(number: int, language: str) -> str:
    """``number`` as written in ``language`` (a template language): 5,000; 5 000; 5000 or 50 000."""
    if language == "en":
        return f"{number:,}"
    if language == "es" and number < 10_000:  # the RAE groups only numbers of five digits or more
        return str(number)
    return f"{number:,}".replace(",", "\u202f")  # a narrow no-break space, in French and Spanish


def render_shared(
    case: PublicCase,
    language: str,
    identity: EmailIdentity,
    *,
    home_country: str | None = None,
    follow_up: bool = False,
    reminder: bool = False,
) -> SharedEmail:
    """Render what ``case`` looks like for every person speaking ``language``.

    ``language`` is the person's language: titles and summaries are picked in it (falling
    back to English), templates in :func:`template_language` of it. The action call is
    shown as a person living in ``home_country`` gets it (:meth:`schemas.ActionCall.for_place`),
    with its suggested message, target, deadline and goal, and, with signed links, the slot
    of the person's "I did this" link. ``follow_up`` renders the email for people who acted
    on the case (:attr:`schemas.Alert.follow_up`): its subject and opening thank them and
    say what the case reached. ``reminder`` renders the reminder of the call
    (:attr:`schemas.Alert.reminder`): its subject and opening say the deadline is near.

    Raises:
        ValueError: a text of the case contains :data:`PLACEHOLDER_MARK`, which would be
            mistaken for a slot.
        jinja2.TemplateError: a template is broken.

    """
    _refuse_marks(case, identity)
    chosen = template_language(language)
    action = case.action_call.for_place(_place(home_country)) if case.action_call else None
    linked = identity.links is not None
    context = {
        "case": case,
        "follow_up": follow_up,
        "reminder": reminder,
        "title": _pick(case.title, language),
        "summary": _pick(case.summary, language),
        "country": country_name(case.country),
        "region": case.region.label,
        "unsubscribe_email": _mailbox(identity.unsubscribe_email),
        **_action_context(action, language, chosen),
    }
    env = _environment()
    subject = env.get_template(f"alert.{chosen}.subject.j2").render(context)
    # With signed links, the "Manage your alerts" slot follows the reason's: its value brings
    # its own line break, so the shared templates need no slot of their own for it.
    text = env.get_template(f"alert.{chosen}.txt.j2").render(
        context,
        greeting=_TOKENS["greeting_text"],
        why=_TOKENS["why_text"] + (_TOKENS["manage_text"] if linked else ""),
        subscriber_id=_TOKENS["subscriber_text"],
        unsubscribe_url=_TOKENS["unsubscribe_url_text"] if linked else None,
        acted_url=_TOKENS["acted_url_text"] if linked and action else None,
    )
    html = env.get_template(f"alert.{chosen}.html.j2").render(
        context,
        greeting=_TOKENS["greeting_html"],
        why=_TOKENS["why_html"] + (_TOKENS["manage_html"] if linked else ""),
        subscriber_id=_TOKENS["subscriber_html"],
        unsubscribe_url=_TOKENS["unsubscribe_url_html"] if linked else None,
        acted_url=_TOKENS["acted_url_html"] if linked and action else None,
    )
    return SharedEmail(language=chosen, subject=" ".join(subject.split()), text=text, html=html)


def _refuse_marks(case: PublicCase, identity: EmailIdentity) -> None:
    # Tokens are made of letters, digits, "%" and "_", which neither JSON nor HTML escaping
    # changes, so a token can reach a rendered body only from a slot or from the case.
    if PLACEHOLDER_MARK in case.model_dump_json() or PLACEHOLDER_MARK in identity.unsubscribe_email:
        raise ValueError(
            f"the case {case.case_id} contains {PLACEHOLDER_MARK!r}, which is reserved for the "
            "per-person placeholders of alert emails; remove it from the case texts"
        )


def render_digest(
    entries: Sequence[DigestEntry],
    language: str,
    identity: EmailIdentity,
    *,
    frequency: str,
    home_country: str | None = None,
) -> SharedEmail:
    """Render a digest of ``entries`` (in their order) for every person speaking ``language``.

    Each case is shown as of its latest update, with the statuses it went through before,
    and its action call as a person living in ``home_country`` gets it, with the slot of
    the person's "I did this" link for it when ``identity`` has links. The footer says why
    the person gets a digest (``frequency``: daily or weekly) and carries the slots of the
    preferences and unsubscribe links.

    Raises:
        ValueError: a case text contains :data:`PLACEHOLDER_MARK`.
        jinja2.TemplateError: a template is broken.

    """
    chosen = template_language(language)
    linked = identity.links is not None
    shown = []
    for entry in entries:
        case = entry.case
        _refuse_marks(case, identity)
        action = case.action_call.for_place(_place(home_country)) if case.action_call else None
        context = _action_context(action, language, chosen)
        shown.append(
            {
                "case": case,
                "earlier": entry.earlier,
                "title": _pick(case.title, language),
                "summary": _pick(case.summary, language),
                "country": country_name(case.country),
                "region": case.region.label,
                "action": action,
                "instructions": context["instructions"],
                "deadline": context["deadline"],
            }
        )
    env = _environment()
    rendered = {}
    for form in ("text", "html"):
        suffix = "txt" if form == "text" else "html"
        entries_for_form = [
            {**e, "acted_url": _digest_acted_token(index, form) if linked and e["action"] else None}
            for index, e in enumerate(shown)
        ]
        rendered[form] = env.get_template(f"digest.{chosen}.{suffix}.j2").render(
            entries=entries_for_form,
            frequency=frequency,
            greeting=_TOKENS[f"greeting_{form}"],
            manage=_TOKENS[f"manage_{form}"] if linked else "",
            subscriber_id=_TOKENS[f"subscriber_{form}"],
            unsubscribe_url=_TOKENS[f"unsubscribe_url_{form}"] if linked else None,
            unsubscribe_email=_mailbox(identity.unsubscribe_email),
        )
    subject = env.get_template(f"digest.{chosen}.subject.j2").render(entries=shown, frequency=frequency)
    return SharedEmail(
        language=chosen, subject=" ".join(subject.split()), text=rendered["text"], html=rendered["html"]
    )


def render_shared_for(alert: Alert, identity: EmailIdentity) -> SharedEmail:
    """The shared body of ``alert``'s email: a digest's, or the case's (:func:`render_shared`)."""
    if alert.digest:
        return render_digest(
            alert.digest,
            alert.language,
            identity,
            frequency=alert.digest_frequency or "daily",
            home_country=alert.home_country,
        )
    return render_shared(
        alert.case,
        alert.language,
        identity,
        home_country=alert.home_country,
        follow_up=alert.follow_up,
        reminder=alert.reminder,
    )


def _action_context(action: ActionCall | None, language: str, chosen: str) -> dict[str, object]:
    """The template values of the action call as the person gets it (all None without one)."""
    if action is None:
        return dict.fromkeys(("action", "instructions", "message", "deadline", "goal_count", "goal_label"))
    goal = action.goal
    return {
        "action": action,
        "instructions": _pick(action.instructions, language),
        "message": _pick(action.suggested_message, language) if action.suggested_message else None,
        "deadline": (
            action.deadline.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if action.deadline else None
        ),
        "goal_count": _count(goal.count, chosen) if goal else None,
        # Without a label the templates count "actions".
        "goal_label": _pick(goal.label, language) if goal and goal.label else None,
    }


_why_cache: dict[tuple[object, ...], tuple[str, str]] = {}


def _why(language: str, reason: MatchReason) -> tuple[str, str]:
    # Many people share a reason (same country, same interest): render each once. Keyed
    # by the reason's values, not the model: comparing pydantic models on every cache hit
    # cost as much as the rest of a person's slots.
    key = (language, reason.worldwide, reason.region, reason.country, reason.interests, reason.brands)
    found = _why_cache.get(key)
    if found is None:
        if len(_why_cache) >= 4096:
            _why_cache.clear()
        found = _why_cache[key] = _render_why(language, reason)
    return found


def _render_why(language: str, reason: MatchReason) -> tuple[str, str]:
    arguments = {
        "reason": reason,
        "reason_country": country_name(reason.country) if reason.country else None,
        "reason_region": reason.region.label if reason.region else None,
    }
    env = _environment()
    text = env.get_template(f"alert.{language}.personal.txt.j2").module.why(**arguments)  # type: ignore[attr-defined]  # a template macro
    html = env.get_template(f"alert.{language}.personal.html.j2").module.why(**arguments)  # type: ignore[attr-defined]  # a template macro
    return str(text), str(html)


@lru_cache(maxsize=65536)
def _greeting(language: str, name: str | None) -> tuple[str, str]:
    # Names repeat (and None is everyone without one): two macro calls saved per person.
    env = _environment()
    text = env.get_template(f"alert.{language}.personal.txt.j2").module.greeting(name)  # type: ignore[attr-defined]  # a template macro
    html = env.get_template(f"alert.{language}.personal.html.j2").module.greeting(name)  # type: ignore[attr-defined]  # a template macro
    return str(text), str(html)


_URL_MARK = "\x00url\x00"


@lru_cache(maxsize=8)
def _manage(language: str) -> tuple[str, str]:
    # The same sentence for everyone in a language: rendered once around a mark for the URL
    # (a signed URL is base64url, digits, dots and the base URL: nothing HTML escaping changes).
    env = _environment()
    text = env.get_template(f"alert.{language}.personal.txt.j2").module.manage(_URL_MARK)  # type: ignore[attr-defined]  # a template macro
    html = env.get_template(f"alert.{language}.personal.html.j2").module.manage(_URL_MARK)  # type: ignore[attr-defined]  # a template macro
    return str(text), str(html)


_last_action: dict[str, tuple[ActionCall, str]] = {}


def _action_id(case_id: str, call: ActionCall) -> str:
    # The alerts of a batch share one case object: derive its action id (a hash of the case,
    # kind and target) once, not per person. The entry keeps the call alive, so "is" cannot
    # mistake a new call for it.
    last = _last_action.get(case_id)
    if last is not None and last[0] is call:
        return last[1]
    action_id = action_id_for(case_id, call)
    _last_action.clear()
    _last_action[case_id] = (call, action_id)
    return action_id


def _personal_fields(alert: Alert, identity: EmailIdentity) -> dict[str, str | None]:
    language = template_language(alert.language)
    greeting_text, greeting_html = _greeting(language, alert.name)
    why_text, why_html = _why(language, alert.reason)
    url = manage_text = manage_html = None
    if identity.links is not None:
        url = _unsubscribe_url(identity.links, alert.subscriber_id)
        # In the email's language (?lang=), whatever the language of the browser that opens it.
        preferences = f"{identity.links.preferences_url(alert.subscriber_id)}?lang={language}"
        text_form, html_form = _manage(language)
        manage_text = text_form.replace(_URL_MARK, preferences)
        manage_html = html_form.replace(_URL_MARK, str(escape(preferences)))
    acted = None
    call = alert.case.action_call
    if alert.digest:
        call = None  # a digest has a slot per case instead (_digest_substitutions)
    if identity.links is not None and call is not None:
        # The call as published names the action, whichever variant the person was asked:
        # everyone who answers one call counts towards its goal (per region in ActionTaken).
        action_id = _action_id(alert.case.case_id, call)
        acted = identity.links.acted_url(alert.subscriber_id, action_id, alert.event_id, language)
    return {
        "greeting_text": greeting_text,
        "greeting_html": greeting_html,
        "why_text": why_text,
        "why_html": why_html,
        "subscriber_text": alert.subscriber_id,
        "subscriber_html": str(escape(alert.subscriber_id)),
        "unsubscribe_url_text": url,
        "unsubscribe_url_html": str(escape(url)) if url is not None else None,
        "manage_text": manage_text,
        "manage_html": manage_html,
        "acted_url_text": acted,
        "acted_url_html": str(escape(acted)) if acted is not None else None,
    }


def _digest_substitutions(alert: Alert, identity: EmailIdentity) -> dict[str, str]:
    """The values of a digest's numbered "I did this" slots: one per case with a call."""
    values: dict[str, str] = {}
    if identity.links is None:
        return values
    language = template_language(alert.language)
    for index, entry in enumerate(alert.digest):
        call = entry.case.action_call
        if call is None:
            continue
        action_id = _action_id(entry.case.case_id, call)
        link = identity.links.acted_url(alert.subscriber_id, action_id, entry.event_id, language)
        values[_digest_acted_token(index, "text")] = link
        values[_digest_acted_token(index, "html")] = str(escape(link))
    return values


def render_personal(alert: Alert, identity: EmailIdentity) -> PersonalParts:
    """Render the per-person slot values of ``alert``.

    They are its greeting, reason, subscriber id and, when ``identity`` has links, the
    person's signed unsubscribe URL, "Manage your alerts" link (preferences page) and, when
    the case has an action call, "I did this" URL (:meth:`mobilise.links.PublicLinks.acted_url`).
    Pass the identity the shared body was rendered with: it decides whether the body has
    the slots of the links.
    """
    return PersonalParts.model_validate(_personal_fields(alert, identity))


def personal_substitutions(alert: Alert, identity: EmailIdentity) -> dict[str, str]:
    """``render_personal(alert, identity).substitutions()``, without building the model.

    This runs once per recipient in every email sink.
    """
    values = {
        _TOKENS[field]: value
        for field, value in _personal_fields(alert, identity).items()
        if value is not None
    }
    if alert.digest:
        values.update(_digest_substitutions(alert, identity))
    return values


def fill(body: str, substitutions: Mapping[str, str]) -> str:
    """Replace every placeholder token in ``body`` by its value, in one pass.

    One pass, so a value that happens to contain a token is not substituted again.

    Raises:
        ValueError: ``body`` has a slot ``substitutions`` gives no value for (the shared
            body and the personal parts were rendered with different identities).

    """
    return fill_split(split_slots(body), substitutions)


def split_slots(body: str) -> tuple[str, ...]:
    """``body`` cut at its slots: text, token, text, token, …, text (odd positions are tokens).

    For a body filled many times: cut once, then :func:`fill_split` per person.
    """
    return tuple(_TOKEN_SPLIT.split(body))


def fill_split(parts: tuple[str, ...], substitutions: Mapping[str, str]) -> str:
    """:func:`fill` of the body that :func:`split_slots` cut into ``parts``.

    Raises:
        ValueError: as :func:`fill`.

    """
    try:
        return "".join(part if i % 2 == 0 else substitutions[part] for i, part in enumerate(parts))
    except KeyError as exc:
        raise ValueError(
            f"no value for the slot {exc.args[0]}: render the shared body and the personal "
            "parts with the same EmailIdentity"
        ) from None


_SHARED_CACHE_SIZE = 128
_shared_cache: dict[tuple[tuple[object, ...], EmailIdentity], SharedEmail] = {}


def shared_email(alert: Alert, identity: EmailIdentity) -> SharedEmail:
    """The shared part of ``alert``'s email, rendered once per :func:`body_key`."""
    # An update reaches thousands of people in a handful of languages and variants of its
    # call: render its shared part once for each.
    key = (body_key(alert), identity)
    shared = _shared_cache.get(key)
    if shared is None:
        shared = render_shared_for(alert, identity)
        if len(_shared_cache) >= _SHARED_CACHE_SIZE:
            _shared_cache.pop(next(iter(_shared_cache)))  # the oldest
        _shared_cache[key] = shared
    return shared


def render_alert(alert: Alert, identity: EmailIdentity) -> RenderedEmail:
    """Render ``alert`` in the subscriber's language (English when there is no template)."""
    shared = shared_email(alert, identity)
    values = personal_substitutions(alert, identity)
    return RenderedEmail(
        alert_id=alert.alert_id,
        to_email=str(alert.email),
        to_name=alert.name,
        language=shared.language,
        subject=shared.subject,
        text=fill(shared.text, values),
        html=fill(shared.html, values),
        headers={
            **unsubscribe_headers(identity, alert.subscriber_id),
            "X-Mobilise-Alert-Id": alert.alert_id,
            "X-Mobilise-Case-Id": alert.case.case_id,
            "X-Mobilise-Event-Id": alert.event_id,
        },
    )
