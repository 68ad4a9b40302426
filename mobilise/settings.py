"""Settings from the environment, validated at start-up."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict

from .errors import ConfigurationError
from .links import LinkSettings

__all__ = ["SECRET_FIELDS", "Settings", "describe_problems", "load_settings"]

SECRET_FIELDS = frozenset({"secret_key"})
"""Fields whose values never appear in an error message."""


class Settings(LinkSettings):
    """Everything a worker, the web process or the CLI needs to know; each field is an environment variable.

    ``KAFKA_BOOTSTRAP_SERVERS`` keeps its conventional name; every other variable is the
    field name upper-cased with the ``MOBILISE_`` prefix (``partitions`` →
    ``MOBILISE_PARTITIONS``). The signed-link settings (``public_url``, ``secret_key``)
    come from :class:`mobilise.links.LinkSettings`, which the email sinks share.
    """

    model_config = SettingsConfigDict(env_prefix="MOBILISE_", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        default="localhost:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "MOBILISE_KAFKA_BOOTSTRAP_SERVERS"),
        pattern=r"^[^,\s]+:\d+(,[^,\s]+:\d+)*$",
    )
    """Comma-separated host:port list of Kafka brokers."""
    app_id: str = Field(default="mobilise", pattern=r"^[A-Za-z0-9._-]+$")
    """Consumer group and table namespace; workers with the same id share the work."""
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    """Prepended to every topic name, to run several pipelines on one cluster."""
    partitions: int = Field(default=8, ge=1, le=1024)
    """Partitions of every topic; the most workers that can share the matching."""
    replication_factor: int = Field(default=1, ge=1, le=7)
    """Replication factor of created topics (3 on a production cluster)."""
    sink: str = "outbox"
    """Name of the sink connector that delivers alerts."""
    sink_process: bool = False
    """Run the sink in a process of its own: rendering and sending then use another core
    while the worker matches, reads and records. The guarantees are the same. It costs a
    little CPU for the hand-over, so it pays only where a core is free (bench/RESULTS.md,
    section 9)."""
    connectors_file: Path | None = None
    """A connectors file (see ``mobilise connectors check``) whose connectors the worker runs too."""
    delivery_batch_size: int = Field(default=1000, ge=1, le=10_000)
    """Most alerts handed to the sink at once: the matcher cuts alert batches to this size,
    and each is delivered as one sink batch. 1,000 is SendGrid's most per request."""
    fetch_max_wait_ms: int = Field(default=500, ge=1, le=30_000)
    """Longest a fetch waits for records: the worst latency a hop adds on a broker that does
    not answer waiting fetches when records arrive, as the embedded one does not. 500 is
    Kafka's own default and aiokafka's (faust sets 1,500: the first alert of an update came
    2.3 s after its publish, 0.5–0.9 s at 500). At 100, a worker taking over partitions on the
    embedded broker stopped reading one of them in 2 of 4 runs of the SendGrid kill test; at
    500 the four kill tests passed in 3 runs of 3."""
    stall_seconds: float = Field(default=30.0, ge=0, le=3600)
    """How long an input partition may stay behind without its position moving before the
    worker fetches it again (streams/stalls.py): faust and aiokafka sometimes stop reading one
    assigned partition after a rebalance or a restart. 0 turns the watch off."""
    delivery_max_attempts: int = Field(default=8, ge=1, le=100)
    """Attempts for a retryable sink failure before the alert is dead-lettered."""
    sent_retention_days: int = Field(default=30, ge=14, le=3650)
    """How long a worker remembers that an alert was sent (streams/sent.py), so that reading it
    again sends nothing. At least 14: the alerts topic keeps a week, and Kafka keeps a segment
    up to a week longer. Rows of an update with a reminder still held are kept past it."""
    digest_local_time: str = Field(default="08:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    """When digests go out, ``HH:MM`` in each person's own zone (their local morning)."""
    digest_weekday: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] = (
        "monday"
    )
    """The day weekly digests go out, in each person's own zone."""
    clock_file: Path | None = None
    """For rehearsals and tests only: a file holding the epoch seconds the worker takes as
    "now" for waves, reminders and digests (so a day of action can be run through without
    waiting for it). Unset (always, in production): the system clock."""
    store: str = Field(default="memory://", pattern=r"^(memory|rocksdb|rocksdict)://")
    """Faust table store: ``memory://`` or ``rocksdict://`` for large shards on disk."""
    data_dir: Path = Path("data")
    """Where a worker keeps local table state."""
    log_format: Literal["json", "console"] = "json"
    """JSON lines for machines, or coloured console output for people."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level logged. Email addresses appear only at debug."""
    health_host: str = Field(default="127.0.0.1", min_length=1)
    """Interface of a worker's /health, /ready and /metrics (``0.0.0.0`` in a container)."""
    health_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of a worker's /health, /ready and /metrics; unset: not served (0: any free port)."""
    web_host: str = Field(default="127.0.0.1", min_length=1)
    """Interface ``mobilise web`` listens on (``0.0.0.0`` in a container)."""
    web_port: int = Field(default=8080, ge=0, le=65535)
    """Port ``mobilise web`` listens on."""
    sendgrid_webhook_public_key: str | None = None
    """The Signed Event Webhook's verification key from SendGrid's Mail Settings (base64 DER,
    or PEM). Unset, ``POST /webhooks/sendgrid`` refuses every request (503)."""
    sendgrid_webhook_max_age: float = Field(default=600.0, gt=0, le=86_400)
    """Oldest signed webhook timestamp accepted, in seconds (older requests are replays: 401)."""

    @field_validator("sendgrid_webhook_public_key")
    @classmethod
    def _is_a_p256_key(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        # SendGrid shows the key as base64 DER; a PEM copy is accepted too.
        body = "".join(line.strip() for line in value.strip().splitlines() if "-----" not in line)
        try:
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.hazmat.primitives.serialization import load_der_public_key

            key = load_der_public_key(base64.b64decode(body, validate=True))
        except (ValueError, binascii.Error) as exc:
            raise ValueError(
                "is not a public key: paste the verification key shown under SendGrid's Settings → "
                "Mail Settings → Signed Event Webhook"
            ) from exc
        if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
            raise ValueError("must be an ECDSA P-256 public key, as SendGrid's Signed Event Webhook uses")
        return body

    @property
    def bootstrap_servers(self) -> list[str]:
        """The broker list as host:port strings."""
        return self.kafka_bootstrap_servers.split(",")


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning a bad value into a ConfigurationError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # overrides are validated here
    except ValidationError as exc:
        raise ConfigurationError("invalid configuration: " + "; ".join(describe_problems(exc))) from exc


def describe_problems(exc: ValidationError, *, hidden: Collection[str] = SECRET_FIELDS) -> list[str]:
    """One line per problem, naming the environment variable, its value (unless ``hidden``) and the fix."""
    problems = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:  # a rule about several fields names them itself
            problems.append(message)
            continue
        field = str(error["loc"][0])
        variable = (
            "KAFKA_BOOTSTRAP_SERVERS" if field == "kafka_bootstrap_servers" else f"MOBILISE_{field.upper()}"
        )
        # Secrets stay out of error messages; the webhook key is public but too long to show.
        quiet = field in hidden or field == "sendgrid_webhook_public_key"
        shown = "" if quiet else f"={error.get('input')!r}"
        problems.append(f"{variable}{shown}: {message}")
    return problems
