"""structlog set-up: JSON lines in production, readable console lines in development."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "redact_addresses"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_ADDRESS_KEYS = frozenset({"email", "to", "recipient", "address"})


def redact_addresses(_logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask email addresses in every line above debug level.

    Activists' addresses are personal data; operators need ids, not addresses, to
    follow an alert through the pipeline.
    """
    if method != "debug":
        for key in _ADDRESS_KEYS & event.keys():
            event[key] = "[redacted]"
    return event


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    """Configure structlog (our events, on stdout) and the standard library (libraries, on stderr)."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_addresses,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # Each line in one write: print() writes the line and its end separately, and a
        # sink's process shares this stdout, so another process's line could come between.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )
    # Libraries (faust, aiokafka) speak through the standard library; keep their chatter
    # out of our event stream and at warning unless debugging.
    logging.basicConfig(
        stream=sys.stderr,
        level=_LEVELS[level] if level == "debug" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
