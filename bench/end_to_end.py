"""End-to-end benchmark: one case update → M alerts → M ``.eml`` files, through real workers.

What is measured, and how:

1. An embedded Tansu broker starts on loopback; the pipeline's topics are created with a
   unique prefix (``--partitions``, 8 by default).
2. ``--workers`` worker subprocesses (``python -m mobilise worker``, one consumer group)
   start with the outbox sink writing into a temporary directory, JSON logs at info level
   and ``MOBILISE_DELIVERY_BATCH_SIZE=--batch-size``. The benchmark waits until their
   latest ``worker.ready`` lines own every partition exactly once.
3. ``--matching`` + ``--others`` subscriptions are published; exactly ``--matching`` of them
   match the case update (Bangladesh + union busting; the others follow Cambodia, or
   Bangladesh but only wages and another brand). It waits until every subscriber id has a
   ``subscription.indexed`` line (the worker's own signal that it holds the subscription),
   and reports that time as "indexing".
4. The case update is published (``t0`` = just before the publish call, wall clock). The
   phases are read from the workers' log timestamps (same machine, same clock):
   ``case_update.matched`` (one per partition: the alert batches of that shard are produced
   and acknowledged) and ``alerts.delivered`` (one per alert batch, after its ``.eml`` files
   are written and flushed and its delivery records acknowledged, with the count accepted).
   Reported: t0 → last ``case_update.matched`` (matching + producing every alert), t0 →
   first and last ``alerts.delivered``, and alerts per second end to end (M / (last
   delivered − t0)). The ``.eml`` files are counted by polling the outbox too.
5. Verified: the ``case_update.matched`` counts add up to M, the deliveries topic holds
   exactly M ``accepted`` records with M distinct alert ids, and the outbox holds exactly M
   ``.eml`` files (re-counted after a grace period).

CPU seconds used by each worker and by the broker during step 4 come from
``/proc/<pid>/stat``. Every wait is bounded by ``--timeout``; the workers and the broker are
always stopped at the end. ``--py-spy DIR`` records each worker (and its sink's process) with py-spy during
step 4 (collapsed stacks by thread, ``DIR/worker-N.txt``).

Run: ``python bench/end_to_end.py [--matching 50000] [--others 50000] [--workers 1|2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mobilise.broker import EmbeddedBroker
from mobilise.logs import configure_logging
from mobilise.snapshot import consumer, read_topic
from schemas import CaseUpdate, DeliveryEvent, Subscription
from streams.admin import create_topics, publish
from streams.topics import TopicNames, topic_specs

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


class BenchError(RuntimeError):
    """A wait timed out or a check failed."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its children so far: a worker with its sink's process.

    Children that ended and were waited for count through the parent's own figures
    (cutime, cstime); running ones are read from ``/proc``.
    """
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15]) / CLOCK_TICKS
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as listed:
                children.extend(int(c) for c in listed.read().split())
    for child in children:
        with contextlib.suppress(OSError):  # ended meanwhile
            total += tree_cpu_seconds(child)
    return total


def log_time(line: dict[str, Any]) -> float:
    """The epoch seconds of a structlog line's ISO timestamp."""
    return datetime.fromisoformat(line["timestamp"]).timestamp()


@dataclass
class LogState:
    """What the benchmark needs from one worker's log, updated incrementally."""

    ready: list[list[int]] = field(default_factory=list)
    indexed: set[str] = field(default_factory=set)
    last_indexed: float = 0.0
    matched_by_event: dict[str, dict[int, int]] = field(default_factory=dict)
    """``case_update.matched`` counts of each followed event id, per partition."""
    matched_times: list[float] = field(default_factory=list)
    delivered: int = 0
    first_delivered: float = float("inf")
    last_delivered: float = 0.0
    dead_lettered: int = 0

    @property
    def matched(self) -> dict[int, int]:
        """``case_update.matched`` counts per partition, summed over the followed events."""
        totals: dict[int, int] = {}
        for counts in self.matched_by_event.values():
            for partition, matched in counts.items():
                totals[partition] = totals.get(partition, 0) + matched
        return totals


class Worker:
    """A ``mobilise worker`` subprocess whose JSON log is followed incrementally."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._stdout = open(log_path, "wb")  # noqa: SIM115  # closed in stop()
        self._stderr = open(log_path.with_suffix(".stderr"), "wb")  # noqa: SIM115  # closed in stop()
        # Started in the run's own directory: `python -m` puts the current directory first on
        # sys.path, so from the repository's root the workers would run its code whatever
        # PYTHONPATH names (a checkout of another commit, to compare with).
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mobilise", "worker"],
            env=env,
            stdout=self._stdout,
            stderr=self._stderr,
            cwd=log_path.parent,
        )
        self.state = LogState()
        self._offset = 0
        self._reader = open(log_path, "rb")  # noqa: SIM115  # closed in stop()
        self.event_ids: set[str] = set()
        """The case updates whose matching and delivery lines are counted."""

    @property
    def event_id(self) -> str | None:
        """The one case update followed, if exactly one is."""
        return next(iter(self.event_ids)) if len(self.event_ids) == 1 else None

    @event_id.setter
    def event_id(self, value: str | None) -> None:
        self.event_ids = {value} if value else set()

    def follow(self) -> None:
        """Read the lines appended since the last call into ``state``."""
        self._reader.seek(self._offset)
        chunk = self._reader.read()
        end = chunk.rfind(b"\n") + 1  # leave a half-written last line for the next call
        self._offset += end
        for raw in chunk[:end].splitlines():
            start = raw.find(b"{")
            if start < 0:
                continue
            try:
                line = json.loads(raw[start:])
            except json.JSONDecodeError:
                continue
            self._apply(line)

    def _apply(self, line: dict[str, Any]) -> None:
        state, name = self.state, line.get("event")
        if name == "subscription.indexed":
            state.indexed.add(line["subscriber_id"])
            state.last_indexed = log_time(line)
        elif name == "worker.ready":
            state.ready.append(line["partitions"])
        elif line.get("event_id") not in self.event_ids:
            return
        elif name == "case_update.matched":
            state.matched_by_event.setdefault(line["event_id"], {})[line["partition"]] = line["matched"]
            state.matched_times.append(log_time(line))
        elif name == "alerts.delivered":
            state.delivered += line.get("accepted", 0)
            state.dead_lettered += line.get("dead_lettered", 0)
            at = log_time(line)
            state.first_delivered = min(state.first_delivered, at)
            state.last_delivered = max(state.last_delivered, at)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.with_suffix(".stderr").read_text(errors="replace")[-3000:]
            raise BenchError(f"worker {self.process.pid} exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for handle in (self._stdout, self._stderr, self._reader):
            handle.close()


def wait_until(what: str, check: Callable[[], bool], workers: list[Worker], deadline: float) -> float:
    """Poll ``check`` (after following every log) until true; return the time it became true."""
    while True:
        for worker in workers:
            worker.follow()
        if check():
            return time.time()
        for worker in workers:
            worker.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(0.1)


def count_eml(outbox: Path) -> int:
    """``.eml`` files in the outbox (temporary files start with a dot and end in .eml too)."""
    if not outbox.is_dir():
        return 0
    with os.scandir(outbox) as entries:
        return sum(1 for e in entries if e.name.endswith(".eml") and not e.name.startswith("."))


def subscriptions(matching: int, others: int) -> list[Subscription]:
    """``matching`` subscriptions that match :func:`the_update`, then ``others`` that do not."""
    created = datetime.now(UTC).isoformat()
    records = []
    for i in range(matching):
        where = {"countries": ["BD"]} if i % 4 else {"regions": ["southern-asia"]}
        records.append({"email": f"match{i}@example.org", "interests": ["union_busting"], **where})
    for i in range(others):
        wrong = {"countries": ["KH"], "interests": ["union_busting"]}
        if i % 2:
            wrong = {"countries": ["BD"], "interests": ["wages"], "brands": ["Uniqlo"]}
        records.append({"email": f"other{i}@example.org", **wrong})
    return [
        Subscription.model_validate_json(
            json.dumps({"name": "Activist", "confirmed": True, "created_at": created, **r})
        )
        for r in records
    ]


def the_update() -> CaseUpdate:
    """A realistic urgent action: title, summary and action call in three languages."""
    return CaseUpdate.model_validate_json(
        json.dumps(
            {
                "case_id": f"bd-bench-{uuid.uuid4().hex[:8]}",
                "status": "urgent_action",
                "title": {"en": "Union leaders fired at Dhaka Knitwear", "fr": "Syndicalistes licenciés"},
                "summary": {
                    "en": "Twelve elected union leaders were dismissed days after registering their union.",
                    "fr": "Douze dirigeants syndicaux élus ont été licenciés.",
                },
                "country": "BD",
                "brands": ["H&M", "Zara"],
                "factory": {"name": "Dhaka Knitwear Ltd", "city": "Gazipur"},
                "issues": ["union_busting", "freedom_of_association"],
                "action_call": {
                    "kind": "email_brand",
                    "instructions": {"en": "Email the CEO and demand reinstatement."},
                    "target": {"name": "H&M Group", "email": "ceo@example.com"},
                    "deadline": "2026-12-01T12:00:00Z",
                },
                "occurred_at": datetime.now(UTC).isoformat(),
                "published_by": "bench",
            }
        )
    )


@dataclass
class Result:
    """The figures of one run."""

    workers: int
    partitions: int
    matching: int
    subscribers: int
    publish_subscriptions_s: float
    indexing_s: float
    publish_update_s: float
    last_matched_s: float
    first_delivered_s: float
    last_delivered_s: float
    eml_complete_s: float
    eml_files: int
    worker_cpu_s: list[float]
    worker_own_cpu_s: list[float]
    """The worker processes alone, without their sinks' processes."""
    broker_cpu_s: float

    @property
    def cpu_per_alert_s(self) -> float:
        return (sum(self.worker_cpu_s) + self.broker_cpu_s) / self.matching

    def table(self) -> str:
        m = self.matching
        rows = [
            ("workers × partitions", f"{self.workers} × {self.partitions}"),
            ("subscriptions (matching / total)", f"{m:,} / {self.subscribers:,}"),
            ("publish subscriptions (client)", f"{self.publish_subscriptions_s:.1f} s"),
            (
                "publish → every subscription indexed",
                f"{self.indexing_s:.1f} s ({self.subscribers / self.indexing_s:,.0f}/s)",
            ),
            ("publish of the case update acknowledged", f"{self.publish_update_s * 1000:.0f} ms"),
            (
                "t0 → last case_update.matched (match + produce alerts)",
                f"{self.last_matched_s:.2f} s ({m / self.last_matched_s:,.0f} alerts/s)",
            ),
            ("t0 → first alerts.delivered", f"{self.first_delivered_s:.2f} s"),
            ("t0 → last alerts.delivered", f"{self.last_delivered_s:.2f} s"),
            ("**alerts/s end to end** (M / last delivered)", f"**{m / self.last_delivered_s:,.0f}**"),
            (
                "delivery rate (first → last delivered)",
                f"{m / max(self.last_delivered_s - self.first_delivered_s, 1e-9):,.0f} alerts/s",
            ),
            ("t0 → outbox holds M files (0.1 s polling)", f"{self.eml_complete_s:.2f} s"),
            (".eml files (must equal M)", f"{self.eml_files:,}"),
            (
                "worker CPU (with its sink process) during t0 → done",
                ", ".join(f"{c:.1f} s" for c in self.worker_cpu_s),
            ),
            (
                "of which in the sink's process (`MOBILISE_SINK_PROCESS`)",
                ", ".join(
                    f"{whole - own:.1f} s"
                    for whole, own in zip(self.worker_cpu_s, self.worker_own_cpu_s, strict=True)
                ),
            ),
            ("broker CPU during t0 → done", f"{self.broker_cpu_s:.1f} s"),
            ("CPU per alert, every process (workers, sinks, broker)", f"{self.cpu_per_alert_s * 1e6:.0f} µs"),
            (
                f"the most that CPU allows on {CORES} cores (CPU-bound ceiling)",
                f"{CORES / self.cpu_per_alert_s:,.0f} alerts/s",
            ),
        ]
        return "| figure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


@dataclass
class Pipeline:
    """The embedded broker with the pipeline's topics, and workers that own every partition."""

    broker: EmbeddedBroker
    names: TopicNames
    partitions: int
    outbox: Path
    workers: list[Worker]

    @property
    def bootstrap(self) -> list[str]:
        return [self.broker.bootstrap]

    def cpu(self) -> tuple[list[float], list[float], float]:
        """CPU seconds used so far by each worker (with, then without its sink's process) and by the broker.

        The broker's is 0 if it has no pid.
        """
        broker_pid = self.broker.pid
        return (
            [tree_cpu_seconds(w.process.pid) for w in self.workers],
            [cpu_seconds(w.process.pid) for w in self.workers],
            cpu_seconds(broker_pid) if broker_pid else 0.0,
        )


@contextlib.contextmanager
def pipeline(
    work: Path, *, partitions: int, workers: int, batch_size: int, outbox_root: Path | None, deadline: float
) -> Iterator[Pipeline]:
    """Start the broker, create the topics, start ``workers`` workers; stop them all on exit."""
    broker = EmbeddedBroker(log_path=work / "tansu.log")
    started: list[Worker] = []
    try:
        broker.start()
        run_id = uuid.uuid4().hex[:8]
        names = TopicNames(prefix=f"bench-{run_id}-")
        create_topics([broker.bootstrap], topic_specs(names, partitions), 1)
        outbox = (outbox_root or work) / "outbox"
        env = dict(os.environ)
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
            MOBILISE_APP_ID=f"bench-{run_id}",
            MOBILISE_TOPIC_PREFIX=names.prefix,
            MOBILISE_PARTITIONS=str(partitions),
            MOBILISE_OUTBOX_DIR=str(outbox),
            MOBILISE_DATA_DIR=str(work / "data"),
            MOBILISE_LOG_FORMAT="json",
            MOBILISE_LOG_LEVEL="info",
            MOBILISE_DELIVERY_BATCH_SIZE=str(batch_size),
            MOBILISE_SINK="outbox",
        )
        for n in range(workers):
            started.append(Worker(env, work / f"worker-{n}.log"))

        def covered() -> bool:
            if not all(w.state.ready for w in started):
                return False
            owned = sorted(p for w in started for p in w.state.ready[-1])
            return owned == list(range(partitions))

        wait_until("the workers to own every partition", covered, started, deadline)
        print(f"workers ready: {[w.state.ready[-1] for w in started]}", file=sys.stderr)
        yield Pipeline(broker, names, partitions, outbox, started)
    finally:
        for w in started:
            w.stop()
        broker.stop()


def index_subscriptions(
    p: Pipeline, ids: set[str], records: Iterable[tuple[str, bytes]], deadline: float
) -> tuple[float, float]:
    """Publish the subscription ``records`` and wait until each of ``ids`` is indexed.

    Returns the seconds the publish took and the seconds from its start to the last
    ``subscription.indexed`` line.
    """
    started = time.time()
    publish(p.bootstrap, p.names.subscriptions, records)
    published = time.time()
    print(f"published {len(ids):,} subscriptions in {published - started:.1f} s", file=sys.stderr)

    def indexed() -> bool:
        if sum(len(w.state.indexed) for w in p.workers) < len(ids):
            return False  # cheap: the exact check below costs a set union
        return len(set().union(*(w.state.indexed for w in p.workers)) & ids) == len(ids)

    wait_until(f"{len(ids):,} subscriptions to be indexed", indexed, p.workers, deadline)
    indexed_at = max(w.state.last_indexed for w in p.workers)
    print(f"indexed after {indexed_at - started:.1f} s", file=sys.stderr)
    time.sleep(1.0)  # let the last table writes and commits settle
    return published - started, indexed_at - started


def wait_matched(p: Pipeline, event_ids: Iterable[str], deadline: float) -> int:
    """Wait until each of ``event_ids`` is matched on every partition; return the alerts matched."""
    wanted = {(e, part) for e in event_ids for part in range(p.partitions)}

    def matched_everywhere() -> bool:
        seen = [
            (e, part) for w in p.workers for e, counts in w.state.matched_by_event.items() for part in counts
        ]
        return len(seen) == len(wanted) and set(seen) == wanted

    what = "the update" if len(wanted) == p.partitions else f"{len(wanted) // p.partitions} updates"
    wait_until(f"{what} to be matched on every partition", matched_everywhere, p.workers, deadline)
    return sum(n for w in p.workers for counts in w.state.matched_by_event.values() for n in counts.values())


def wait_delivered(p: Pipeline, expected: int, deadline: float, *, poll_outbox: bool = True) -> float:
    """Wait until the workers logged ``expected`` accepted alerts (and, with ``poll_outbox``,
    the outbox holds as many files); return when the outbox was seen complete (0 without)."""
    eml_at = 0.0

    def all_delivered() -> bool:
        nonlocal eml_at
        if poll_outbox and not eml_at and count_eml(p.outbox) >= expected:
            eml_at = time.time()
        delivered = sum(w.state.delivered for w in p.workers)
        dead = sum(w.state.dead_lettered for w in p.workers)
        if dead:
            raise BenchError(f"{dead} alerts were dead-lettered")
        return delivered >= expected and (bool(eml_at) or not poll_outbox)

    wait_until(f"{expected:,} alerts to be delivered", all_delivered, p.workers, deadline)
    return eml_at


def verify_deliveries(p: Pipeline, expected: int, timeout: float = 300) -> int:
    """After a grace period, check that the deliveries topic holds exactly ``expected``
    accepted records with distinct alert ids and the outbox as many files; return the files."""
    time.sleep(2.0)  # grace: a duplicate delivery would show up as an extra file or line
    for w in p.workers:
        w.follow()
    with consumer(p.bootstrap) as reader:
        records = read_topic(reader, p.names.deliveries, timeout=timeout)
    accepted = [
        d.alert_id
        for r in records
        if (d := DeliveryEvent.model_validate_json(r.value or b"null")).outcome == "accepted"
    ]
    files = count_eml(p.outbox)
    if len(accepted) != expected or len(set(accepted)) != expected or files != expected:
        raise BenchError(
            f"{len(accepted):,} accepted delivery records ({len(set(accepted)):,} alert ids) and "
            f"{files:,} .eml files, expected exactly {expected:,}"
        )
    return files


def run(args: argparse.Namespace, work: Path) -> Result:
    deadline = time.monotonic() + args.timeout
    spies: list[subprocess.Popen[bytes]] = []
    with pipeline(
        work,
        partitions=args.partitions,
        workers=args.workers,
        batch_size=args.batch_size,
        outbox_root=args.outbox_root,
        deadline=deadline,
    ) as p:
        try:
            workers = p.workers
            people = subscriptions(args.matching, args.others)
            publish_s, indexing_s = index_subscriptions(
                p,
                {s.subscriber_id for s in people},
                ((s.subscriber_id, s.model_dump_json().encode()) for s in people),
                deadline,
            )

            update = the_update()
            for w in workers:
                w.event_id = update.event_id
            if args.py_spy:
                args.py_spy.mkdir(parents=True, exist_ok=True)
                for n, w in enumerate(workers):
                    spies.append(
                        subprocess.Popen(
                            [
                                str(Path(sys.executable).with_name("py-spy")),
                                "record",
                                "--pid",
                                str(w.process.pid),
                                "--rate",
                                "200",
                                "--format",
                                "raw",
                                "--threads",
                                "--subprocesses",  # the sink's process too (MOBILISE_SINK_PROCESS)
                                "--output",
                                str(args.py_spy / f"worker-{n}.txt"),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    )
                time.sleep(1.0)  # py-spy attaches
            cpu_before, own_before, broker_before = p.cpu()
            t0 = time.time()
            publish(p.bootstrap, p.names.case_updates, [(update.case_id, update.model_dump_json().encode())])
            acked = time.time()

            matched = wait_matched(p, [update.event_id], deadline)
            if matched != args.matching:
                raise BenchError(f"case_update.matched adds up to {matched:,}, expected {args.matching:,}")
            eml_at = wait_delivered(p, args.matching, deadline)
            cpu_after, own_after, broker_after = p.cpu()
            for spy in spies:
                spy.send_signal(signal.SIGINT)
            for spy in spies:
                spy.wait(timeout=60)
            files = verify_deliveries(p, args.matching)
            return Result(
                workers=args.workers,
                partitions=args.partitions,
                matching=args.matching,
                subscribers=len(people),
                publish_subscriptions_s=publish_s,
                indexing_s=indexing_s,
                publish_update_s=acked - t0,
                last_matched_s=max(t for w in workers for t in w.state.matched_times) - t0,
                first_delivered_s=min(w.state.first_delivered for w in workers) - t0,
                last_delivered_s=max(w.state.last_delivered for w in workers) - t0,
                eml_complete_s=eml_at - t0,
                eml_files=files,
                worker_cpu_s=[a - b for a, b in zip(cpu_after, cpu_before, strict=True)],
                worker_own_cpu_s=[a - b for a, b in zip(own_after, own_before, strict=True)],
                broker_cpu_s=broker_after - broker_before,
            )
        finally:
            for spy in spies:
                if spy.poll() is None:
                    spy.kill()
                    spy.wait(timeout=10)


def ext4_without_journal(path: Path) -> str | None:
    """The device name when ``path`` lies on ext4 without a journal, else None.

    Such a file system skips inodes deleted in the last 60–360 s, so file creation right after
    a mass deletion (the previous run's outbox) costs up to ten times more (RESULTS.md §13)."""
    best: tuple[int, str, str] = (-1, "", "")
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        target = str(path.resolve())
        for line in mounts:
            fields = line.split()
            mount_point, rest = fields[4], fields[fields.index("-") + 1 :]
            inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) > best[0]:
                best = (len(mount_point), rest[0], rest[1])
    _, fstype, source = best
    if fstype != "ext4":
        return None
    device = Path(source).name
    try:
        journal = Path(f"/sys/fs/ext4/{device}/journal_task").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return device if journal == "<none>" else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--matching", type=int, default=50_000, help="subscribers the update matches (M)")
    parser.add_argument("--others", type=int, default=50_000, help="subscribers it does not match")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1)
    parser.add_argument("--batch-size", type=int, default=1000, help="MOBILISE_DELIVERY_BATCH_SIZE")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound of the whole run, seconds")
    parser.add_argument("--py-spy", type=Path, default=None, help="record the workers with py-spy into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, outbox)")
    parser.add_argument(
        "--outbox-parent",
        type=Path,
        help="where the outbox directory goes (default: the temporary directory; e.g. /dev/shm for memory)",
    )
    args = parser.parse_args()
    configure_logging("console", "warning")  # keep the admin client's info lines out of stdout

    work = Path(tempfile.mkdtemp(prefix="mobilise-bench-"))
    args.outbox_root = (
        Path(tempfile.mkdtemp(prefix="mobilise-bench-", dir=args.outbox_parent))
        if args.outbox_parent
        else None
    )
    outbox_parent = args.outbox_root or work
    unjournaled = ext4_without_journal(outbox_parent)
    if unjournaled:
        print(
            f"warning: the outbox is on ext4 without a journal ({unjournaled}); creating files there "
            "right after many were deleted (a previous run's outbox, a test run) is up to 10x slower "
            "for 1-6 minutes; wait that long between runs or use --outbox-parent /dev/shm",
            file=sys.stderr,
        )
    try:
        result = run(args, work)
        print(result.table())
    finally:
        for directory in (work, args.outbox_root):
            if directory is None:
                continue
            if args.keep:
                print(f"kept {directory}", file=sys.stderr)
            else:
                shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
