"""The SMTP sink against a real SMTP server (aiosmtpd on 127.0.0.1; no broker).

The server speaks STARTTLS, implicit TLS or plain SMTP with a certificate from a private CA
made for the test, logs people in with AUTH LOGIN or PLAIN, keeps every message it
accepts, refuses the recipients it is told to, and counts connections.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from structlog.testing import capture_logs

from connectors.base import INTERRUPTED, SinkOutcome
from connectors.registry import load_sink
from connectors.smtp import SmtpConfig, SmtpSink
from mobilise.errors import ConfigurationError, RetryableError
from schemas import Alert, CaseUpdate, MatchReason, alert_id_for

USERNAME = "alerts@example.net"
PASSWORD = "correct horse battery staple"
READY_TIMEOUT = 60.0


# -- a certificate from a private CA -------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca: Path
    """The CA certificate: what the sink trusts (MOBILISE_SMTP_CA_FILE)."""
    cert: Path
    """The server's certificate, for localhost and 127.0.0.1."""
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_certificates(directory: Path) -> Certificates:
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mobilise test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    found = Certificates(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")
    found.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    found.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    found.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return found


# -- the SMTP server -----------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    """The message came over an encrypted connection."""

    def message(self) -> EmailMessage:
        # From text: the bytes parser reads UTF-8 in a header (RFC 6532) as unknown bytes.
        message = Parser(policy=policy.default).parsestr(self.content.decode("utf-8"))
        assert isinstance(message, EmailMessage)  # what policy.default parses into
        return message


@dataclass
class Mailbox:
    """The aiosmtpd handler: keeps what it accepts, refuses what it is told to, counts connections.

    Its methods run in the server's thread; the tests read the lists after the client's
    call returned (the server answers 250 only after ``handle_DATA`` stored the message).
    """

    messages: list[Received] = field(default_factory=list)
    refusals: dict[str, str] = field(default_factory=dict)
    """Recipient address → the reply to its RCPT TO, e.g. ``550 5.1.1 No such user``."""
    connections: int = 0
    mechanisms: list[str] = field(default_factory=list)
    """The AUTH mechanism of each successful login."""
    logins_left: int | None = None
    """How many more logins succeed (None: all with the right password)."""
    data_delay: float = 0.0
    """Seconds the server waits before answering each DATA (a slower or farther server)."""
    data_refusals: dict[str, str] = field(default_factory=dict)
    """Recipient address → the reply to the DATA of its message, at once, e.g. ``421 4.3.2 Shutting down``."""
    in_flight: int = 0
    most_in_flight: int = 0
    """The most messages whose DATA the server was answering at once."""

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # A client says EHLO again after STARTTLS, on the same connection (same SMTP object).
        if not getattr(server, "counted", False):
            server.counted = True  # type: ignore[attr-defined]
            self.connections += 1
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self.refusals.get(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert server.transport is not None
        refusal = self.data_refusals.get(str(envelope.rcpt_tos[0]))
        if refusal is not None:
            return refusal  # at once
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.data_delay)
        finally:
            self.in_flight -= 1
        content = envelope.original_content or b""
        self.messages.append(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                content=content,
                tls=server.transport.get_extra_info("cipher") is not None,
            )
        )
        return "250 2.0.0 Ok: queued"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == USERNAME.encode()
            and auth_data.password == PASSWORD.encode()
        )
        if ok and self.logins_left is not None:
            ok, self.logins_left = self.logins_left > 0, self.logins_left - 1
        if ok:
            self.mechanisms.append(mechanism)
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    def by_recipient(self) -> dict[str, EmailMessage]:
        return {r.rcpt_tos[0]: r.message() for r in self.messages}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SmtpServer:
    """An aiosmtpd server in a thread; :meth:`stop` and :meth:`start` again on the same port.

    Args:
        security: ``starttls`` (STARTTLS required before anything else), ``tls`` (implicit
            TLS) or ``none``.
        certificates: The server's certificate (for ``starttls`` and ``tls``).
        login: Require AUTH before MAIL.
        mechanisms: The AUTH mechanisms offered.
        smtputf8: Offer SMTPUTF8 (RFC 6531): take addresses beyond ASCII.

    """

    def __init__(
        self,
        security: str = "starttls",
        certificates: Certificates | None = None,
        *,
        login: bool = True,
        mechanisms: tuple[str, ...] = ("LOGIN", "PLAIN"),
        smtputf8: bool = False,
    ) -> None:
        self.mailbox = Mailbox()
        self.security = security
        self.port = free_port()
        self._kwargs: dict[str, Any] = {
            "server_hostname": "mail.test",
            "ready_timeout": READY_TIMEOUT,
            "enable_SMTPUTF8": smtputf8,
        }
        context = certificates.server_context() if certificates else None
        if security == "starttls":
            assert context is not None
            self._kwargs.update(tls_context=context, require_starttls=True, auth_require_tls=True)
        elif security == "tls":
            assert context is not None
            # aiosmtpd does not see implicit TLS as TLS for AUTH; the connection is encrypted anyway.
            self._kwargs.update(ssl_context=context, auth_require_tls=False)
        else:
            self._kwargs.update(auth_require_tls=False)
        if login:
            self._kwargs.update(
                authenticator=self.mailbox.authenticate,
                auth_required=True,
                auth_exclude_mechanism=[m for m in ("LOGIN", "PLAIN") if m not in mechanisms],
            )
        self._controller: Controller | None = None

    def start(self) -> SmtpServer:
        assert self._controller is None
        self._controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port, **self._kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self, certificates: Certificates | None, *, login: bool = True) -> dict[str, str]:
        """The sink's settings for this server, as environment variables."""
        env = {
            "MOBILISE_SMTP_HOST": "127.0.0.1",
            "MOBILISE_SMTP_PORT": str(self.port),
            "MOBILISE_SMTP_SECURITY": self.security,
            "MOBILISE_SMTP_TIMEOUT": "60",
            "MOBILISE_FROM_EMAIL": "Network alerts <alerts@example.net>",
            "MOBILISE_UNSUBSCRIBE_EMAIL": "stop@example.net",
        }
        if certificates is not None:
            env["MOBILISE_SMTP_CA_FILE"] = str(certificates.ca)
        if login:
            env.update(MOBILISE_SMTP_USERNAME=USERNAME, MOBILISE_SMTP_PASSWORD=PASSWORD)
        return env

    def config(self, certificates: Certificates | None, *, login: bool = True, **changes: Any) -> SmtpConfig:
        values: dict[str, Any] = {
            name.removeprefix("MOBILISE_").lower(): value
            for name, value in self.env(certificates, login=login).items()
        }
        return SmtpConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture
def starttls(certificates: Certificates) -> Iterator[SmtpServer]:
    with SmtpServer("starttls", certificates) as server:
        yield server


# -- alerts --------------------------------------------------------------------------------


def make_case(**changes: Any) -> CaseUpdate:
    return CaseUpdate.model_validate_json(
        json.dumps(
            {
                "case_id": "bd-1",
                "status": "urgent_action",
                "title": {"en": "Fired for organising", "fr": "Licenciés pour s'être syndiqués"},
                "summary": {"en": "Twelve leaders <script>alert(1)</script> dismissed."},
                "country": "BD",
                "brands": ["H&M"],
                "factory": {"name": "Dhaka Knitwear", "city": "Gazipur"},
                "issues": ["union_busting"],
                "occurred_at": "2026-01-01T00:00:00Z",
                "published_by": "p",
                "internal": {"workers_at_risk": ["Hidden Person"], "note": "do-not-send-this"},
                "action_call": {
                    "kind": "email_brand",
                    "instructions": {"en": "Write to the CEO."},
                    "target": {"name": "H&M", "email": "ceo@example.com"},
                    "deadline": "2026-02-01T09:30:00+01:00",
                },
                **changes,
            }
        )
    )


def make_alerts(count: int, case: CaseUpdate | None = None, language: str = "en") -> list[Alert]:
    case = case or make_case()
    return [
        Alert(
            alert_id=alert_id_for(case.event_id, f"sub-{i}"),
            event_id=case.event_id,
            subscriber_id=f"sub-{i}",
            email=f"person{i}@example.org",
            name="Rahima" if i == 0 else None,
            language=language,
            case=case.public(),
            reason=MatchReason(country="BD", interests=("union_busting",)),
            created_at=datetime(2026, 1, 2, tzinfo=UTC),
        )
        for i in range(count)
    ]


def by_id(outcomes: Any) -> dict[str, SinkOutcome]:
    return {o.record_id: o for o in outcomes}


def deliver_once(config: SmtpConfig, alerts: list[Alert]) -> dict[str, SinkOutcome]:
    """The outcomes of one batch through a sink made, set up and closed for it."""

    async def scenario() -> list[SinkOutcome]:
        sink = SmtpSink(config)
        await sink.setup()
        try:
            return list(await sink.deliver(alerts))
        finally:
            await sink.close()

    return by_id(asyncio.run(scenario()))


# -- settings ------------------------------------------------------------------------------


def test_the_smtp_sink_is_found_through_the_entry_point_group() -> None:
    assert load_sink("smtp") is SmtpSink


def test_settings_come_from_the_environment_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, certificates: Certificates
) -> None:
    monkeypatch.setenv("MOBILISE_SMTP_HOST", "mail.example.net")
    monkeypatch.setenv("MOBILISE_SMTP_SECURITY", "tls")
    monkeypatch.setenv("MOBILISE_SMTP_PORT", "465")
    monkeypatch.setenv("MOBILISE_SMTP_USERNAME", USERNAME)
    monkeypatch.setenv("MOBILISE_SMTP_PASSWORD", PASSWORD)
    monkeypatch.setenv("MOBILISE_SMTP_CA_FILE", str(certificates.ca))
    config = SmtpConfig()
    assert (config.smtp_host, config.smtp_port, config.smtp_security) == ("mail.example.net", 465, "tls")
    assert config.smtp_password is not None and config.smtp_password.get_secret_value() == PASSWORD
    assert config.smtp_ca_file == certificates.ca
    assert config.smtp_max_messages_per_connection == 100
    for shown in (str(config), repr(config)):
        assert PASSWORD not in shown and USERNAME not in shown


def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MOBILISE_SMTP_HOST", "MOBILISE_SMTP_USERNAME", "MOBILISE_SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match=r"MOBILISE_SMTP_HOST"):
        SmtpConfig()
    with pytest.raises(ConfigurationError, match=r"MOBILISE_SMTP_SECURITY='ssl'"):
        SmtpConfig(smtp_host="h", smtp_security="ssl")
    with pytest.raises(ConfigurationError, match=r"MOBILISE_SMTP_CA_FILE=.*missing\.pem"):
        SmtpConfig(smtp_host="h", smtp_ca_file=tmp_path / "missing.pem")
    with pytest.raises(ConfigurationError) as only_password:
        SmtpConfig(smtp_host="h", smtp_password=PASSWORD)
    assert "MOBILISE_SMTP_PASSWORD is set but MOBILISE_SMTP_USERNAME is not" in str(only_password.value)
    assert PASSWORD not in str(only_password.value)
    with pytest.raises(ConfigurationError, match=r"MOBILISE_SMTP_USERNAME is set but MOBILISE_SMTP_PASSWORD"):
        SmtpConfig(smtp_host="h", smtp_username=USERNAME)


def test_a_ca_file_that_is_no_pem_fails_at_setup(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    sink = SmtpSink(SmtpConfig(smtp_host="127.0.0.1", smtp_ca_file=bogus))
    with pytest.raises(ConfigurationError, match=r"MOBILISE_SMTP_CA_FILE=.*ca\.pem"):
        asyncio.run(sink.setup())


def test_nothing_connects_before_the_first_batch(starttls: SmtpServer, certificates: Certificates) -> None:
    async def scenario() -> None:
        sink = SmtpSink(starttls.config(certificates))
        await sink.setup()
        await sink.close()

    asyncio.run(scenario())
    assert starttls.mailbox.connections == 0


# -- sending -------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_starttls_with_login_delivers_the_rendered_email(certificates: Certificates, mechanism: str) -> None:
    alerts = make_alerts(2)
    with SmtpServer("starttls", certificates, mechanisms=(mechanism,)) as server:

        async def scenario() -> list[SinkOutcome]:
            sink = SmtpSink(server.config(certificates))
            await sink.setup()
            try:
                return list(await sink.deliver(alerts))
            finally:
                await sink.close()

        with capture_logs() as logs:
            outcomes = asyncio.run(scenario())

    assert all(o.accepted for o in outcomes) and len(outcomes) == 2
    assert server.mailbox.mechanisms == [mechanism]
    assert all(r.tls for r in server.mailbox.messages)
    assert [r.mail_from for r in server.mailbox.messages] == ["alerts@example.net"] * 2
    received = server.mailbox.by_recipient()
    assert sorted(received) == ["person0@example.org", "person1@example.org"]
    message = received["person0@example.org"]
    assert message["To"].addresses[0].addr_spec == "person0@example.org"
    assert message["Subject"] == "URGENT ACTION: Fired for organising"
    assert message["List-Unsubscribe"] == "<mailto:stop@example.net?subject=unsubscribe%20sub-0>"
    assert message["X-Mobilise-Alert-Id"] == alerts[0].alert_id
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert "Hello Rahima" in text.get_content() and "Write to the CEO." in text.get_content()
    assert "&lt;script&gt;" in html.get_content() and "<script>" not in html.get_content()
    for raw in (r.content for r in server.mailbox.messages):
        assert b"Hidden Person" not in raw and b"do-not-send-this" not in raw
    assert by_id(outcomes)[alerts[0].alert_id].provider_message_id == message["Message-ID"]
    assert message["Message-ID"] == f"<{alerts[0].alert_id}@example.net>"
    connected = [e for e in logs if e["event"] == "smtp.connected"]
    assert connected == [
        {
            "event": "smtp.connected",
            "log_level": "info",
            "host": "127.0.0.1",
            "connection": 0,
            "port": server.port,
            "security": "starttls",
            "authenticated": True,
        }
    ]
    assert not any("@" in str(value) for e in logs if e["log_level"] == "info" for value in e.values())


def test_implicit_tls(certificates: Certificates) -> None:
    alerts = make_alerts(3)
    with SmtpServer("tls", certificates) as server:

        async def scenario() -> list[SinkOutcome]:
            sink = SmtpSink(server.config(certificates))
            await sink.setup()
            try:
                return list(await sink.deliver(alerts))
            finally:
                await sink.close()

        outcomes = asyncio.run(scenario())

    assert all(o.accepted for o in outcomes) and len(outcomes) == 3
    assert len(server.mailbox.messages) == 3 and all(r.tls for r in server.mailbox.messages)
    assert server.mailbox.mechanisms and server.mailbox.connections == 1


def test_plain_smtp_without_login() -> None:
    alerts = make_alerts(2)
    with SmtpServer("none", login=False) as server:

        async def scenario() -> list[SinkOutcome]:
            sink = SmtpSink(server.config(None, login=False))
            await sink.setup()
            try:
                return list(await sink.deliver(alerts))
            finally:
                await sink.close()

        outcomes = asyncio.run(scenario())

    assert all(o.accepted for o in outcomes)
    assert len(server.mailbox.messages) == 2 and not any(r.tls for r in server.mailbox.messages)


def test_a_server_certificate_the_sink_does_not_trust_is_retryable_and_says_how_to_fix_it(
    starttls: SmtpServer, certificates: Certificates
) -> None:
    alerts = make_alerts(2)

    async def scenario() -> list[SinkOutcome]:
        sink = SmtpSink(starttls.config(None))  # system trust only: our private CA is unknown
        await sink.setup()
        try:
            return list(await sink.deliver(alerts))
        finally:
            await sink.close()

    with capture_logs() as logs:
        outcomes = asyncio.run(scenario())

    assert len(outcomes) == 2 and all(o.retryable and not o.accepted for o in outcomes)
    assert all("MOBILISE_SMTP_CA_FILE" in (o.error or "") for o in outcomes)
    assert any(e["event"] == "smtp.untrusted_certificate" for e in logs)
    assert starttls.mailbox.messages == []


def test_a_wrong_password_fails_the_batch_with_a_retryable_error(
    starttls: SmtpServer, certificates: Certificates
) -> None:
    async def scenario() -> None:
        sink = SmtpSink(starttls.config(certificates, smtp_password="wrong"))
        await sink.setup()
        try:
            await sink.deliver(make_alerts(2))
        finally:
            await sink.close()

    with pytest.raises(RetryableError) as failed:
        asyncio.run(scenario())
    assert "MOBILISE_SMTP_USERNAME" in str(failed.value) and "MOBILISE_SMTP_PASSWORD" in str(failed.value)
    assert "wrong" not in str(failed.value)
    assert failed.value.retry_after is not None and failed.value.retry_after > 0
    assert starttls.mailbox.messages == []


def test_a_server_that_wants_a_login_we_do_not_have_fails_the_batch(
    starttls: SmtpServer, certificates: Certificates
) -> None:
    async def scenario() -> None:
        sink = SmtpSink(starttls.config(certificates, login=False))
        await sink.setup()
        try:
            await sink.deliver(make_alerts(1))
        finally:
            await sink.close()

    with pytest.raises(RetryableError, match=r"530.*MOBILISE_SMTP_USERNAME"):
        asyncio.run(scenario())


# -- one connection ------------------------------------------------------------------------


def test_one_connection_carries_many_alerts_over_several_batches(
    starttls: SmtpServer, certificates: Certificates
) -> None:
    alerts = make_alerts(12)

    async def scenario() -> list[SinkOutcome]:
        sink = SmtpSink(starttls.config(certificates, smtp_max_messages_per_connection=12))
        await sink.setup()
        try:
            outcomes = list(await sink.deliver(alerts[:5]))
            outcomes += await sink.deliver(alerts[5:6])
            outcomes += await sink.deliver(alerts[6:])
            return outcomes
        finally:
            await sink.close()

    outcomes = asyncio.run(scenario())
    assert len(outcomes) == 12 and all(o.accepted for o in outcomes)
    assert len(starttls.mailbox.messages) == 12
    assert starttls.mailbox.connections == 1
    assert len(starttls.mailbox.mechanisms) == 1  # one login for the whole lot


def test_a_new_connection_after_the_maximum_number_of_messages(
    starttls: SmtpServer, certificates: Certificates
) -> None:
    alerts = make_alerts(7)

    async def scenario() -> list[SinkOutcome]:
        sink = SmtpSink(starttls.config(certificates, smtp_max_messages_per_connection=3))
        await sink.setup()
        try:
            return list(await sink.deliver(alerts[:4])) + list(await sink.deliver(alerts[4:]))
        finally:
            await sink.close()

    outcomes = asyncio.run(scenario())
    assert len(outcomes) == 7 and all(o.accepted for o in outcomes)
    assert len(starttls.mailbox.messages) == 7
    assert starttls.mailbox.connections == 3  # 3 + 3 + 1


def test_an_alert_given_twice_in_a_batch_is_sent_once(
    starttls: SmtpServer, certificates: Certificates
) -> None:
    alert = make_alerts(1)[0]

    async def scenario() -> list[SinkOutcome]:
        sink = SmtpSink(starttls.config(certificates))
        await sink.setup()
        try:
            return list(await sink.deliver([alert, alert]))
        finally:
            await sink.close()

    outcomes = asyncio.run(scenario())
    assert [o.record_id for o in outcomes] == [alert.alert_id] and outcomes[0].accepted
    assert len(starttls.mailbox.messages) == 1


@pytest.mark.parametrize("smtputf8", [True, False], ids=["server-with-smtputf8", "server-without"])
def test_internationalised_addresses_go_in_the_form_each_server_takes(smtputf8: bool) -> None:
    # The schemas keep an address's Unicode form, even of a domain given in ASCII (IDNA).
    plain, domain, local = make_alerts(3)
    domain = domain.model_copy(update={"email": "ana@exämple.org"})
    local = local.model_copy(update={"email": "josé@exämple.org", "name": "José"})
    with SmtpServer("none", login=False, smtputf8=smtputf8) as server:
        outcomes = deliver_once(server.config(None, login=False), [plain, domain, local])

    # Any server takes a domain in its ASCII form, in the envelope and in the To header.
    assert outcomes[plain.alert_id].accepted and outcomes[domain.alert_id].accepted
    received = server.mailbox.by_recipient()
    assert received["ana@xn--exmple-cua.org"]["To"].addresses[0].addr_spec == "ana@xn--exmple-cua.org"
    assert received["ana@xn--exmple-cua.org"]["Message-ID"] == outcomes[domain.alert_id].provider_message_id
    sent_local = outcomes[local.alert_id]
    if smtputf8:
        # A local part beyond ASCII has no other form: it goes as UTF-8, in the header too.
        assert sent_local.accepted
        message = received["josé@xn--exmple-cua.org"]
        assert message["To"].addresses[0].addr_spec == "josé@xn--exmple-cua.org"
        assert message["To"].addresses[0].display_name == "José"
        assert sorted(received) == [
            "ana@xn--exmple-cua.org",
            "josé@xn--exmple-cua.org",
            "person0@example.org",
        ]
    else:
        # Nothing to try again later on this server: a permanent failure that says why.
        assert not sent_local.accepted and not sent_local.retryable
        assert sent_local.error is not None and "SMTPUTF8" in sent_local.error and "@" in sent_local.error
        assert "josé" not in sent_local.error
        assert sorted(received) == ["ana@xn--exmple-cua.org", "person0@example.org"]


def test_several_connections_share_a_batch_and_send_each_message_once() -> None:
    alerts = make_alerts(9)
    with SmtpServer("none", login=False) as server:
        server.mailbox.data_delay = 0.2  # long enough for every connection to be mid-message at once
        outcomes = deliver_once(server.config(None, login=False, smtp_connections=3), alerts)

    assert sorted(outcomes) == sorted(a.alert_id for a in alerts) and all(
        o.accepted for o in outcomes.values()
    )
    assert sorted(r.message()["X-Mobilise-Alert-Id"] for r in server.mailbox.messages) == sorted(outcomes)
    assert server.mailbox.connections == 3 and server.mailbox.most_in_flight == 3


def test_a_server_closing_mid_batch_stops_every_connection_and_loses_nothing() -> None:
    alerts = make_alerts(12)
    with SmtpServer("none", login=False) as server:
        # Each message takes half a second but the fourth, which the server refuses at once:
        # the three connections send 0, 1, 2, then one gets 3 while the others have 4 and 5.
        server.mailbox.data_delay = 0.5
        server.mailbox.data_refusals[alerts[3].email] = "421 4.3.2 Service shutting down"
        outcomes = deliver_once(server.config(None, login=False, smtp_connections=3), alerts)

    assert sorted(outcomes) == sorted(a.alert_id for a in alerts)  # one outcome each
    received = {r.message()["X-Mobilise-Alert-Id"] for r in server.mailbox.messages}
    accepted = {alert_id for alert_id, o in outcomes.items() if o.accepted}
    assert accepted == received  # accepted exactly when the server took it
    not_sent = {alert_id for alert_id, o in outcomes.items() if not o.accepted}
    assert all(outcomes[a].retryable and "421" in (outcomes[a].error or "") for a in not_sent)
    # The messages in flight when one connection found the server closing kept their answers;
    # no connection started another one.
    assert (
        {a.alert_id for a in alerts[:3]}
        <= received
        <= {a.alert_id for i, a in enumerate(alerts) if i in (0, 1, 2, 4, 5)}
    )
    assert {a.alert_id for a in alerts[3:4] + alerts[6:]} <= not_sent


@pytest.mark.parametrize("connections", [1, 3])
def test_an_interrupted_batch_ends_after_the_messages_in_flight_and_leaves_the_rest(connections: int) -> None:
    alerts = make_alerts(12)
    with SmtpServer("none", login=False) as server:
        server.mailbox.data_delay = 0.3  # 3.6 s for the batch over one connection

        async def scenario() -> tuple[list[SinkOutcome], list[SinkOutcome]]:
            sink = SmtpSink(server.config(None, login=False, smtp_connections=connections))
            await sink.setup()
            try:
                batch = asyncio.create_task(sink.deliver(alerts))
                for _ in range(200):  # until the server has answered one message (bounded)
                    if server.mailbox.messages:
                        break
                    await asyncio.sleep(0.02)
                await sink.interrupt()
                first = list(await batch)
                return first, list(await sink.deliver(make_alerts(2)))  # and any batch after it
            finally:
                await sink.close()

        outcomes, later = asyncio.run(scenario())

    assert sorted(o.record_id for o in outcomes) == sorted(a.alert_id for a in alerts)  # one outcome each
    received = {r.message()["X-Mobilise-Alert-Id"] for r in server.mailbox.messages}
    accepted = {o.record_id for o in outcomes if o.accepted}
    assert accepted == received  # the messages in flight at the interrupt kept their answers
    assert 1 <= len(received) <= 2 * connections  # and no connection started another
    left = [o for o in outcomes if not o.accepted]
    assert len(left) == len(alerts) - len(received)
    assert all(o.retryable and o.error == INTERRUPTED for o in left)
    assert all(o.retryable and o.error == INTERRUPTED for o in later) and len(later) == 2


# -- refusals and failures -----------------------------------------------------------------


def test_a_refused_recipient_fails_only_its_own_alert(
    starttls: SmtpServer, certificates: Certificates
) -> None:
    alerts = make_alerts(4)
    starttls.mailbox.refusals["person1@example.org"] = (
        "550 5.1.1 <person1@example.org>: Recipient address rejected: User unknown"
    )
    starttls.mailbox.refusals["person2@example.org"] = "451 4.3.0 <person2@example.org>: Try again later"

    async def scenario() -> list[SinkOutcome]:
        sink = SmtpSink(starttls.config(certificates))
        await sink.setup()
        try:
            return list(await sink.deliver(alerts))
        finally:
            await sink.close()

    with capture_logs() as logs:
        outcomes = by_id(asyncio.run(scenario()))

    refused, later = outcomes[alerts[1].alert_id], outcomes[alerts[2].alert_id]
    assert not refused.accepted and not refused.retryable
    assert refused.error is not None and "550" in refused.error and "User unknown" in refused.error
    assert not later.accepted and later.retryable
    assert later.error is not None and "451" in later.error
    for outcome in (refused, later):  # deliveries carry ids, never addresses
        assert "@" not in (outcome.error or "")
    assert outcomes[alerts[0].alert_id].accepted and outcomes[alerts[3].alert_id].accepted
    assert sorted(starttls.mailbox.by_recipient()) == ["person0@example.org", "person3@example.org"]
    assert starttls.mailbox.connections == 1
    assert {(e["alert_id"], e["code"], e["permanent"]) for e in logs if e["event"] == "smtp.refused"} == {
        (alerts[1].alert_id, 550, True),
        (alerts[2].alert_id, 451, False),
    }
    assert not any("@" in str(value) for e in logs for value in e.values())


def test_a_stopped_server_makes_the_batch_retryable_and_the_sink_reconnects_when_it_is_back(
    starttls: SmtpServer, certificates: Certificates
) -> None:
    first, during, after = (
        make_alerts(2),
        make_alerts(3, make_case(status="escalated")),
        make_alerts(2, make_case(status="brand_contacted")),
    )

    async def scenario() -> tuple[list[SinkOutcome], list[SinkOutcome], list[SinkOutcome]]:
        sink = SmtpSink(starttls.config(certificates))
        await sink.setup()
        try:
            before = list(await sink.deliver(first))
            starttls.stop()
            down = list(await sink.deliver(during))
            starttls.start()
            back = list(await sink.deliver(after))
            return before, down, back
        finally:
            await sink.close()

    before, down, back = asyncio.run(scenario())
    assert all(o.accepted for o in before)
    assert len(down) == 3 and all(o.retryable and not o.accepted for o in down)
    assert all("127.0.0.1" in (o.error or "") for o in down)
    assert len(back) == 2 and all(o.accepted for o in back)
    assert sorted(r.message()["X-Mobilise-Alert-Id"] for r in starttls.mailbox.messages) == sorted(
        a.alert_id for a in first + after
    )
    assert starttls.mailbox.connections == 2


def test_a_connection_the_server_closed_is_replaced_without_a_failure(
    starttls: SmtpServer, certificates: Certificates
) -> None:
    first, second = make_alerts(1), make_alerts(2, make_case(status="escalated"))

    async def scenario() -> list[SinkOutcome]:
        sink = SmtpSink(starttls.config(certificates))
        await sink.setup()
        try:
            assert all(o.accepted for o in await sink.deliver(first))
            # The server drops idle clients (a restart does the same to every client).
            starttls.stop()
            starttls.start()
            return list(await sink.deliver(second))
        finally:
            await sink.close()

    outcomes = asyncio.run(scenario())
    assert len(outcomes) == 2 and all(o.accepted for o in outcomes)
    assert len(starttls.mailbox.messages) == 3 and starttls.mailbox.connections == 2


def test_refused_credentials_after_some_alerts_were_sent_do_not_lose_those(
    starttls: SmtpServer, certificates: Certificates
) -> None:
    alerts = make_alerts(4)
    starttls.mailbox.logins_left = 1  # the password is changed while the first connection is open

    async def scenario() -> list[SinkOutcome]:
        sink = SmtpSink(starttls.config(certificates, smtp_max_messages_per_connection=2))
        await sink.setup()
        try:
            return list(await sink.deliver(alerts))
        finally:
            await sink.close()

    outcomes = by_id(asyncio.run(scenario()))
    assert [outcomes[a.alert_id].accepted for a in alerts] == [True, True, False, False]
    for alert in alerts[2:]:
        outcome = outcomes[alert.alert_id]
        assert outcome.retryable and "MOBILISE_SMTP_PASSWORD" in (outcome.error or "")
    assert len(starttls.mailbox.messages) == 2
