"""Find connectors through the ``mobilise.connectors`` entry-point group.

The built-in connectors are registered there too (see pyproject.toml), so a connector
from a third-party package is found and loaded the same way as the outbox.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from mobilise.errors import ConfigurationError

from .base import Sink

__all__ = ["ENTRY_POINT_GROUP", "available_connectors", "load_sink"]

ENTRY_POINT_GROUP = "mobilise.connectors"


def available_connectors() -> dict[str, str]:
    """Installed connector names → ``module:Class`` targets."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_sink(name: str) -> type[Sink]:  # type: ignore[type-arg]  # any sink's config
    """Load the sink class registered under ``name``.

    Raises:
        ConfigurationError: no connector has that name, or it is not a Sink.

    """
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        known = ", ".join(sorted(available_connectors())) or "none"
        raise ConfigurationError(
            f"no connector named {name!r} is installed (installed: {known}); check "
            f"MOBILISE_SINK, or install the package that provides it"
        )
    cls = found[0].load()
    if not (isinstance(cls, type) and issubclass(cls, Sink)):
        raise ConfigurationError(f"connector {name!r} ({found[0].value}) is not a Sink")
    return cls
