"""Turn an alert into an email: subject, text and HTML bodies, headers. Pure functions.

An alert email has two kinds of content. Everything about the case (subject, what
happened, the action call) is the same for every person who gets that update in that
language: :func:`render_shared` renders it once, with a placeholder token in each of the
per-person slots (the greeting, the "why you got this" sentence, and the subscriber id in
the unsubscribe instructions or, with signed links, the person's unsubscribe URL and the
"Manage your alerts" link to their signed preferences page, right after the reason).
:func:`render_personal` renders one person's slot
values, in plain text and in escaped HTML; :func:`fill` puts them in. :func:`render_alert`
is exactly that composition: the reference every sink is held to. Sinks that send whole
messages (the outbox, SMTP) build them with :mod:`connectors.mime` from a template of the
shared part, and SendGrid fills the slots itself from the substitutions: the same email.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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
from schemas import Alert, MatchReason, PublicCase, country_name

__all__ = [
    "ONE_CLICK",
    "PLACEHOLDER_MARK",
    "SUPPORTED_LANGUAGES",
    "EmailIdentity",
    "PersonalParts",
    "RenderedEmail",
    "SharedEmail",
    "fill",
    "fill_split",
    "personal_substitutions",
    "render_alert",
    "render_personal",
    "render_shared",
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
        )
    }
    """Field name → the token that stands for it in a shared body."""

    def substitutions(self) -> dict[str, str]:
        """Token → value, for :func:`fill` or a provider's substitutions (slots without a value left out)."""
        values = ((token, getattr(self, field)) for field, token in self.placeholders.items())
        return {token: value for token, value in values if value is not None}


_TOKENS = PersonalParts.placeholders
_TOKEN_SPLIT = re.compile("(" + "|".join(re.escape(token) for token in _TOKENS.values()) + ")")


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
    # Called per person with the same few configured addresses; parsing is not cheap.
    return parseaddr(address)[1]


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
    return {"List-Unsubscribe": f"{value}, <{identity.links.unsubscribe_url(subscriber_id)}>", **ONE_CLICK}


def render_shared(case: PublicCase, language: str, identity: EmailIdentity) -> SharedEmail:
    """Render what ``case`` looks like for every person speaking ``language``.

    ``language`` is the person's language: titles and summaries are picked in it (falling
    back to English), templates in :func:`template_language` of it.

    Raises:
        ValueError: a text of the case contains :data:`PLACEHOLDER_MARK`, which would be
            mistaken for a slot.
        jinja2.TemplateError: a template is broken.

    """
    # Tokens are made of letters, "%" and "_", which neither JSON nor HTML escaping
    # changes, so a token can reach a rendered body only from a slot or from the case.
    if PLACEHOLDER_MARK in case.model_dump_json() or PLACEHOLDER_MARK in identity.unsubscribe_email:
        raise ValueError(
            f"the case {case.case_id} contains {PLACEHOLDER_MARK!r}, which is reserved for the "
            "per-person placeholders of alert emails; remove it from the case texts"
        )
    action = case.action_call
    context = {
        "case": case,
        "title": _pick(case.title, language),
        "summary": _pick(case.summary, language),
        "country": country_name(case.country),
        "region": case.region.label,
        "action": action,
        "instructions": _pick(action.instructions, language) if action else None,
        "deadline": (
            action.deadline.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
            if action and action.deadline
            else None
        ),
        "unsubscribe_email": _mailbox(identity.unsubscribe_email),
    }
    linked = identity.links is not None
    env = _environment()
    chosen = template_language(language)
    subject = env.get_template(f"alert.{chosen}.subject.j2").render(context)
    # With signed links, the "Manage your alerts" slot follows the reason's: its value brings
    # its own line break, so the shared templates need no slot of their own for it.
    text = env.get_template(f"alert.{chosen}.txt.j2").render(
        context,
        greeting=_TOKENS["greeting_text"],
        why=_TOKENS["why_text"] + (_TOKENS["manage_text"] if linked else ""),
        subscriber_id=_TOKENS["subscriber_text"],
        unsubscribe_url=_TOKENS["unsubscribe_url_text"] if linked else None,
    )
    html = env.get_template(f"alert.{chosen}.html.j2").render(
        context,
        greeting=_TOKENS["greeting_html"],
        why=_TOKENS["why_html"] + (_TOKENS["manage_html"] if linked else ""),
        subscriber_id=_TOKENS["subscriber_html"],
        unsubscribe_url=_TOKENS["unsubscribe_url_html"] if linked else None,
    )
    return SharedEmail(language=chosen, subject=" ".join(subject.split()), text=text, html=html)


@lru_cache(maxsize=4096)
def _why(language: str, reason: MatchReason) -> tuple[str, str]:
    # Many people share a reason (same country, same interest): render each once.
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


def _personal_fields(alert: Alert, identity: EmailIdentity) -> dict[str, str | None]:
    language = template_language(alert.language)
    greeting_text, greeting_html = _greeting(language, alert.name)
    why_text, why_html = _why(language, alert.reason)
    url = manage_text = manage_html = None
    if identity.links is not None:
        url = identity.links.unsubscribe_url(alert.subscriber_id)
        # In the email's language (?lang=), whatever the language of the browser that opens it.
        preferences = f"{identity.links.preferences_url(alert.subscriber_id)}?lang={language}"
        text_form, html_form = _manage(language)
        manage_text = text_form.replace(_URL_MARK, preferences)
        manage_html = html_form.replace(_URL_MARK, str(escape(preferences)))
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
    }


def render_personal(alert: Alert, identity: EmailIdentity) -> PersonalParts:
    """Render the per-person slot values of ``alert``.

    They are its greeting, reason, subscriber id and, when ``identity`` has links, the
    person's signed unsubscribe URL and "Manage your alerts" link (preferences page).
    Pass the identity the shared body was rendered with: it decides whether the body has
    the slots of the links.
    """
    return PersonalParts.model_validate(_personal_fields(alert, identity))


def personal_substitutions(alert: Alert, identity: EmailIdentity) -> dict[str, str]:
    """``render_personal(alert, identity).substitutions()``, without building the model.

    This runs once per recipient in every email sink.
    """
    return {
        _TOKENS[field]: value
        for field, value in _personal_fields(alert, identity).items()
        if value is not None
    }


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


_SHARED_CACHE_SIZE = 64
_shared_cache: dict[tuple[str, str, EmailIdentity], SharedEmail] = {}


def shared_email(alert: Alert, identity: EmailIdentity) -> SharedEmail:
    """The shared part of ``alert``'s email, rendered once per update and language."""
    # An update reaches thousands of people in a handful of languages: render its shared
    # part once per language. The event id names the update (a replay is the same update).
    # The person's language, not the template's: titles are picked in it.
    key = (alert.event_id, alert.language, identity)
    shared = _shared_cache.get(key)
    if shared is None:
        shared = render_shared(alert.case, alert.language, identity)
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
