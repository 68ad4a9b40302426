"""Run real workers against the real broker and watch what they do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from mobilise.broker import EmbeddedBroker
from schemas import CaseUpdate, DeliveryEvent, Subscription
from streams.admin import create_topics, publish
from streams.topics import TopicNames, topic_specs

TIMEOUT = 90.0


class Worker:
    """A ``mobilise worker`` subprocess whose JSON log lines can be read back."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._stdout = open(log_path, "wb")  # noqa: SIM115  # closed in stop()
        self._stderr = open(log_path.with_suffix(".stderr"), "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mobilise", "worker"], env=env, stdout=self._stdout, stderr=self._stderr
        )

    def events(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_bytes().splitlines():
            start = raw.find(b"{")
            if start < 0:
                continue
            try:
                lines.append(json.loads(raw[start:]))
            except json.JSONDecodeError:
                continue
        return lines

    def stop(self, sig: int = signal.SIGTERM, grace: float = 30.0) -> int:
        """Send ``sig``, and SIGKILL after ``grace`` seconds; the exit code (-9 when killed)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._stdout.close()
        self._stderr.close()
        return self.process.returncode


class PipelineHarness:
    """One isolated pipeline (own topics, own app id) on the shared broker."""

    def __init__(self, broker: EmbeddedBroker, tmp_path: Path, partitions: int = 4) -> None:
        self.broker = broker
        self.tmp_path = tmp_path
        self.partitions = partitions
        run = uuid.uuid4().hex[:10]
        self.app_id = f"test-{run}"
        self.names = TopicNames(prefix=f"{run}-")
        self.outbox = tmp_path / "outbox"
        self.workers: list[Worker] = []
        create_topics([broker.bootstrap], topic_specs(self.names, partitions), 1)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.broker.bootstrap,
            MOBILISE_APP_ID=self.app_id,
            MOBILISE_TOPIC_PREFIX=self.names.prefix,
            MOBILISE_PARTITIONS=str(self.partitions),
            MOBILISE_OUTBOX_DIR=str(self.outbox),
            MOBILISE_DATA_DIR=str(self.tmp_path / "data"),
            MOBILISE_LOG_FORMAT="json",
            MOBILISE_LOG_LEVEL="info",
        )
        return env

    # -- workers ---------------------------------------------------------------------------

    def start_worker(self, **extra_env: str) -> Worker:
        worker = Worker(self.env | extra_env, self.tmp_path / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        return worker

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = [e for w in self.workers for e in w.events()]
        return [e for e in found if name is None or e.get("event") == name]

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            for worker in self.workers:
                if worker.process.poll() is not None:
                    raise AssertionError(
                        f"worker exited with {worker.process.returncode} while waiting for {what}:\n"
                        + worker.log_path.with_suffix(".stderr").read_text()[-3000:]
                    )
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def wait_ready(self) -> None:
        """Wait until the running workers' latest assignments cover every partition once."""

        def covered() -> bool:
            latest = []
            for worker in self.workers:
                ready = [e for e in worker.events() if e.get("event") == "worker.ready"]
                if not ready:
                    return False
                latest.append(ready[-1]["partitions"])
            owned = [p for parts in latest for p in parts]
            return sorted(owned) == list(range(self.partitions))

        self.wait_until("workers to own every partition", covered)

    # -- input -----------------------------------------------------------------------------

    def subscribe(self, *subscriptions: Subscription) -> None:
        publish(
            [self.broker.bootstrap],
            self.names.subscriptions,
            [(s.subscriber_id, s.model_dump_json().encode()) for s in subscriptions],
        )

    def unsubscribe(self, subscriber_id: str) -> None:
        publish([self.broker.bootstrap], self.names.subscriptions, [(subscriber_id, None)])

    def publish(self, *updates: CaseUpdate) -> None:
        publish(
            [self.broker.bootstrap],
            self.names.case_updates,
            [(u.case_id, u.model_dump_json().encode()) for u in updates],
        )

    def publish_raw(self, topic: str, key: str, value: bytes) -> None:
        publish([self.broker.bootstrap], topic, [(key, value)])

    def wait_indexed(self, *subscriber_ids: str) -> None:
        wanted = set(subscriber_ids)
        self.wait_until(
            f"{len(wanted)} subscriptions to be indexed",
            lambda: wanted <= {e["subscriber_id"] for e in self.events("subscription.indexed")},
        )

    def wait_erased(self, subscriber_id: str) -> None:
        self.wait_until(
            f"{subscriber_id} to be erased",
            lambda: any(e["subscriber_id"] == subscriber_id for e in self.events("subscription.erased")),
        )

    def wait_processed(self, event_id: str) -> int:
        """Wait until every partition matched ``event_id`` and every alert was delivered.

        Returns the number of alerts.
        """

        def matched_everywhere() -> bool:
            partitions = {
                e["partition"] for e in self.events("case_update.matched") if e["event_id"] == event_id
            }
            return partitions == set(range(self.partitions))

        self.wait_until(f"{event_id} to be matched on every partition", matched_everywhere)
        alerts = {
            e["partition"]: e["matched"]
            for e in self.events("case_update.matched")
            if e["event_id"] == event_id
        }
        expected = sum(alerts.values())
        settled = {"accepted", "duplicate", "dead_lettered"}
        self.wait_until(
            f"{expected} alerts of {event_id} to be delivered",
            lambda: len(self._settled(event_id, settled)) >= expected,
        )
        return expected

    # -- output ----------------------------------------------------------------------------

    def emails(self) -> list[EmailMessage]:
        if not self.outbox.exists():
            return []
        parser = BytesParser(policy=policy.default)
        return [parser.parsebytes(p.read_bytes()) for p in sorted(self.outbox.glob("*.eml"))]  # type: ignore[misc]

    def emails_for(self, event_id: str) -> list[EmailMessage]:
        return [m for m in self.emails() if m["X-Mobilise-Event-Id"] == event_id]

    def _settled(self, event_id: str, outcomes: set[str]) -> set[str]:
        return {d.alert_id for d in self.deliveries() if d.event_id == event_id and d.outcome in outcomes}

    def deliveries(self) -> list[DeliveryEvent]:
        """Every delivery event the workers recorded so far."""
        return [DeliveryEvent.model_validate_json(r.value) for r in self.read_topic(self.names.deliveries)]

    def read_topic(self, topic: str) -> list[Any]:
        """Every record on ``topic`` (manual assignment: no group, nothing committed)."""
        consumer = KafkaConsumer(bootstrap_servers=[self.broker.bootstrap], enable_auto_commit=False)
        try:
            partitions = [TopicPartition(topic, p) for p in range(self.partitions)]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            ends = consumer.end_offsets(partitions)
            records: list[Any] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in partitions):
                for batch in consumer.poll(timeout_ms=500).values():
                    records.extend(batch)
            return records
        finally:
            consumer.close()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


def now() -> str:
    return datetime.now(UTC).isoformat()


def subscription(email: str, **fields: Any) -> Subscription:
    data: dict[str, Any] = {"email": email, "confirmed": True, "created_at": now(), **fields}
    return Subscription.model_validate_json(json.dumps(data))


def case_update(case_id: str = "bd-2026-1", **fields: Any) -> CaseUpdate:
    data: dict[str, Any] = {
        "case_id": case_id,
        "status": "urgent_action",
        "title": {"en": "Union leaders fired at Dhaka Knitwear"},
        "summary": {"en": "Twelve union leaders were dismissed after registering their union."},
        "country": "BD",
        "brands": ["H&M"],
        "issues": ["union_busting"],
        "occurred_at": now(),
        "published_by": "coordinator-asia",
        **fields,
    }
    return CaseUpdate.model_validate_json(json.dumps(data))


def recipients(messages: Iterable[EmailMessage]) -> list[str]:
    return sorted(m["To"].addresses[0].addr_spec for m in messages)
