"""Emails the web process sends itself: the double opt-in link, and "you are already subscribed".

When someone submits the subscribe form, the person at that address gets one of two
notices, in the language of their subscription (en, fr or es; English otherwise):

* ``confirm``: a signed link, valid for :data:`CONFIRMATION_VALID_FOR`, to the page that
  confirms the pending subscription;
* ``manage``: for an address already confirmed, a link to its preferences page (and to
  its my-data page) instead, since nothing was changed.

A :class:`Notice` is rendered by :func:`render_notice` (pure) and sent by a
:class:`NoticeSender` through the pipeline's email sink (``MOBILISE_SINK``), with that
sink's settings: ``outbox`` writes ``notice-<id>.eml`` into ``MOBILISE_OUTBOX_DIR``
(atomically: a temporary name, then a rename), ``smtp`` sends one message with the SMTP
sink's server settings, ``sendgrid`` makes one v3 Mail Send request with the SendGrid
sink's key. The From header is the sinks' ``MOBILISE_FROM_EMAIL``.

Delivery guarantee: at most once, and not recorded anywhere: a notice that cannot be sent
raises :class:`NoticeNotSent`, and the person can simply submit the form again.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp
import aiosmtplib
import structlog

from connectors.addresses import header_address, needs_smtputf8, transport_address
from connectors.mime import sender_domain
from connectors.outbox import OutboxConfig
from connectors.sendgrid_mail import SendGridConfig
from connectors.smtp import SmtpConfig
from mobilise.errors import ConfigurationError, MobiliseError
from mobilise.links import PublicLinks
from schemas import Subscription

from .pages import PAGE_LANGUAGES, render_template

__all__ = [
    "CONFIRMATION_VALID_FOR",
    "Notice",
    "NoticeKind",
    "NoticeNotSent",
    "NoticeSender",
    "notice_message",
    "notice_sender",
    "render_notice",
]

log = structlog.get_logger(__name__)

CONFIRMATION_VALID_FOR = timedelta(days=7)
"""How long a confirmation link works."""

NoticeKind = Literal["confirm", "manage"]
"""``confirm``: the double opt-in link; ``manage``: the address is already subscribed."""


class NoticeNotSent(MobiliseError):
    """The notice could not be handed to the mail system; the message says why (without addresses)."""


@dataclass(frozen=True)
class Notice:
    """One rendered notice for one person."""

    notice_id: str
    kind: NoticeKind
    subscriber_id: str
    to_email: str
    to_name: str | None
    language: str
    subject: str
    text: str
    html: str


_TEXTS: dict[str, dict[NoticeKind, dict[str, Any]]] = {
    "en": {
        "confirm": {
            "subject": "Confirm your subscription to the alerts",
            "before": (
                "Someone, probably you, asked to receive this network's alerts about workers' rights "
                "cases at this address.",
                "To confirm, open this link and press the button. It works for 7 days.",
            ),
            "label": "Confirm my subscription",
            "after": (
                "If you did not ask for this, ignore this email: you will not be subscribed, and you "
                "will hear nothing more from us.",
            ),
        },
        "manage": {
            "subject": "You already get the alerts",
            "before": (
                "Someone, probably you, asked to subscribe this address to this network's alerts. It "
                "is already subscribed, so nothing was changed.",
                "To change what you receive, or to unsubscribe, open this link:",
            ),
            "label": "Manage your alerts",
            "after": ("If you did not ask for this, ignore this email: nothing changes.",),
        },
    },
    "fr": {
        "confirm": {
            "subject": "Confirmez votre abonnement aux alertes",
            "before": (
                "Quelqu'un, sans doute vous, a demandé à recevoir à cette adresse les alertes de ce réseau "
                "sur les droits des travailleurs et travailleuses.",
                "Pour confirmer, ouvrez ce lien et appuyez sur le bouton. Il est valable 7 jours.",
            ),
            "label": "Confirmer mon abonnement",
            "after": (
                "Si vous n'avez rien demandé, ignorez cet e-mail : vous ne serez pas abonné·e et nous ne "
                "vous écrirons plus.",
            ),
        },
        "manage": {
            "subject": "Vous recevez déjà les alertes",
            "before": (
                "Quelqu'un, sans doute vous, a demandé à abonner cette adresse aux alertes de ce réseau. "
                "Elle est déjà abonnée : rien n'a été modifié.",
                "Pour changer ce que vous recevez, ou pour vous désabonner, ouvrez ce lien :",
            ),
            "label": "Gérer mes alertes",
            "after": ("Si vous n'avez rien demandé, ignorez cet e-mail : rien ne change.",),
        },
    },
    "es": {
        "confirm": {
            "subject": "Confirma tu suscripción a las alertas",
            "before": (
                "Alguien, probablemente tú, pidió recibir en esta dirección las alertas de esta red "
                "sobre casos de derechos laborales.",
                "Para confirmar, abre este enlace y pulsa el botón. Vale 7 días.",
            ),
            "label": "Confirmar mi suscripción",
            "after": (
                "Si no lo pediste, ignora este correo: no quedarás suscrito ni suscrita y no volverás a "
                "saber de nosotros.",
            ),
        },
        "manage": {
            "subject": "Ya recibes las alertas",
            "before": (
                "Alguien, probablemente tú, pidió suscribir esta dirección a las alertas de esta red. Ya "
                "está suscrita, así que no se ha cambiado nada.",
                "Para cambiar lo que recibes, o para darte de baja, abre este enlace:",
            ),
            "label": "Gestionar mis alertas",
            "after": ("Si no lo pediste, ignora este correo: no cambia nada.",),
        },
    },
}


_WORDS: dict[str, dict[str, str]] = {
    "en": {"hello": "Hello", "my_data": "See or erase your data"},
    "fr": {"hello": "Bonjour", "my_data": "Voir ou effacer mes données"},
    "es": {"hello": "Hola", "my_data": "Ver o borrar mis datos"},
}


def render_notice(kind: NoticeKind, subscription: Subscription, links: PublicLinks) -> Notice:
    """The ``kind`` notice for the person of ``subscription``, with their signed links. Pure but for the id.

    The confirmation link expires :data:`CONFIRMATION_VALID_FOR` after ``links``' clock's now.
    """
    language = subscription.language if subscription.language in PAGE_LANGUAGES else PAGE_LANGUAGES[0]
    texts = _WORDS[language]
    words = _TEXTS[language][kind]
    subscriber = subscription.subscriber_id
    # The pages the links open speak the person's language (?lang=), whatever their browser's.
    query = f"?lang={language}"
    if kind == "confirm":
        url = links.confirm_url(subscriber, expires_in=CONFIRMATION_VALID_FOR) + query
        extra: tuple[tuple[str, str], ...] = ()
    else:
        url = links.preferences_url(subscriber) + query
        extra = ((texts["my_data"], links.my_data_url(subscriber) + query),)
    greeting = f"{texts['hello']} {subscription.name}," if subscription.name else f"{texts['hello']},"
    context = {
        "language": language,
        "subject": words["subject"],
        "greeting": greeting,
        "before": words["before"],
        "label": words["label"],
        "url": url,
        "after": words["after"],
        "extra": extra,
    }
    return Notice(
        notice_id=uuid.uuid4().hex,
        kind=kind,
        subscriber_id=subscriber,
        to_email=str(subscription.email),
        to_name=subscription.name,
        language=language,
        subject=words["subject"],
        text=render_template("notice.txt.j2", **context),
        html=render_template("notice.html.j2", **context),
    )


def notice_message(notice: Notice, from_email: str, *, now: float) -> EmailMessage:
    """``notice`` as an RFC 5322 message (text and HTML alternatives, quoted-printable UTF-8)."""
    message = EmailMessage(policy=policy.default)
    sender = parseaddr(from_email)
    message["From"] = header_address(*sender)
    message["To"] = header_address(notice.to_name, notice.to_email)
    message["Subject"] = notice.subject
    message["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    message["Message-ID"] = f"<notice-{notice.notice_id}@{sender_domain(from_email)}>"
    # An automatic answer to a form (RFC 3834): no vacation replies to it, please.
    message["Auto-Submitted"] = "auto-generated"
    message["X-Mobilise-Notice"] = notice.kind
    message["X-Mobilise-Notice-Id"] = notice.notice_id
    message.set_content(notice.text, charset="utf-8", cte="quoted-printable")
    message.add_alternative(notice.html, subtype="html", charset="utf-8", cte="quoted-printable")
    message["Content-Language"] = notice.language  # after the content: set_content drops Content-* headers
    return message


class NoticeSender(Protocol):
    """Hands a notice to the mail system."""

    async def send(self, notice: Notice) -> None:
        """Send ``notice``.

        Raises:
            NoticeNotSent: it could not be sent.

        """


Clock = Callable[[], float]


class _OutboxSender:
    def __init__(self, config: OutboxConfig, *, clock: Clock) -> None:
        self._config = config
        self._directory: Path = config.outbox_dir
        self._clock = clock

    async def send(self, notice: Notice) -> None:
        message = notice_message(notice, self._config.from_email, now=self._clock())
        # An address beyond ASCII before its @ is written as it is (RFC 6532), not encoded.
        utf8 = needs_smtputf8(transport_address(notice.to_email))
        data = message.as_bytes(policy=policy.SMTPUTF8) if utf8 else message.as_bytes()
        try:
            await asyncio.to_thread(self._write, f"notice-{notice.notice_id}.eml", data)
        except OSError as exc:
            raise NoticeNotSent(f"cannot write to the outbox {self._directory}: {exc}") from exc

    def _write(self, name: str, data: bytes) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        # Written under a name readers skip, then renamed: nobody sees half a message.
        temporary = self._directory / f".tmp-{name}"
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._directory / name)


class _SmtpSender:
    def __init__(self, config: SmtpConfig, *, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._tls: ssl.SSLContext | None = None
        if config.smtp_security != "none":
            ca_file = config.smtp_ca_file
            try:
                self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigurationError(
                    f"MOBILISE_SMTP_CA_FILE={str(ca_file)!r}: cannot load it as PEM CA certificates ({exc})"
                ) from exc

    async def send(self, notice: Notice) -> None:
        config = self._config
        message = notice_message(notice, config.from_email, now=self._clock())
        username = config.smtp_username.get_secret_value() if config.smtp_username is not None else None
        password = config.smtp_password.get_secret_value() if config.smtp_password is not None else None
        try:
            await aiosmtplib.send(
                message,
                # (The client asks for SMTPUTF8 when an address needs it.)
                sender=transport_address(parseaddr(config.from_email)[1]),
                recipients=[transport_address(notice.to_email)],
                hostname=config.smtp_host,
                port=config.smtp_port,
                use_tls=config.smtp_security == "tls",
                start_tls=config.smtp_security == "starttls",
                tls_context=self._tls,
                timeout=config.smtp_timeout,
                username=username,
                password=password,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            # The server's own words may quote the address: only the kind of failure and the code.
            code = getattr(exc, "code", None)
            raise NoticeNotSent(
                f"the SMTP server {config.smtp_host}:{config.smtp_port} did not take the notice: "
                f"{type(exc).__name__}{f' {code}' if code else ''}"
            ) from exc


class _SendGridSender:
    def __init__(self, config: SendGridConfig) -> None:
        self._config = config

    async def send(self, notice: Notice) -> None:
        config = self._config
        sender_name, sender_email = parseaddr(config.from_email)
        sender_email = transport_address(sender_email)
        to: dict[str, str] = {"email": transport_address(notice.to_email)}
        if needs_smtputf8(to["email"]):
            # SendGrid would take the request and drop the message as invalid.
            raise NoticeNotSent(
                "SendGrid does not deliver to an address with letters beyond ASCII before its @"
            )
        if notice.to_name:
            to["name"] = notice.to_name
        body: dict[str, Any] = {
            # Ids only, as the alerts' custom_args: SendGrid's event webhook sends them back.
            "personalizations": [{"to": [to], "custom_args": {"subscriber_id": notice.subscriber_id}}],
            "from": {"email": sender_email, "name": sender_name} if sender_name else {"email": sender_email},
            "subject": notice.subject,
            "content": [
                {"type": "text/plain", "value": notice.text},
                {"type": "text/html", "value": notice.html},
            ],
            "headers": {"Auto-Submitted": "auto-generated", "X-Mobilise-Notice-Id": notice.notice_id},
            "categories": ["mobilise", f"notice:{notice.kind}"],
            # The links carry tokens that act for the person: not through a click tracker.
            "tracking_settings": {"click_tracking": {"enable": False}},
        }
        if config.sendgrid_sandbox:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        headers = {"Authorization": f"Bearer {config.sendgrid_api_key.get_secret_value()}"}
        timeout = aiohttp.ClientTimeout(total=config.sendgrid_timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(f"{config.sendgrid_host}/v3/mail/send", json=body, headers=headers) as response,
            ):
                if response.status not in (200, 202):
                    raise NoticeNotSent(f"SendGrid answered {response.status} to the notice")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NoticeNotSent(f"no answer from SendGrid: {type(exc).__name__}") from exc


def notice_sender(sink: str, *, clock: Clock) -> NoticeSender | None:
    """The sender for the pipeline's sink ``sink`` (``MOBILISE_SINK``), configured from the environment.

    Returns None for a sink that is not one of the email sinks (outbox, smtp, sendgrid):
    the web process then has no way to send confirmation links.

    Raises:
        ConfigurationError: the sink's settings are invalid (the message names the variable).

    """
    if sink == "outbox":
        return _OutboxSender(OutboxConfig(), clock=clock)
    if sink == "smtp":
        return _SmtpSender(SmtpConfig(), clock=clock)
    if sink == "sendgrid":
        return _SendGridSender(SendGridConfig())
    return None
