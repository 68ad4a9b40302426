"""Fixtures of the integration tests: one isolated pipeline per test on the shared broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mobilise.broker import EmbeddedBroker

from .harness import PipelineHarness


@pytest.fixture
def pipeline(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[PipelineHarness]:
    """Topics of its own and an app id of its own; its workers are stopped at the end."""
    harness = PipelineHarness(broker, tmp_path)
    try:
        yield harness
    finally:
        harness.stop()
