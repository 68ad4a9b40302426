"""The connectors file: which connectors run, on which topic, with which settings.

YAML (or JSON), for example::

    connectors:
      - name: partner-tracker          # unique; names its checkpoints and consumer group
        type: webhook-source           # an installed connector type (`mobilise connectors list`)
        topic: case-updates
        settings:
          port: 8090
          secret: ${TRACKER_WEBHOOK_SECRET}   # secrets come from the environment

Every problem of a file is reported at once, each naming the connector and the field.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mobilise.errors import ConfigurationError
from mobilise.inputs import InvalidInput

from .base import Connector, Sink
from .records import SINK_TOPICS
from .registry import load_connector
from .source import Source

__all__ = [
    "ConnectorDeclaration",
    "ConnectorsFile",
    "ConnectorsFileError",
    "LoadedConnector",
    "load_connectors",
]

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConnectorsFileError(InvalidInput):
    """A connectors file that cannot be used; ``problems`` names each bad field."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))


class ConnectorDeclaration(BaseModel):
    """One connector of the file."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    """Unique in the file; lowercase letters, digits and dashes. Names its checkpoints and group."""
    type: Annotated[str, Field(min_length=1)]
    """The connector type: an entry point of the ``mobilise.connectors`` group."""
    topic: str
    """The topic kind it reads (a sink) or writes (a source), e.g. ``case-updates``."""
    settings: dict[str, Any] = {}
    """The connector's own settings (see ``mobilise connectors list``); ``${VAR}`` reads the environment."""
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    """Records handed to a sink at once."""
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    """Attempts per record before a retryable failure is dead-lettered (sinks)."""
    max_retry_delay: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """Ceiling of the backoff between attempts, and between restarts of a failed source, in seconds."""
    start_from: Literal["earliest", "latest"] = "latest"
    """Where a sink starts the first time it runs (later runs resume from their committed offsets)."""


class ConnectorsFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    connectors: tuple[ConnectorDeclaration, ...]
    """The connectors to run."""

    @model_validator(mode="after")
    def _unique_names(self) -> ConnectorsFile:
        names = [c.name for c in self.connectors]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"connector names must be unique; repeated: {', '.join(twice)}")
        return self


@dataclass(frozen=True)
class LoadedConnector:
    """A declaration with its connector class and validated settings."""

    declaration: ConnectorDeclaration
    cls: type[Connector[Any]]
    config: BaseModel

    def build(self) -> Connector[Any]:
        """A new instance of the connector (no I/O until its ``setup``)."""
        return self.cls(self.config)


def _substitute(value: Any, where: str, problems: list[str]) -> Any:
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            variable = match.group(1)
            if variable not in os.environ:
                problems.append(f"{where}: environment variable {variable} is not set")
                return ""
            return os.environ[variable]

        return _ENV_REFERENCE.sub(lookup, value)
    if isinstance(value, Mapping):
        return {k: _substitute(v, f"{where}.{k}", problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    return value


def _check_topic(cls: type[Connector[Any]], topic: str) -> str | None:
    if issubclass(cls, Source):
        if topic not in cls.produces:
            return f"a {cls.name} source writes to {' or '.join(cls.produces)}, not {topic!r}"
    elif issubclass(cls, Sink):
        kind = SINK_TOPICS.get(topic)
        if kind is None:
            return f"unknown topic {topic!r}; sinks read one of {', '.join(SINK_TOPICS)}"
        if not issubclass(kind.model, cls.accepts):
            wanted, held = cls.accepts.__name__, kind.model.__name__
            return f"a {cls.name} sink takes {wanted} records, and {topic} holds {held}"
    return None


def _load_one(index: int, declaration: ConnectorDeclaration, problems: list[str]) -> LoadedConnector | None:
    where = f"connectors[{index}] ({declaration.name})"
    try:
        cls = load_connector(declaration.type)
    except ConfigurationError as exc:
        problems.append(f"{where}.type: {exc}")
        return None
    topic_problem = _check_topic(cls, declaration.topic)
    if topic_problem:
        problems.append(f"{where}.topic: {topic_problem}")
    before = len(problems)
    settings = _substitute(declaration.settings, f"{where}.settings", problems)
    unknown = sorted(set(settings) - set(cls.Config.model_fields))
    for key in unknown:
        known = ", ".join(cls.Config.model_fields) or "none"
        problems.append(
            f"{where}.settings.{key}: not a setting of {declaration.type} (its settings: {known})"
        )
    if len(problems) > before:
        return None
    try:
        config = cls.Config.model_validate(settings)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            field = ".".join(str(p) for p in error["loc"])
            problems.append(f"{where}.settings.{field}: {error['msg']}")
        return None
    return None if topic_problem else LoadedConnector(declaration, cls, config)


def load_connectors(path: Path) -> list[LoadedConnector]:
    """Read, validate and resolve every connector of the file at ``path``.

    Raises:
        ConnectorsFileError: the file cannot be read or parsed, or any connector in it is
            wrong (unknown type, wrong topic, a bad or unknown setting, a missing
            environment variable); every problem is listed.

    """
    try:
        text = path.read_text("utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except OSError as exc:
        raise ConnectorsFileError(path, [f"cannot read it: {exc.strerror}"]) from exc
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConnectorsFileError(
            path, [f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"]
        ) from exc
    try:
        parsed = ConnectorsFile.model_validate(data)
    except ValidationError as exc:
        listed = []
        for error in exc.errors(include_url=False):
            loc = error["loc"]
            field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
            listed.append(f"{field or '(file)'}: {error['msg']}")
        raise ConnectorsFileError(path, listed) from exc
    problems: list[str] = []
    loaded = [_load_one(i, d, problems) for i, d in enumerate(parsed.connectors)]
    if problems:
        raise ConnectorsFileError(path, problems)
    return [c for c in loaded if c is not None]
