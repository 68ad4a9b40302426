"""How every Kafka client of the process authenticates: TLS and SASL settings.

One set of settings for the workers (faust/aiokafka) and for the CLI and web process
(kafka-python), read from ``MOBILISE_KAFKA_*`` variables. The default is plaintext
without authentication, as on the embedded broker and a local docker-compose cluster.
"""

from __future__ import annotations

import ssl
from typing import Any, Literal

import faust
from pydantic import FilePath, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigurationError

__all__ = ["KafkaSecurity", "kafka_security"]

_SECRETS = frozenset({"sasl_password"})


class KafkaSecurity(BaseSettings):
    """TLS and SASL settings of the Kafka clients (environment: ``MOBILISE_KAFKA_…``)."""

    model_config = SettingsConfigDict(env_prefix="MOBILISE_KAFKA_", extra="ignore", frozen=True)

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """``SASL_SSL`` for most managed clusters; ``SSL`` for TLS (optionally with a client
    certificate); ``SASL_PLAINTEXT`` only inside a trusted network."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    """SASL mechanism, for the ``SASL_*`` protocols."""
    sasl_username: str | None = None
    """SASL user name (an API key on some managed services)."""
    sasl_password: SecretStr | None = None
    """SASL password (an API secret on some managed services); masked when printed."""
    ssl_cafile: FilePath | None = None
    """PEM bundle of the CAs that signed the brokers' certificates (default: the system's)."""
    ssl_certfile: FilePath | None = None
    """Client certificate (PEM) for mutual TLS."""
    ssl_keyfile: FilePath | None = None
    """Private key (PEM) of the client certificate."""
    ssl_check_hostname: bool = True
    """Check that a broker's certificate names the host connected to."""

    @model_validator(mode="after")
    def _complete(self) -> KafkaSecurity:
        if self.security_protocol.startswith("SASL_") and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                f"MOBILISE_KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs "
                "MOBILISE_KAFKA_SASL_USERNAME and MOBILISE_KAFKA_SASL_PASSWORD"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError(
                "set MOBILISE_KAFKA_SSL_CERTFILE and MOBILISE_KAFKA_SSL_KEYFILE together, or neither"
            )
        if self.security_protocol == "PLAINTEXT" and (
            self.sasl_username or self.ssl_cafile or self.ssl_certfile
        ):
            raise ValueError(
                "TLS or SASL settings are given but MOBILISE_KAFKA_SECURITY_PROTOCOL is PLAINTEXT: "
                "set it to SSL, SASL_SSL or SASL_PLAINTEXT"
            )
        return self

    @property
    def uses_tls(self) -> bool:
        """Whether connections are encrypted."""
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for the brokers, or None without TLS.

        Raises:
            ConfigurationError: a certificate or key file cannot be loaded.

        """
        if not self.uses_tls:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
            if self.ssl_certfile is not None and self.ssl_keyfile is not None:
                context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(
                f"cannot load the Kafka TLS files (MOBILISE_KAFKA_SSL_CAFILE / _CERTFILE / _KEYFILE): {exc}"
            ) from exc
        context.check_hostname = self.ssl_check_hostname
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's clients and aiokafka's (the same names in both)."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.security_protocol.startswith("SASL_"):
            assert self.sasl_password is not None  # checked by _complete
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password.get_secret_value(),
            )
        return options

    def faust_credentials(self) -> faust.SASLCredentials | faust.SSLCredentials | None:
        """The ``broker_credentials`` of the worker's Faust app, or None for plaintext."""
        if self.security_protocol.startswith("SASL_"):
            assert self.sasl_password is not None  # checked by _complete
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.get_secret_value(),
                mechanism=self.sasl_mechanism,
                ssl_context=self.ssl_context(),
            )
        if self.security_protocol == "SSL":
            return faust.SSLCredentials(self.ssl_context())
        return None


def kafka_security() -> KafkaSecurity:
    """Read the Kafka security settings from the environment.

    Raises:
        ConfigurationError: a setting is invalid; the message names the variable.

    """
    try:
        return KafkaSecurity()
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            if not error["loc"]:
                problems.append(message)
                continue
            field = str(error["loc"][0])
            shown = "" if field in _SECRETS else f"={error.get('input')!r}"
            problems.append(f"MOBILISE_KAFKA_{field.upper()}{shown}: {message}")
        raise ConfigurationError("invalid Kafka security settings: " + "; ".join(problems)) from exc
