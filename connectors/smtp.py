"""SmtpSink: alerts through the network's own mail server, one message per person.

For organisations that run their own mail server (or a relay such as Postfix on the same
host). One authenticated connection (``MOBILISE_SMTP_CONNECTIONS``: several, sharing each
batch) is kept open across batches and replaced when the server closed it or after
``MOBILISE_SMTP_MAX_MESSAGES_PER_CONNECTION`` messages.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any, ClassVar, Literal

import aiosmtplib
import jinja2
import structlog
from pydantic import Field, FilePath, SecretStr, model_validator

from mobilise.errors import ConfigurationError, RetryableError
from schemas import Alert

from .addresses import needs_smtputf8, transport_address
from .base import Sink, SinkOutcome
from .email_config import EmailSinkConfig
from .lookahead import Lookahead, alert_ids
from .mime import alert_bytes, message_id

__all__ = ["SmtpConfig", "SmtpSink"]

log = structlog.get_logger(__name__)

_SECRET_FIELDS = frozenset({"smtp_username", "smtp_password", "secret_key"})
_ADDRESS = re.compile(r"[^\s@<>()\[\]\"',;:]+@[^\s@<>()\[\]\"',;:]+")
_AUTH_CODES = frozenset({530, 534, 535, 538})
"""Replies that mean "log in (properly) first" (RFC 4954), whatever command they answer."""
_AUTH_RETRY_AFTER = 60.0
"""Wrong credentials do not fix themselves, and servers ban clients that keep failing."""
_MAX_ERROR_CHARS = 500


class SmtpConfig(EmailSinkConfig):
    """Settings of the SMTP sink (environment: ``MOBILISE_SMTP_HOST`` and so on).

    The sender, the unsubscribe mailbox and signed links are :class:`EmailSinkConfig`'s;
    the From address is also the envelope sender (MAIL FROM).

    Raises:
        ConfigurationError: a setting is missing or invalid; the message names the variable.

    """

    smtp_host: str = Field(min_length=1)
    """The mail server's host name or address (required); TLS certificates are checked against it."""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    """The port: usually 587 for ``starttls``, 465 for ``tls``, 25 for a local relay."""
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    """``starttls``: plain connection upgraded with STARTTLS (required, not opportunistic);
    ``tls``: implicit TLS from the first byte; ``none``: no encryption (a relay on localhost)."""
    smtp_username: SecretStr | None = None
    """User name for SMTP AUTH; set with the password or not at all (masked: often an address)."""
    smtp_password: SecretStr | None = None
    """Password for SMTP AUTH; set with the user name or not at all (masked when printed)."""
    smtp_timeout: float = Field(default=30.0, gt=0, le=600)
    """Seconds to wait for the server on connecting and on each command before giving up."""
    smtp_ca_file: FilePath | None = None
    """A PEM bundle of CA certificates to trust instead of the system's (e.g. a private CA)."""
    smtp_max_messages_per_connection: int = Field(default=100, ge=1, le=100_000)
    """Messages sent over one connection before it is closed and a new one opened."""
    smtp_connections: int = Field(default=1, ge=1, le=20)
    """Connections a batch's messages go out over at once. Each message waits for three of the
    server's answers (MAIL, RCPT, DATA), so one connection to a server far away sends a few dozen
    a second; servers limit connections per client, so raise it only as far as yours allows."""

    settings_name: ClassVar[str] = "SMTP"
    secret_fields: ClassVar[frozenset[str]] = _SECRET_FIELDS

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> SmtpConfig:
        if (self.smtp_username is None) != (self.smtp_password is None):
            given, missing = (
                ("MOBILISE_SMTP_USERNAME", "MOBILISE_SMTP_PASSWORD")
                if self.smtp_password is None
                else ("MOBILISE_SMTP_PASSWORD", "MOBILISE_SMTP_USERNAME")
            )
            raise ValueError(
                f"{given} is set but {missing} is not: set both to log in to the server, "
                "or neither to send without logging in"
            )
        return self


class _Unavailable(Exception):
    """No usable connection: the alerts not sent yet are retryable."""


class _AuthFailed(Exception):
    """The server refused our credentials, or wants some we do not have."""


@dataclass
class _Line:
    """One connection to the server, as the sink keeps it across batches."""

    number: int
    client: aiosmtplib.SMTP | None = None
    sent: int = 0
    """Messages sent over this connection."""


class SmtpSink(Sink[SmtpConfig, Alert]):
    """Sends each alert as its own message through an SMTP server.

    Delivery guarantee: at least once, from the SMTP server's point of view. The framework
    records an alert as sent only after the server answered 250 to its message, and never
    hands a recorded alert to the sink again; SMTP has no idempotency key, so the only
    duplicates are of the batch in flight: a worker that dies after the server's 250 but
    before the record, or an answer lost to a timeout or dropped connection after the
    server had taken the message (reported as retryable, so sent again).

    Outcomes per alert: 250 accepted (provider id: the Message-ID header); 5xx (recipient
    refused, message rejected) permanent, with the server's code and text; 4xx retryable.
    A lost connection, a timeout or an unreachable server makes the alert and the rest of
    the batch retryable, and the next attempt reconnects. Refused credentials (or a server
    that demands them) raise :class:`RetryableError` for the batch, naming the variables
    to check. Addresses are replaced by ``[address]`` in errors and logs. Over several
    connections (``MOBILISE_SMTP_CONNECTIONS``) the same holds: once one of them finds the
    server unusable, none starts another message.
    """

    name = "smtp"
    accepts = Alert
    Config = SmtpConfig

    def __init__(self, config: SmtpConfig) -> None:
        super().__init__(config)
        self._identity = config.identity()
        self._sender = transport_address(parseaddr(config.from_email)[1])
        self._tls_context: ssl.SSLContext | None = None
        self._lines = [_Line(number) for number in range(config.smtp_connections)]
        self._ready = False
        # One batch at a time; each connection carries one transaction at a time.
        self._lock = asyncio.Lock()
        self._ahead: Lookahead[list[tuple[Alert, bytes | SinkOutcome]]] = Lookahead()

    async def setup(self) -> None:
        """Load the CA bundle; connect lazily, on the first batch.

        Raises:
            ConfigurationError: the CA bundle cannot be read.

        """
        if self.config.smtp_security != "none":
            self._tls_context = await asyncio.to_thread(_tls_context, self.config.smtp_ca_file)
        self._ready = True
        log.info(
            "smtp.ready",
            host=self.config.smtp_host,
            port=self.config.smtp_port,
            security=self.config.smtp_security,
            authenticated=self.config.smtp_username is not None,
            private_ca=self.config.smtp_ca_file is not None,
        )
        if self.config.smtp_security == "none" and self.config.smtp_username is not None:
            log.warning(
                "smtp.plaintext_credentials",
                detail="MOBILISE_SMTP_SECURITY is none: the password crosses the network unencrypted",
            )

    async def close(self) -> None:
        """Say QUIT and close the connections that are open."""
        self._ahead.discard()
        async with self._lock:
            for line in self._lines:
                await self._disconnect(line, reason="closing")

    async def prepare(self, alerts: Sequence[Alert]) -> None:
        """Render the next batch's messages in a thread while the current one is being sent."""
        unique = list({alert.alert_id: alert for alert in alerts}.values())
        self._ahead.start(alert_ids(unique), lambda: asyncio.to_thread(self._render_all, unique))

    async def deliver(self, alerts: Sequence[Alert]) -> Sequence[SinkOutcome]:
        """Send each alert of the batch as its own message; one outcome per alert id.

        Raises:
            RetryableError: the server refused our credentials (or wants some) before any
                alert of the batch was sent.

        """
        if not self._ready:
            raise RuntimeError("SmtpSink.deliver() was called before setup()")
        unique = list({alert.alert_id: alert for alert in alerts}.values())
        if not unique:
            return []
        # Rendering is CPU work: keep it off the event loop that also serves Kafka.
        rendered = await self._ahead.take(
            alert_ids(unique), lambda: asyncio.to_thread(self._render_all, unique)
        )
        async with self._lock:
            return await self._send_all(rendered)

    # -- rendering -------------------------------------------------------------------------

    def _render_all(self, alerts: list[Alert]) -> list[tuple[Alert, bytes | SinkOutcome]]:
        return [(alert, self._render(alert)) for alert in alerts]

    def _render(self, alert: Alert) -> bytes | SinkOutcome:
        # The message as bytes, sent as they are: an EmailMessage parsed from them and
        # flattened again by the client cost about 2.4 ms a message, 50 times the rendering.
        try:
            return alert_bytes(alert, self._identity)
        except (jinja2.TemplateError, ValueError) as exc:
            # The same alert fails the same way every time: a permanent failure.
            return SinkOutcome(record_id=alert.alert_id, accepted=False, error=f"cannot render: {exc!r}")

    # -- sending ---------------------------------------------------------------------------

    async def _send_all(self, rendered: list[tuple[Alert, bytes | SinkOutcome]]) -> list[SinkOutcome]:
        """Send the messages in order over the connections, each taking the next one not sent.

        When one connection finds the server unusable (or our credentials refused), no
        connection starts another message; those in flight keep their own answers, and the
        rest of the batch is retryable. The same once the sink is interrupted (the worker
        stops): the rest waits for the next worker.
        """
        waiting = deque(rendered)
        outcomes: list[SinkOutcome] = []
        stopped: list[BaseException] = []

        async def send_over(line: _Line) -> None:
            checked = False
            while waiting and not stopped and not self.interrupted:
                alert, message = waiting.popleft()
                if isinstance(message, SinkOutcome):
                    outcomes.append(message)
                    continue
                try:
                    client = await self._connection(line, check=not checked)
                    checked = True
                    outcome = await self._send(line, client, alert, message)
                except (_Unavailable, _AuthFailed) as exc:
                    waiting.appendleft((alert, message))
                    stopped.append(exc)
                    return
                except BaseException as exc:  # raised below, once the other connections stopped too
                    stopped.append(exc)
                    raise
                outcomes.append(outcome)

        to_send = sum(not isinstance(message, SinkOutcome) for _, message in rendered)
        lines = self._lines[: max(1, min(len(self._lines), to_send))]
        # Every connection finishes its message before an unexpected error is raised, so none
        # is still being sent when the batch is handed back for a retry.
        for result in await asyncio.gather(*(send_over(line) for line in lines), return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
        if not stopped:
            # Only an interrupt leaves messages waiting without an error: the worker is stopping.
            return outcomes + [
                message if isinstance(message, SinkOutcome) else SinkOutcome.interrupted(alert.alert_id)
                for alert, message in waiting
            ]
        first = stopped[0]
        if isinstance(first, _AuthFailed):
            if not any(o.accepted for o in outcomes):
                raise RetryableError(str(first), retry_after=_AUTH_RETRY_AFTER) from first
            # Some were sent on an earlier connection: report them, or they would be sent twice.
            return outcomes + _all_retryable(list(waiting), str(first), _AUTH_RETRY_AFTER)
        return outcomes + _all_retryable(list(waiting), str(first))

    async def _send(self, line: _Line, client: aiosmtplib.SMTP, alert: Alert, message: bytes) -> SinkOutcome:
        recipient = transport_address(str(alert.email))
        options: list[str] = []
        try:
            if needs_smtputf8(recipient) or needs_smtputf8(self._sender):
                if client.is_ehlo_or_helo_needed:
                    await client.ehlo()  # what the server offers is known after it
                if not client.supports_extension("smtputf8"):
                    return SinkOutcome(
                        record_id=alert.alert_id,
                        accepted=False,
                        error="the SMTP server cannot take an address with letters beyond ASCII before "
                        "its @ (it does not offer SMTPUTF8): send through a server that does",
                    )
                options.append("SMTPUTF8")
            line.sent += 1
            # (The client turns the message's line ends into CRLF and escapes leading dots.)
            await client.sendmail(self._sender, [recipient], message, mail_options=options)
        except asyncio.CancelledError:
            self._drop(line, reason="cancelled")  # mid-transaction: the connection cannot be reused
            raise
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0]
            return self._refused(alert, refusal.code, refusal.message, "refused the recipient")
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:  # "closing the transmission channel" (RFC 5321 §3.8)
                self._drop(line)
                raise _Unavailable(
                    _report_unavailable(self.config, "is closing the connection", exc)
                ) from exc
            if exc.code in _AUTH_CODES:
                self._drop(line)
                raise _AuthFailed(_report_auth_failure(self.config, exc)) from exc
            if isinstance(exc, aiosmtplib.SMTPSenderRefused) and exc.code >= 500:
                log.error(
                    "smtp.sender_refused",
                    host=self.config.smtp_host,
                    code=exc.code,
                    fix="check MOBILISE_FROM_EMAIL: the server must accept its address as sender "
                    "(for this login, if there is one)",
                )
                return self._refused(alert, exc.code, exc.message, "refused the sender")
            return self._refused(alert, exc.code, exc.message, "refused the message")
        except (aiosmtplib.SMTPNotSupported, ValueError) as exc:
            # An address this server cannot take (e.g. non-ASCII without SMTPUTF8): it won't later.
            return SinkOutcome(
                record_id=alert.alert_id, accepted=False, error=f"cannot send over SMTP: {_redact(str(exc))}"
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Disconnected or timed out, maybe after the server took the message: the state of
            # the connection is unknown, so it goes.
            self._drop(line)
            raise _Unavailable(
                _report_unavailable(self.config, "connection failed while sending", exc)
            ) from exc
        return SinkOutcome(
            record_id=alert.alert_id, accepted=True, provider_message_id=message_id(alert, self._identity)
        )

    def _refused(self, alert: Alert, code: int, text: str, what: str) -> SinkOutcome:
        permanent = code >= 500
        error = _clip(f"the SMTP server {what} ({code}): {_redact(text)}")
        log.warning(
            "smtp.refused",
            alert_id=alert.alert_id,
            case_id=alert.case.case_id,
            code=code,
            permanent=permanent,
        )
        return SinkOutcome(record_id=alert.alert_id, accepted=False, retryable=not permanent, error=error)

    # -- the connection --------------------------------------------------------------------

    async def _connection(self, line: _Line, *, check: bool) -> aiosmtplib.SMTP:
        """An open, authenticated connection: ``line``'s if it still works, else a new one.

        ``check`` asks the server (NOOP) whether a connection that sat idle since the last
        batch is still alive; servers close idle clients, sometimes without us noticing.
        """
        client = line.client
        if client is not None and not client.is_connected:
            self._drop(line, reason="closed_by_server")
        elif client is not None and line.sent >= self.config.smtp_max_messages_per_connection:
            await self._disconnect(line, reason="max_messages")
        elif client is not None and check:
            try:
                await client.noop()
            except (aiosmtplib.SMTPException, OSError):
                self._drop(line, reason="closed_by_server")
        if line.client is None:
            line.client = await self._connect(line)
            line.sent = 0
        return line.client

    async def _connect(self, line: _Line) -> aiosmtplib.SMTP:
        config = self.config
        client = aiosmtplib.SMTP(
            hostname=config.smtp_host,
            port=config.smtp_port,
            use_tls=config.smtp_security == "tls",
            start_tls=config.smtp_security == "starttls",
            tls_context=self._tls_context,
            timeout=config.smtp_timeout,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPResponseException as exc:  # a greeting other than 220
            client.close()
            raise _Unavailable(_report_unavailable(config, "refused the connection", exc)) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            raise _Unavailable(_report_unavailable(config, "cannot connect", exc)) from exc
        if config.smtp_username is not None and config.smtp_password is not None:
            try:
                await client.login(
                    config.smtp_username.get_secret_value(), config.smtp_password.get_secret_value()
                )
            except aiosmtplib.SMTPAuthenticationError as exc:
                client.close()
                raise _AuthFailed(_report_auth_failure(config, exc)) from exc
            except aiosmtplib.SMTPResponseException as exc:
                client.close()
                raise _Unavailable(_report_unavailable(config, "failed during login", exc)) from exc
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
                client.close()
                raise _Unavailable(
                    _report_unavailable(config, "connection failed during login", exc)
                ) from exc
            except aiosmtplib.SMTPException as exc:  # no AUTH offered, or no mechanism we know
                client.close()
                raise _AuthFailed(
                    f"the SMTP server {config.smtp_host}:{config.smtp_port} cannot log us in: {exc}; "
                    "check MOBILISE_SMTP_SECURITY (servers offer AUTH only over TLS) and "
                    "MOBILISE_SMTP_USERNAME/MOBILISE_SMTP_PASSWORD (unset both if it needs no login)"
                ) from exc
        log.info(
            "smtp.connected",
            host=config.smtp_host,
            connection=line.number,
            port=config.smtp_port,
            security=config.smtp_security,
            authenticated=config.smtp_username is not None,
        )
        return client

    async def _disconnect(self, line: _Line, *, reason: str) -> None:
        client, line.client = line.client, None
        if client is None:
            return
        if client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                pass  # leaving anyway
            finally:
                client.close()
        self._disconnected(line, reason)

    def _drop(self, line: _Line, reason: str = "failed") -> None:
        """Forget ``line``'s connection without a QUIT (it is closed, broken or in an unknown state)."""
        client, line.client = line.client, None
        if client is not None:
            client.close()
            self._disconnected(line, reason)

    def _disconnected(self, line: _Line, reason: str) -> None:
        log.info(
            "smtp.disconnected",
            host=self.config.smtp_host,
            connection=line.number,
            reason=reason,
            sent=line.sent,
        )


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        message = f"MOBILISE_SMTP_CA_FILE={str(ca_file)!r}: cannot load it as PEM CA certificates ({exc})"
        raise ConfigurationError(message) from exc


def _all_retryable(
    rest: Sequence[tuple[Alert, bytes | SinkOutcome]], error: str, retry_after: float | None = None
) -> list[SinkOutcome]:
    return [
        message
        if isinstance(message, SinkOutcome)
        else SinkOutcome(
            record_id=alert.alert_id, accepted=False, retryable=True, retry_after=retry_after, error=error
        )
        for alert, message in rest
    ]


def _report_unavailable(config: SmtpConfig, what: str, exc: BaseException) -> str:
    """Log why the server is unusable; return it as one line, with the fix for TLS mistakes."""
    where = f"{config.smtp_host}:{config.smtp_port}"
    error = _clip(f"the SMTP server {where} {what}: {_redact(_text(exc))}")
    fields: dict[str, Any] = {"host": config.smtp_host, "port": config.smtp_port, "error": error}
    if _caused_by(exc, ssl.SSLCertVerificationError):
        fix = (
            f"the server's certificate is not trusted for {config.smtp_host!r}: set MOBILISE_SMTP_CA_FILE "
            "to the CA bundle that signed it, and MOBILISE_SMTP_HOST to a name in the certificate"
        )
        log.error("smtp.untrusted_certificate", fix=fix, **fields)
        return f"{error}; {fix}"
    if _caused_by(exc, ssl.SSLError) or "STARTTLS" in str(exc):
        fix = "check MOBILISE_SMTP_SECURITY and MOBILISE_SMTP_PORT: starttls usually on 587, tls on 465"
        log.error("smtp.tls_failed", fix=fix, **fields)
        return f"{error}; {fix}"
    log.warning("smtp.unavailable", **fields)
    return error


def _report_auth_failure(config: SmtpConfig, exc: aiosmtplib.SMTPResponseException) -> str:
    message = _clip(
        f"the SMTP server {config.smtp_host}:{config.smtp_port} refused to log us in "
        f"({exc.code} {_redact(exc.message)}); check MOBILISE_SMTP_USERNAME and MOBILISE_SMTP_PASSWORD"
    )
    log.error("smtp.authentication_failed", host=config.smtp_host, port=config.smtp_port, code=exc.code)
    return message


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _text(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}"
    return str(exc) or type(exc).__name__


def _redact(text: str) -> str:
    # Servers quote the recipient in their replies; deliveries and logs never carry addresses.
    return _ADDRESS.sub("[address]", " ".join(text.split()))


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"
