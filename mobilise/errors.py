"""Errors, grouped by what the runtime should do with them."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "FatalError",
    "MobiliseError",
    "RetryableError",
    "SkippableError",
]


class MobiliseError(Exception):
    """Root of every error mobilise raises on purpose."""


class ConfigurationError(MobiliseError):
    """A setting is missing or wrong; the message names it and says how to fix it."""


class RetryableError(MobiliseError):
    """A temporary failure: try the same thing again later.

    Args:
        message: What failed.
        retry_after: Seconds to wait before the next attempt, when the peer said so.

    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SkippableError(MobiliseError):
    """This record can never succeed as it is: send it to dead-letters and go on."""


class FatalError(MobiliseError):
    """Nothing more can be processed until a person intervenes; stop the worker."""
