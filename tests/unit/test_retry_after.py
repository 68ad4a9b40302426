from __future__ import annotations

from multidict import CIMultiDict

from connectors.retry_after import retry_after

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def test_retry_after_reads_seconds_and_http_dates_and_nothing_else() -> None:
    assert retry_after({"Retry-After": "7"}, NOW) == 7.0
    assert retry_after({"Retry-After": " 2.5 "}, NOW) == 2.5
    assert retry_after({"Retry-After": "Thu, 01 Jan 2026 00:00:30 GMT"}, NOW) == 30.0
    assert retry_after({"Retry-After": "Wed, 31 Dec 2025 23:59:00 GMT"}, NOW) == 0.0  # past: no wait
    assert retry_after({"Retry-After": "-3"}, NOW) == 0.0
    assert retry_after({"Retry-After": "soon"}, NOW) is None
    assert retry_after({}, NOW) is None
    assert retry_after(CIMultiDict({"retry-after": "4"}), NOW) == 4.0  # aiohttp's headers
