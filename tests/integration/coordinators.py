"""What the tests of the coordinators' API and console share: tokens on the topic, waiting, reading back."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from mobilise.settings import Settings, load_settings
from mobilise.snapshot import StoredRecord, consumer, read_topic
from mobilise.web.tokens import IssuedToken, issue_token
from schemas import TokenRole
from streams.admin import publish

from .harness import PipelineHarness

__all__ = ["TIMEOUT", "add_token", "read_all", "until", "web_settings"]

TIMEOUT = 60.0
"""Seconds to wait for the web process to have read what a test published."""


def add_token(pipeline: PipelineHarness, name: str, role: TokenRole) -> IssuedToken:
    """A new API token for ``name``, published on the pipeline's api-tokens topic."""
    issued = issue_token(name, role, now=datetime.now(UTC))
    publish(
        [pipeline.broker.bootstrap],
        pipeline.names.api_tokens,
        [(issued.record.token_id, issued.record.model_dump_json().encode())],
    )
    return issued


def web_settings(pipeline: PipelineHarness) -> Settings:
    """The settings of a web process on the pipeline's broker and topics."""
    return load_settings(
        kafka_bootstrap_servers=pipeline.broker.bootstrap,
        topic_prefix=pipeline.names.prefix,
        partitions=pipeline.partitions,
    )


def until(what: str, check: Callable[[], object], timeout: float = TIMEOUT) -> None:
    """Return once ``check()`` is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_all(pipeline: PipelineHarness, topic: str) -> list[StoredRecord]:
    """Every record of ``topic``, whatever its partition count (the harness assumes its own)."""
    with consumer([pipeline.broker.bootstrap]) as reader:
        return read_topic(reader, topic)
