"""Turn an alert into an email: subject, text and HTML bodies, headers. Pure functions."""

from __future__ import annotations

from datetime import UTC
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from functools import cache
from urllib.parse import quote

import jinja2
from pydantic import BaseModel, ConfigDict

from schemas import Alert, country_name

__all__ = ["SUPPORTED_LANGUAGES", "EmailIdentity", "RenderedEmail", "render_alert", "to_message"]

SUPPORTED_LANGUAGES = ("en", "fr", "es")
"""Languages with their own templates; any other falls back to English."""


class EmailIdentity(BaseModel):
    """Who the alert emails come from and where people can unsubscribe."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    from_email: str
    """The From header, e.g. ``Network alerts <alerts@example.org>``."""
    unsubscribe_email: str
    """Mailbox that receives unsubscribe requests (the List-Unsubscribe mailto)."""


class RenderedEmail(BaseModel):
    """An alert rendered for one person, before it is put into a transport's format."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_id: str
    to_email: str
    to_name: str | None
    language: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]
    """Extra headers (List-Unsubscribe and the ids of the alert and case)."""


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("connectors", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _pick(texts: dict[str, str], language: str) -> str:
    """The text in ``language``, else English, else whichever language there is."""
    return texts.get(language) or texts.get("en") or next(iter(texts.values()))


def render_alert(alert: Alert, identity: EmailIdentity) -> RenderedEmail:
    """Render ``alert`` in the subscriber's language (English when there is no template)."""
    language = alert.language if alert.language in SUPPORTED_LANGUAGES else "en"
    case = alert.case
    action = case.action_call
    context = {
        "alert": alert,
        "case": case,
        "title": _pick(case.title, alert.language),
        "summary": _pick(case.summary, alert.language),
        "country": country_name(case.country),
        "region": case.region.label,
        "action": action,
        "instructions": _pick(action.instructions, alert.language) if action else None,
        "deadline": (
            action.deadline.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
            if action and action.deadline
            else None
        ),
        "reason": alert.reason,
        "reason_region": alert.reason.region.label if alert.reason.region else None,
        "reason_country": country_name(alert.reason.country) if alert.reason.country else None,
        "unsubscribe_email": parseaddr(identity.unsubscribe_email)[1],
    }
    env = _environment()
    subject = env.get_template(f"alert.{language}.subject.j2").render(context).strip()
    text = env.get_template(f"alert.{language}.txt.j2").render(context)
    html = env.get_template(f"alert.{language}.html.j2").render(context)
    mailbox = parseaddr(identity.unsubscribe_email)[1]
    unsubscribe = f"mailto:{mailbox}?subject={quote('unsubscribe ' + alert.subscriber_id)}"
    return RenderedEmail(
        alert_id=alert.alert_id,
        to_email=str(alert.email),
        to_name=alert.name,
        language=language,
        subject=" ".join(subject.split()),
        text=text,
        html=html,
        headers={
            "List-Unsubscribe": f"<{unsubscribe}>",
            "X-Mobilise-Alert-Id": alert.alert_id,
            "X-Mobilise-Case-Id": case.case_id,
            "X-Mobilise-Event-Id": alert.event_id,
        },
    )


def to_message(email: RenderedEmail, identity: EmailIdentity, *, date_source: Alert) -> EmailMessage:
    """Build an RFC 5322 message (text and HTML alternatives) from a rendered email.

    The Message-ID and Date derive from the alert, so rendering the same alert twice
    gives the same message, byte for byte.
    """
    message = EmailMessage()
    message["From"] = identity.from_email
    local, _, domain = email.to_email.partition("@")
    message["To"] = Address(display_name=email.to_name or "", username=local, domain=domain)
    message["Subject"] = email.subject
    message["Date"] = format_datetime(date_source.created_at.astimezone(UTC))
    sender_domain = parseaddr(identity.from_email)[1].partition("@")[2] or "mobilise.local"
    message["Message-ID"] = f"<{email.alert_id}@{sender_domain}>"
    for name, value in email.headers.items():
        message[name] = value
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    # set_content() clears every Content-* header, so this one comes last.
    message["Content-Language"] = email.language
    return message
