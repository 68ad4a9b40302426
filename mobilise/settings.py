"""Settings from the environment, validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigurationError

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    """Everything a worker or the CLI needs to know; each field is an environment variable.

    ``KAFKA_BOOTSTRAP_SERVERS`` keeps its conventional name; every other variable is the
    field name upper-cased with the ``MOBILISE_`` prefix (``partitions`` →
    ``MOBILISE_PARTITIONS``).
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
    delivery_batch_size: int = Field(default=500, ge=1, le=10_000)
    """Most alerts handed to the sink at once."""
    delivery_batch_seconds: float = Field(default=0.5, gt=0, le=60)
    """Longest wait to fill a batch."""
    delivery_max_attempts: int = Field(default=8, ge=1, le=100)
    """Attempts for a retryable sink failure before the alert is dead-lettered."""
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

    @property
    def bootstrap_servers(self) -> list[str]:
        """The broker list as host:port strings."""
        return self.kafka_bootstrap_servers.split(",")


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning a bad value into a ConfigurationError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # overrides are validated here
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            variable = (
                "KAFKA_BOOTSTRAP_SERVERS"
                if field == "kafka_bootstrap_servers"
                else f"MOBILISE_{field.upper()}"
            )
            problems.append(f"{variable}={error.get('input')!r}: {error['msg']}")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from exc
