"""Find connectors through the ``mobilise.connectors`` entry-point group.

The built-in connectors are registered there too (see pyproject.toml), so a connector
from a third-party package is found and loaded the same way as the outbox.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from mobilise.errors import ConfigurationError

from .base import Connector, Sink

__all__ = ["ENTRY_POINT_GROUP", "available_connectors", "load_connector", "load_sink"]

ENTRY_POINT_GROUP = "mobilise.connectors"


def available_connectors() -> dict[str, str]:
    """Installed connector names → ``module:Class`` targets."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_connector(name: str) -> type[Connector[Any]]:
    """Load the connector class registered under ``name``.

    Raises:
        ConfigurationError: no connector has that name, it cannot be imported, or it is
            not a Connector.

    """
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        known = ", ".join(sorted(available_connectors())) or "none"
        raise ConfigurationError(
            f"no connector named {name!r} is installed (installed: {known}); check the name, "
            f"or install the package that provides it"
        )
    try:
        cls = found[0].load()
    except ImportError as exc:
        raise ConfigurationError(
            f"connector {name!r} ({found[0].value}) cannot be imported: {exc}; "
            f"is the package that provides it installed with its extras?"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ConfigurationError(f"connector {name!r} ({found[0].value}) is not a Connector")
    return cls


def load_sink(name: str) -> type[Sink[Any, Any]]:
    """Load the sink class registered under ``name`` (the pipeline's ``MOBILISE_SINK``).

    Raises:
        ConfigurationError: no connector has that name, or it is not a Sink.

    """
    cls = load_connector(name)
    if not issubclass(cls, Sink):
        raise ConfigurationError(f"connector {name!r} is a source, not a sink; MOBILISE_SINK names a sink")
    return cls
