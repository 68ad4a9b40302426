"""The web process's topic views against the real broker: history first, then live records."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from mobilise.broker import EmbeddedBroker
from mobilise.snapshot import StoredRecord, producer
from mobilise.web.topic_view import TopicView
from streams.admin import create_topics
from streams.topics import TopicSpec

pytestmark = pytest.mark.integration


def _write(broker: EmbeddedBroker, topic: str, pairs: list[tuple[str, str | None]]) -> None:
    with producer([broker.bootstrap]) as client:
        for key, value in pairs:
            client.send(topic, key=key.encode(), value=None if value is None else value.encode())
        client.flush()


async def _until(check: object, timeout: float = 20.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


def test_a_view_folds_the_history_then_follows_new_records(broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = f"view-{uuid.uuid4().hex[:8]}"
    create_topics([broker.bootstrap], [TopicSpec(name=topic, partitions=3)], 1)
    _write(broker, topic, [(f"k{i}", f"v{i}") for i in range(30)] + [("k3", None)])
    state: dict[str, str] = {}

    def fold(record: StoredRecord) -> None:
        key = (record.key or b"").decode()
        if record.value is None:
            state.pop(key, None)
        else:
            state[key] = record.value.decode()

    async def scenario() -> None:
        view = TopicView([broker.bootstrap], [topic], fold, name="test")
        view.start()
        try:
            assert await view.wait_caught_up(30)
            assert len(state) == 29 and "k3" not in state and state["k29"] == "v29"
            await asyncio.to_thread(_write, broker, topic, [("k29", "changed"), ("new", "1")])
            assert await _until(lambda: state.get("k29") == "changed" and "new" in state)
            assert view.records == 33
        finally:
            await view.close()

    asyncio.run(scenario())


def test_a_view_waits_for_a_topic_that_does_not_exist_yet(broker: EmbeddedBroker) -> None:
    topic = f"late-{uuid.uuid4().hex[:8]}"
    seen: list[bytes | None] = []

    async def scenario() -> None:
        view = TopicView([broker.bootstrap], [topic], lambda r: seen.append(r.value), name="late")
        view.start()
        try:
            assert not await view.wait_caught_up(1)
            spec = TopicSpec(name=topic, partitions=1)
            await asyncio.to_thread(create_topics, [broker.bootstrap], [spec], 1)
            await asyncio.to_thread(_write, broker, topic, [("a", "1")])
            assert await _until(lambda: seen == [b"1"], timeout=30)
            assert view.caught_up
        finally:
            await view.close()

    asyncio.run(scenario())


def test_a_record_the_fold_cannot_read_is_skipped_and_the_view_goes_on(broker: EmbeddedBroker) -> None:
    topic = f"bad-{uuid.uuid4().hex[:8]}"
    create_topics([broker.bootstrap], [TopicSpec(name=topic, partitions=1)], 1)
    _write(broker, topic, [("a", "not a number"), ("b", "2")])
    total: list[int] = []

    async def scenario() -> None:
        view = TopicView([broker.bootstrap], [topic], lambda r: total.append(int(r.value or b"")), name="bad")
        view.start()
        try:
            assert await view.wait_caught_up(30)
        finally:
            await view.close()

    asyncio.run(scenario())
    assert total == [2]
