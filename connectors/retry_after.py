"""How long a peer asked us to wait: the HTTP ``Retry-After`` header, read once for every connector."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from datetime import UTC

__all__ = ["retry_after"]


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds ``Retry-After`` asks to wait (delay-seconds or an HTTP date), at least 0; None without one.

    Args:
        headers: The answer's headers (aiohttp's are case-insensitive; a plain dict must use
            the canonical spelling).
        now: The current Unix time, for the date form (the clock by default).

    """
    value = headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
