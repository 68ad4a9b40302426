"""Burst benchmark: a burst of case updates over a large population, through 1 or 2 real workers.

What is measured, and how (the machinery is ``bench/end_to_end.py``'s, imported):

1. Population: ``--subscribers`` subscriptions (1,000,000 by default) and ``--updates`` case
   updates (100) from ``bench/match_index.py``'s seeded, Zipf-like generator
   (``Population``, ``--seed``): countries and brands by popularity, 5 % worldwide, 10 %
   regions, 1–3 interests and brands each, 85 % every status; updates in a random country
   with 1–3 issues, 0–3 brands and a random status. All confirmed, all ``immediate``. They
   are built and JSON-encoded once, before any run, and shared by every run.
2. Expected alerts: the same subscriptions go into an in-process ``SubscriberIndex`` and
   each update's matching set is counted (``match_ids``); ``--no-check`` skips this.
3. For each value of ``--workers`` (``1 2`` by default; ``1 2 1 2`` repeats), one run:
   first it waits (up to ``--idle-wait`` seconds, polling every 10 s) until no ``pytest``
   process runs (``pgrep -f pytest``: the machine is shared); then, as ``end_to_end.py``
   does, an embedded Tansu broker, topics with a unique prefix (``--partitions``), the
   workers with the outbox sink (under ``--outbox-parent``: the temporary directory, on
   disk, by default; ``/dev/shm`` for memory) and JSON logs at info; every subscription is
   published with the batched producer and awaited until the workers logged
   ``subscription.indexed`` for it ("indexing", not the measured phase). It waits for an
   idle machine again, then publishes the updates in one call (one producer, all records
   sent before any acknowledgement is awaited): **t0** is just before that call.
4. Read from the workers' log timestamps: ``case_update.matched`` (one per update and
   partition) and ``alerts.delivered`` (one per alert batch, after its ``.eml`` files are
   written and flushed and its delivery records acknowledged). Reported: t0 → last
   ``case_update.matched``, t0 → first and last ``alerts.delivered`` (the last email handed
   to the sink), **alerts/s end to end = alerts / (last delivered − t0)**, and the CPU
   seconds of each worker and of the broker from t0 to the last delivery (``/proc``).
   The outbox is not polled while the burst runs (listing millions of files would take
   the benchmark's own share of the two cores); its files are counted afterwards.
5. Verified: every update was matched on every partition; the ``case_update.matched`` counts
   equal the in-process index's, update by update; the deliveries topic holds exactly that
   many ``accepted`` records, all with distinct alert ids; the outbox holds as many files;
   no dead letters.

While the burst runs a thread samples ``MemAvailable`` (every second) and ``pgrep -f pytest``
(every 5 s). If the free memory falls below ``--min-available-gib`` it stops the workers and
the run fails, rather than let the machine run out. Before the run and again before the
burst it fails early if an estimate does not fit: about 4 KiB per subscription and 2.5 KiB
per alert in the broker and the workers, plus 5 KiB per ``.eml`` file on tmpfs (a 4 KiB page
and the inode). 1,000,000 subscriptions and their 2.6 million alerts do not fit with the
outbox on tmpfs in 24 GiB, hence the disk by default. Each run's table is printed when
it ends; with two or more ``--workers`` values a last table has them all and the ratio of
the means (N workers over 1 worker). SIGTERM stops the workers and the broker too.

Run: ``python bench/burst.py [--subscribers 1000000] [--updates 100] [--workers 1 2]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from end_to_end import (
    BenchError,
    Pipeline,
    index_subscriptions,
    pipeline,
    verify_deliveries,
    wait_delivered,
    wait_matched,
)
from match_index import Population

from mobilise.logs import configure_logging
from schemas import CaseUpdate
from streams.admin import publish
from streams.matching import SubscriberIndex

GIB = 2**30
BYTES_PER_TMPFS_FILE = 5 * 1024
"""What one small ``.eml`` file costs on tmpfs, roughly: a 4 KiB page plus inode and dentry."""
BYTES_PER_ALERT = 5 * 1024 // 2
"""What the broker and a worker grow by per alert during a burst, roughly (about 1.4 and 1 KiB
in the first 1,000,000-subscription run: alert batches, delivery records, sent ids)."""
BYTES_PER_SUBSCRIPTION = 4 * 1024
"""What the broker and the workers hold per indexed subscription, roughly (3.7 KiB in that run)."""


@dataclass
class Inputs:
    """What every run publishes, built once: encoded subscriptions and updates, expected counts."""

    records: list[tuple[str, bytes]]
    ids: set[str]
    updates: list[CaseUpdate]
    expected: dict[str, int] | None
    """Matching-set size per event id, from the in-process index (None with ``--no-check``)."""


def build_population(subscribers: int, updates: int, seed: int, check: bool) -> Inputs:
    started = time.perf_counter()
    population = Population(seed)
    people = [population.subscription(i) for i in range(subscribers)]
    # A CaseUpdate as a coordinator publishes it; its event id is derived from the content.
    burst = [
        CaseUpdate.model_validate_json(
            json.dumps({**population.case(i).model_dump(mode="json"), "published_by": "bench"})
        )
        for i in range(updates)
    ]
    records = [(s.subscriber_id, s.model_dump_json().encode()) for s in people]
    ids = {s.subscriber_id for s in people}
    print(f"built {subscribers:,} subscriptions in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    expected = None
    if check:
        started = time.perf_counter()
        index = SubscriberIndex()
        for s in people:
            index.upsert(s)
        expected = {u.event_id: len(index.match_ids(u.public())) for u in burst}
        print(
            f"in-process index: {sum(expected.values()):,} alerts expected "
            f"({time.perf_counter() - started:.1f} s)",
            file=sys.stderr,
        )
        del index
    del people
    gc.collect()
    return Inputs(records, ids, burst, expected)


def pytest_running() -> bool:
    return subprocess.run(["pgrep", "-f", "pytest"], stdout=subprocess.DEVNULL, check=False).returncode == 0


def wait_for_idle(limit: float) -> tuple[float, bool]:
    """Wait until no pytest process runs, polling every 10 s, for at most ``limit`` seconds.

    Returns the seconds waited and whether the machine was idle at the end.
    """
    started = time.monotonic()
    while pytest_running():
        if time.monotonic() - started >= limit:
            print(f"pytest still running after {limit:.0f} s; going on", file=sys.stderr)
            return time.monotonic() - started, False
        time.sleep(10)
    return time.monotonic() - started, True


def proc_bytes(path: str, name: str) -> int:
    """A ``name: N kB`` figure of a /proc file (``/proc/meminfo``, ``/proc/PID/status``), in bytes."""
    with open(path, encoding="ascii") as figures:
        for line in figures:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {name} in {path}")


def mem_available() -> int:
    return proc_bytes("/proc/meminfo", "MemAvailable")


def peak_rss(pid: int) -> int:
    """The peak resident set size of a running process."""
    return proc_bytes(f"/proc/{pid}/status", "VmHWM")


def on_tmpfs(path: Path) -> bool:
    """Whether ``path`` lies on a tmpfs mount (the longest mount point that contains it)."""
    resolved, best, kind = str(path.resolve()), "", ""
    with open("/proc/mounts", encoding="ascii") as mounts:
        for line in mounts:
            _, point, fstype, *_ = line.split()
            inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, fstype
    return kind == "tmpfs"


def disk_bytes(directory: Path) -> tuple[int, int]:
    """Files and allocated bytes of the ``.eml`` files in ``directory``."""
    files = size = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(".eml") and not entry.name.startswith("."):
                files += 1
                size += entry.stat(follow_symlinks=False).st_blocks * 512
    return files, size


def check_memory(population: Inputs, to_index: int, outbox_root: Path, floor: int) -> None:
    """Fail now if indexing ``to_index`` subscriptions and the burst's alerts and files will
    not fit in the available memory, keeping ``floor`` free (an estimate: see the constants)."""
    if population.expected is None:
        return
    tmpfs = on_tmpfs(outbox_root)
    per_alert = BYTES_PER_ALERT + (BYTES_PER_TMPFS_FILE if tmpfs else 0)
    need = sum(population.expected.values()) * per_alert + to_index * BYTES_PER_SUBSCRIPTION
    available = mem_available()
    if need > available - floor:
        where = " with the outbox on tmpfs" if tmpfs else ""
        raise BenchError(
            f"the run would need about {need / GIB:.1f} GiB of memory{where}, {available / GIB:.1f} GiB "
            f"are available and {floor / GIB:.1f} GiB are to stay free"
            + ("; use --outbox-parent on a disk" if tmpfs else "")
        )


class Monitor(threading.Thread):
    """Samples free memory and other tests while the burst runs; stops the workers if memory runs low."""

    def __init__(self, p: Pipeline, floor: int) -> None:
        super().__init__(daemon=True)
        self._p, self._floor = p, floor
        self._done = threading.Event()
        self.lowest = mem_available()
        self.pytest_seen = False
        self.ran_out = 0.0
        """When the free memory fell below the floor (0: it did not)."""

    def run(self) -> None:
        tick = 0
        while not self._done.wait(1.0):
            self.lowest = min(self.lowest, mem_available())
            if self.lowest < self._floor and not self.ran_out:
                self.ran_out = time.time()
                for w in self._p.workers:
                    w.process.send_signal(signal.SIGTERM)
            if tick % 5 == 0 and not self.pytest_seen:
                self.pytest_seen = pytest_running()
            tick += 1

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)


@dataclass
class Result:
    """The figures of one run."""

    workers: int
    partitions: int
    subscribers: int
    updates: int
    alerts: int
    per_update: list[int]
    checked: bool
    publish_subscriptions_s: float
    indexing_s: float
    publish_burst_s: float
    last_matched_s: float
    first_delivered_s: float
    last_delivered_s: float
    delivered_per_worker: list[int]
    worker_cpu_s: list[float]
    broker_cpu_s: float
    files: int
    outbox: str
    outbox_bytes: int
    worker_peak_rss: list[int]
    broker_peak_rss: int
    lowest_available: int
    idle_wait_s: float
    idle: bool
    pytest_seen: bool
    load_average: float

    @property
    def alerts_per_s(self) -> float:
        return self.alerts / self.last_delivered_s


def table(results: Sequence[Result]) -> str:
    """One column per run; with runs of 1 and of N workers, the ratio of their means."""

    def row(name: str, value: Callable[[Result], str]) -> str:
        return f"| {name} | " + " | ".join(value(r) for r in results) + " |"

    def gib(n: int) -> str:
        return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 2**20:,.0f} MiB"

    header = "| figure | " + " | ".join(f"run {i + 1}" for i in range(len(results))) + " |"
    rows = [
        header,
        "|---|" + "---|" * len(results),
        row("workers × partitions", lambda r: f"{r.workers} × {r.partitions}"),
        row("subscriptions / case updates in the burst", lambda r: f"{r.subscribers:,} / {r.updates}"),
        row(
            "alerts (sum of `case_update.matched`)",
            lambda r: f"{r.alerts:,}" + (" (= in-process index)" if r.checked else ""),
        ),
        row(
            "alerts per update: min / median / max",
            lambda r: (
                f"{min(r.per_update):,} / {statistics.median(r.per_update):,.0f} / {max(r.per_update):,}"
            ),
        ),
        row("publish subscriptions (client)", lambda r: f"{r.publish_subscriptions_s:.1f} s"),
        row(
            "publish → every subscription indexed",
            lambda r: f"{r.indexing_s:.1f} s ({r.subscribers / r.indexing_s:,.0f}/s)",
        ),
        row("publish of the burst acknowledged", lambda r: f"{r.publish_burst_s * 1000:.0f} ms"),
        row(
            "t0 → last `case_update.matched` (match + produce)",
            lambda r: f"{r.last_matched_s:.1f} s ({r.alerts / r.last_matched_s:,.0f} alerts/s)",
        ),
        row("t0 → first `alerts.delivered`", lambda r: f"{r.first_delivered_s:.2f} s"),
        row(
            "**t0 → last `alerts.delivered`** (last email to the sink)",
            lambda r: f"**{r.last_delivered_s:.1f} s**",
        ),
        row("**alerts/s end to end**", lambda r: f"**{r.alerts_per_s:,.0f}**"),
        row("alerts delivered per worker", lambda r: " + ".join(f"{n:,}" for n in r.delivered_per_worker)),
        row(
            "worker CPU, t0 → last delivered",
            lambda r: (
                " + ".join(f"{c:.1f} s" for c in r.worker_cpu_s)
                + f" ({sum(r.worker_cpu_s) * 1e6 / r.alerts:.0f} µs per alert)"
            ),
        ),
        row("broker CPU, t0 → last delivered", lambda r: f"{r.broker_cpu_s:.1f} s"),
        row("accepted delivery records = distinct alert ids = `.eml` files", lambda r: f"{r.files:,}"),
        row("outbox", lambda r: f"{r.outbox}, {gib(r.outbox_bytes)}"),
        row(
            "peak RSS: worker(s); broker",
            lambda r: " + ".join(gib(n) for n in r.worker_peak_rss) + f"; {gib(r.broker_peak_rss)}",
        ),
        row("lowest MemAvailable during the burst", lambda r: gib(r.lowest_available)),
        row(
            "pytest before the run / during the burst",
            lambda r: (
                f"{'none' if r.idle else 'still running'} after waiting {r.idle_wait_s:.0f} s / "
                f"{'seen' if r.pytest_seen else 'none'}"
            ),
        ),
        row("load average (1 min) at the end of the burst", lambda r: f"{r.load_average:.2f}"),
    ]
    out = "\n".join(rows)
    ones = [r for r in results if r.workers == 1]
    for n in sorted({r.workers for r in results} - {1}):
        more = [r for r in results if r.workers == n]
        if not ones or not more:
            continue
        rate = statistics.fmean(r.alerts_per_s for r in more) / statistics.fmean(r.alerts_per_s for r in ones)
        last = statistics.fmean(r.last_delivered_s for r in ones) / statistics.fmean(
            r.last_delivered_s for r in more
        )
        matched = statistics.fmean(r.last_matched_s for r in ones) / statistics.fmean(
            r.last_matched_s for r in more
        )
        out += (
            f"\n\n**{n} workers / 1 worker** (means of {len(more)} and {len(ones)} runs): "
            f"alerts/s × {rate:.2f}; t0 → last delivered {last:.2f}× shorter; "
            f"t0 → last matched {matched:.2f}× shorter"
        )
    return out


def run(args: argparse.Namespace, workers: int, population: Inputs, work: Path, outbox_root: Path) -> Result:
    idle_wait_s, idle = wait_for_idle(args.idle_wait)
    deadline = time.monotonic() + args.timeout
    floor = int(args.min_available_gib * GIB)
    check_memory(population, len(population.ids), outbox_root, floor)
    with pipeline(
        work,
        partitions=args.partitions,
        workers=workers,
        batch_size=args.batch_size,
        outbox_root=outbox_root,
        deadline=deadline,
    ) as p:
        publish_s, indexing_s = index_subscriptions(p, population.ids, population.records, deadline)
        waited, still_idle = wait_for_idle(args.idle_wait)
        deadline += waited  # --timeout bounds the work, not the waits for an idle machine
        idle_wait_s, idle = idle_wait_s + waited, idle and still_idle
        expected = population.expected
        check_memory(population, 0, outbox_root, floor)
        event_ids = [u.event_id for u in population.updates]
        for w in p.workers:
            w.event_ids = set(event_ids)
        burst = [(u.case_id, u.model_dump_json().encode()) for u in population.updates]
        monitor = Monitor(p, floor)
        monitor.start()
        try:
            cpu_before, _, broker_before = p.cpu()
            t0 = time.time()
            publish(p.bootstrap, p.names.case_updates, burst)
            acked = time.time()
            alerts = wait_matched(p, event_ids, deadline)
            matched = {
                e: sum(n for w in p.workers for n in w.state.matched_by_event.get(e, {}).values())
                for e in event_ids
            }
            if expected is not None and matched != expected:
                wrong = [(e, matched[e], expected[e]) for e in event_ids if matched[e] != expected[e]]
                raise BenchError(f"matched ≠ in-process index for {len(wrong)} updates: {wrong[:5]}")
            wait_delivered(p, alerts, deadline, poll_outbox=False)
            cpu_after, _, broker_after = p.cpu()
            load = os.getloadavg()[0]
        except BenchError:
            if monitor.ran_out:
                for w in p.workers:
                    w.follow()
                raise BenchError(
                    f"MemAvailable fell below {args.min_available_gib} GiB "
                    f"{monitor.ran_out - t0:.0f} s after t0, with "
                    f"{sum(w.state.delivered for w in p.workers):,} alerts delivered and "
                    f"{proc_bytes('/proc/meminfo', 'Shmem') / GIB:.1f} GiB on tmpfs; the workers were stopped"
                ) from None
            raise
        finally:
            monitor.stop()
        peaks = [peak_rss(w.process.pid) for w in p.workers]
        broker_peak = peak_rss(p.broker._process.pid) if p.broker._process else 0  # private: the pid
        files = verify_deliveries(p, alerts, timeout=max(60.0, deadline - time.monotonic()))
        _, outbox_bytes = disk_bytes(p.outbox)
        return Result(
            workers=workers,
            partitions=args.partitions,
            subscribers=len(population.ids),
            updates=len(event_ids),
            alerts=alerts,
            per_update=list(matched.values()),
            checked=expected is not None,
            publish_subscriptions_s=publish_s,
            indexing_s=indexing_s,
            publish_burst_s=acked - t0,
            last_matched_s=max(t for w in p.workers for t in w.state.matched_times) - t0,
            first_delivered_s=min(w.state.first_delivered for w in p.workers) - t0,
            last_delivered_s=max(w.state.last_delivered for w in p.workers) - t0,
            delivered_per_worker=[w.state.delivered for w in p.workers],
            worker_cpu_s=[a - b for a, b in zip(cpu_after, cpu_before, strict=True)],
            broker_cpu_s=broker_after - broker_before,
            files=files,
            outbox="tmpfs" if on_tmpfs(p.outbox) else "disk",
            outbox_bytes=outbox_bytes,
            worker_peak_rss=peaks,
            broker_peak_rss=broker_peak,
            lowest_available=monitor.lowest,
            idle_wait_s=idle_wait_s,
            idle=idle,
            pytest_seen=monitor.pytest_seen,
            load_average=load,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--updates", type=int, default=100, help="case updates in the burst")
    parser.add_argument(
        "--workers", type=int, nargs="+", choices=(1, 2), default=[1, 2], help="one run per value, in order"
    )
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1000, help="MOBILISE_DELIVERY_BATCH_SIZE")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=3600.0, help="bound of each run, seconds")
    parser.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="count the expected alerts with an in-process SubscriberIndex",
    )
    parser.add_argument(
        "--outbox-parent",
        type=Path,
        help="where the outbox directory goes (default: the temporary directory; /dev/shm for memory)",
    )
    parser.add_argument("--idle-wait", type=float, default=600.0, help="longest wait for no pytest, seconds")
    parser.add_argument("--min-available-gib", type=float, default=3.0, help="stop the run below this")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories (logs, outbox)")
    args = parser.parse_args()
    configure_logging("console", "warning")  # keep the admin client's info lines out of stdout
    # A SIGTERM unwinds like an error: the workers and the broker are stopped, the tables printed.
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))

    population = build_population(args.subscribers, args.updates, args.seed, args.check)
    results: list[Result] = []
    try:
        for n, workers in enumerate(args.workers, 1):
            work = Path(tempfile.mkdtemp(prefix="mobilise-burst-"))
            outbox_root = Path(tempfile.mkdtemp(prefix="mobilise-burst-", dir=args.outbox_parent))
            try:
                print(f"run {n}: {workers} worker(s)", file=sys.stderr)
                results.append(run(args, workers, population, work, outbox_root))
                print(f"### run {n}\n\n{table(results[-1:])}\n", flush=True)  # each run as soon as done
            finally:
                for directory in (work, outbox_root):
                    if args.keep:
                        print(f"kept {directory}", file=sys.stderr)
                    else:
                        shutil.rmtree(directory, ignore_errors=True)
    finally:
        if len(results) > 1:
            print(f"### all runs\n\n{table(results)}", flush=True)


if __name__ == "__main__":
    main()
