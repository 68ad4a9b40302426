"""SendGrid benchmark: one urgent action to 100,000 people through the SendGrid sink, against the fake API.

Two parts; both run the fake SendGrid v3 server of ``tests/fakes/sendgrid_server.py`` (which
validates every request against the Mail Send contract) in a **separate process** on
127.0.0.1, so that its JSON parsing and checks do not share this process's GIL or CPU
time; it reports what it accepted over a pipe.

``sink`` — ``SendGridSink`` alone, in this process:

1. Population (seeded): ``--recipients`` subscriptions that match the urgent action, in
   English, French and Spanish (60 / 25 / 15 %), with names (some absent, some non-ASCII,
   some with a comma), following Bangladesh, South Asia, the world, or a brand, and
   interests among the case's issues or not. The real ``SubscriberIndex`` matches them
   (so each alert has its real ``MatchReason``: region, country, interests, brands), each
   ``Alert`` is built as the matcher builds it and serialized, then read back with
   ``Alert.model_validate_json`` as the delivery stage reads it (each alert with its own
   ``case`` object). None of this is timed as sink work.
2. For each combination of ``--batch-size`` × ``--rate`` (``MOBILISE_SENDGRID_MAX_REQUESTS_PER_SECOND``)
   × ``--latency`` (seconds the fake waits before answering each request): a fresh fake and
   a fresh sink (``SendGridConfig`` pointed at the fake), ``setup()``, then ``deliver()`` on
   consecutive batches of that size, awaited one after another as the worker does.
   Measured: wall time (``perf_counter``) and CPU time of this process
   (``time.process_time``, all threads) around the loop; API calls and their statuses, and
   request sizes, from the fake; the fake's own CPU time (``/proc``). The breakdown
   wraps, without changing them, the sink's two phases: ``plan_requests`` (grouping,
   per-person rendering, building the JSON bodies; runs in a thread) and ``_post`` (the
   ``sendgrid`` library's request: JSON encoding, urllib, waiting for the answer; in a
   thread), with wall and thread CPU time each; token-bucket waits go through the sink's
   ``sleep`` hook. "Other" is the rest of the wall time (event loop, thread hand-offs,
   outcomes).
3. Verified for every run: every outcome accepted, and the fake accepted exactly
   ``--recipients`` personalizations with as many distinct ``alert_id`` custom args.

``e2e`` — one ``mobilise worker`` subprocess with ``MOBILISE_SINK=sendgrid`` against the fake,
on the embedded broker, using ``bench/end_to_end.py``'s ``Worker`` (incremental log follower)
and helpers: ``--matching`` matching + ``--others`` non-matching subscriptions are published
and indexed, then the update; t0 is just before its publish. Reported: t0 → last
``case_update.matched``, t0 → first and last 202 (the fake's clock, same machine),
**emails/s = matching / (last 202 − t0)**, API calls and calls per 10,000 recipients, CPU of
the worker, the broker and the fake. Verified: the fake accepted exactly ``--matching``
personalizations, all distinct alert ids; no dead letters.

``--py-spy DIR`` records this process (``sink``, the first run) or the worker (``e2e``) with
py-spy and prints the hottest lines (self time) and functions (inclusive).

Run: ``python bench/sendgrid_bench.py sink|e2e|all [options]`` from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]  # tests.fakes, and end_to_end beside this file

from end_to_end import BenchError, Worker, cpu_seconds, tree_cpu_seconds, wait_until  # noqa: E402

import connectors.sendgrid_mail as sendgrid_mail  # noqa: E402
from connectors.sendgrid_mail import SendGridConfig, SendGridSink  # noqa: E402
from mobilise.broker import EmbeddedBroker  # noqa: E402
from mobilise.logs import configure_logging  # noqa: E402
from schemas import Alert, CaseUpdate, Subscription, alert_id_for  # noqa: E402
from streams.admin import create_topics, publish  # noqa: E402
from streams.matching import SubscriberIndex  # noqa: E402
from streams.topics import TopicNames, topic_specs  # noqa: E402
from tests.fakes.sendgrid_server import API_KEY, FakeSendGrid  # noqa: E402

FROM = "Solidarity alerts <alerts@example.org>"
SECRET = "bench-secret-key-0123456789abcdef0123456789"
PUBLIC_URL = "https://alerts.example.org"

# -- the population and the update ---------------------------------------------------------

LANGUAGES = (("en", 60), ("fr", 25), ("es", 15))
FIRST = [
    "Nazma",
    "Rahima",
    "Shila",
    "Kalpona",
    "Taslima",
    "Mitu",
    "Sokina",
    "Jesmin",
    "Amirul",
    "Babul",
    "Ananya",
    "Priya",
    "Ravi",
    "Marie",
    "Élodie",
    "Camille",
    "Aïcha",
    "Hélène",
    "Léa",
    "Julien",
    "Théo",
    "José",
    "María",
    "Lucía",
    "Carmen",
    "Núñez",
    "Sofía",
    "Alejandro",
    "Thị",
    "Hương",
    "Sam",
    "Emma",
    "Olivia",
    "Noah",
    "Liam",
    "Grace",
    "Chen",
    "Wei",
    "Fatima",
    "Yusuf",
    "Ines",
]
LAST = [
    "Akter",
    "Begum",
    "Khatun",
    "Rahman",
    "Hossain",
    "Islam",
    "Das",
    "Roy",
    "Dupont",
    "Martin",
    "Lefèvre",
    "Moreau",
    "García",
    "López",
    "Fernández",
    "Pérez",
    "Nguyễn",
    "Trần",
    "Smith",
    "Jones",
    "Brown",
    "Okafor",
    "Mensah",
    "Kaya",
    "Yılmaz",
]
OTHER_COUNTRIES = ("KH", "VN", "IN", "PK", "LK", "MM", "ID", "GB", "FR", "ES", "US", "DE")
CASE_ISSUES = ("union_busting", "freedom_of_association", "wages")
OTHER_INTERESTS = ("child_labour", "building_safety", "gender_based_violence", "health_and_safety")
CASE_BRANDS = ("H&M", "Zara", "Primark")
OTHER_BRANDS = ("Uniqlo", "Gap", "Next", "Mango", "C&A")


def _name(rng: random.Random) -> str | None:
    roll = rng.random()
    if roll < 0.08:
        return None
    first, last = rng.choice(FIRST), rng.choice(LAST)
    if roll < 0.12:
        return f"{last}, {first}"  # a comma: SendGrid needs the name quoted
    return f"{first} {last}"


def _language(rng: random.Random) -> str:
    return rng.choices([code for code, _ in LANGUAGES], weights=[w for _, w in LANGUAGES])[0]


def population(matching: int, others: int, seed: int) -> list[Subscription]:
    """``matching`` subscriptions :func:`urgent_action` matches (for varied reasons), then ``others``."""
    rng = random.Random(seed)
    created = datetime.now(UTC).isoformat()
    records: list[dict[str, Any]] = []
    for i in range(matching):
        roll = rng.random()
        if roll < 0.55:
            where: dict[str, Any] = {"countries": ["BD", *rng.sample(OTHER_COUNTRIES, rng.randint(0, 2))]}
        elif roll < 0.80:
            where = {"regions": ["southern-asia"]}
        elif roll < 0.90:
            where = {"worldwide": True}
        else:
            where = {"countries": [*rng.sample(OTHER_COUNTRIES, 2), "BD"]}
        if rng.random() < 0.8:  # by interest, and sometimes a brand too
            what: dict[str, Any] = {
                "interests": rng.sample(CASE_ISSUES, rng.randint(1, 2)) + rng.sample(OTHER_INTERESTS, 1)
            }
            if rng.random() < 0.3:
                what["brands"] = [rng.choice(CASE_BRANDS).lower()]
        else:  # by brand only
            what = {"interests": [rng.choice(OTHER_INTERESTS)], "brands": [rng.choice(CASE_BRANDS)]}
        records.append(
            {
                "email": f"activist{i}@example.org",
                "name": _name(rng),
                "language": _language(rng),
                **where,
                **what,
            }
        )
    for i in range(others):
        kind = i % 3
        if kind == 0:
            wrong: dict[str, Any] = {"countries": ["KH"], "interests": ["union_busting"]}
        elif kind == 1:
            wrong = {"countries": ["BD"], "interests": ["child_labour"], "brands": ["Uniqlo"]}
        else:
            wrong = {"worldwide": True, "interests": ["union_busting"], "statuses": ["remedy_won"]}
        records.append({"email": f"bystander{i}@example.org", "name": _name(rng), **wrong})
    return [
        Subscription.model_validate_json(json.dumps({"confirmed": True, "created_at": created, **record}))
        for record in records
    ]


def urgent_action() -> CaseUpdate:
    """A realistic urgent action in three languages, with an action call and a deadline."""
    return CaseUpdate.model_validate_json(
        json.dumps(
            {
                "case_id": f"bd-bench-{uuid.uuid4().hex[:8]}",
                "status": "urgent_action",
                "title": {
                    "en": "Union leaders fired at Dhaka Knitwear",
                    "fr": "Des dirigeants syndicaux licenciés chez Dhaka Knitwear",
                    "es": "Despiden a dirigentes sindicales en Dhaka Knitwear",
                },
                "summary": {
                    "en": "Twelve elected union leaders were dismissed days after registering their union. "
                    "Workers who protested were threatened with blacklisting.",
                    "fr": "Douze dirigeants syndicaux élus ont été licenciés quelques jours après "
                    "l'enregistrement de leur syndicat. Les ouvrières qui ont protesté ont été menacées.",
                    "es": "Doce dirigentes sindicales electos fueron despedidos días después de registrar "
                    "su sindicato. Quienes protestaron fueron amenazadas con listas negras.",
                },
                "country": "BD",
                "brands": list(CASE_BRANDS),
                "factory": {"name": "Dhaka Knitwear Ltd", "city": "Gazipur"},
                "issues": list(CASE_ISSUES),
                "action_call": {
                    "kind": "email_brand",
                    "instructions": {
                        "en": "Email H&M's CEO and demand the reinstatement of the twelve leaders.",
                        "fr": "Écrivez au PDG de H&M et exigez la réintégration des douze dirigeants.",
                        "es": "Escriba al director ejecutivo de H&M y exija la readmisión de los doce.",
                    },
                    "target": {"name": "H&M Group", "email": "ceo-office@example.com"},
                    "deadline": "2026-12-05T12:00:00Z",
                },
                "occurred_at": datetime.now(UTC).isoformat(),
                "published_by": "coordinator-asia",
                "internal": {"workers_at_risk": ["(never rendered)"]},
            }
        )
    )


def alert_records(update: CaseUpdate, people: Sequence[Subscription]) -> list[bytes]:
    """The alerts topic's records of ``update``: matched by the real index, built as the matcher does."""
    index = SubscriberIndex()
    for person in people:
        index.upsert(person)
    public = update.public()
    now = datetime.now(UTC)
    return [
        Alert(
            alert_id=alert_id_for(update.event_id, s.subscriber_id),
            event_id=update.event_id,
            subscriber_id=s.subscriber_id,
            email=s.email,
            name=s.name,
            language=s.language,
            case=public,
            reason=reason,
            created_at=now,
        )
        .model_dump_json()
        .encode()
        for s, reason in index.match(public)
    ]


# -- the fake SendGrid in its own process ---------------------------------------------------


class TimedFake(FakeSendGrid):
    """The fake, also noting when it answered each request, how long it took and how big it was."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.handled: list[tuple[float, float, int, int]] = []
        """(answered at, seconds spent besides the delay, status, request bytes)."""

    async def _mail_send(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        response = await super()._mail_send(request)
        spent = time.perf_counter() - started - self.delay
        self.handled.append((time.time(), spent, response.status, request.content_length or 0))
        return response


def _summary(fake: TimedFake) -> dict[str, Any]:
    """What the fake accepted: personalizations, distinct alert ids, statuses, sizes, times."""
    alert_ids: Counter[str] = Counter()
    for body in fake.accepted:
        alert_ids.update(p["custom_args"]["alert_id"] for p in body["personalizations"])
    handled = list(fake.handled)
    accepted = [h for h in handled if h[2] == 202]
    return {
        "requests": len(handled),
        "statuses": dict(Counter(h[2] for h in handled)),
        "personalizations": sum(alert_ids.values()),
        "unique_alert_ids": len(alert_ids),
        "duplicated_alert_ids": sum(1 for n in alert_ids.values() if n > 1),
        "per_request": [len(body["personalizations"]) for body in fake.accepted],
        "bytes": [h[3] for h in accepted],
        "handling_s": sum(h[1] for h in handled),
        "first_202": min((h[0] for h in accepted), default=0.0),
        "last_202": max((h[0] for h in accepted), default=0.0),
    }


def _serve(conn: Connection, delay: float) -> None:
    """The child process: serve the fake and answer ``progress``, ``summary`` and ``stop`` over ``conn``."""
    fake = TimedFake(delay)
    with fake.in_thread():
        conn.send(fake.url)
        seen, personalizations, last_202 = 0, 0, 0.0
        while True:
            command = conn.recv()
            if command == "progress":  # cheap, for polling: count only the new requests
                bodies = fake.accepted
                personalizations += sum(len(b["personalizations"]) for b in bodies[seen:])
                seen = len(bodies)
                last_202 = max((h[0] for h in fake.handled if h[2] == 202), default=last_202)
                conn.send((personalizations, last_202))
            elif command == "summary":
                conn.send(_summary(fake))
            else:
                conn.send(None)
                return


class FakeProcess:
    """The fake SendGrid API in a child process; ``url`` once started."""

    def __init__(self, delay: float = 0.0) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, delay), name="fake-sendgrid", daemon=True)
        self._process.start()
        if not self._conn.poll(60):
            raise BenchError("the fake SendGrid process did not start")
        self.url: str = self._conn.recv()

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def ask(self, command: str) -> Any:
        self._conn.send(command)
        if not self._conn.poll(120):
            raise BenchError(f"the fake SendGrid process did not answer {command!r}")
        return self._conn.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError, EOFError, BenchError):
            self.ask("stop")
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)


def _verify(summary: dict[str, Any], expected: int) -> None:
    if not (
        summary["personalizations"] == expected
        and summary["unique_alert_ids"] == expected
        and summary["duplicated_alert_ids"] == 0
    ):
        raise BenchError(
            f"the fake accepted {summary['personalizations']:,} personalizations, "
            f"{summary['unique_alert_ids']:,} distinct alert ids ({summary['duplicated_alert_ids']:,} "
            f"more than once); expected exactly {expected:,} once each"
        )


# -- py-spy -----------------------------------------------------------------------------------


def start_py_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    spy = subprocess.Popen(
        [
            *(str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid), "--rate", "200"),
            *("--format", "raw", "--threads", "--subprocesses", "--output", str(output)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attaching
    return spy


def stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(timeout=10)


_IDLE = re.compile(
    r"select \(selectors|_worker \(concurrent/futures|wait \(threading|poll \(selectors|\(idle\)"
)


def profile_table(raw: Path, top: int = 25) -> str:
    """The hottest lines (self time) and functions (inclusive) of py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames or _IDLE.search(frames[-1]):
            continue  # a thread waiting for work
        count = int(count_text)
        busy += count
        own[frames[-1]] += count
        for function in {re.sub(r":\d+\)$", ")", f) for f in frames}:
            inclusive[function] += count
    if not busy:
        return "(no samples)"
    rows = ["| self % | line |", "|---|---|"]
    rows += [f"| {100 * n / busy:.1f} | `{frame}` |" for frame, n in own.most_common(top)]
    rows += ["", "| inclusive % | function |", "|---|---|"]
    rows += [f"| {100 * n / busy:.1f} | `{frame}` |" for frame, n in inclusive.most_common(top)]
    return f"{busy:,} busy samples (waiting threads left out)\n\n" + "\n".join(rows)


# -- part 1: the sink alone ------------------------------------------------------------------


@dataclass
class Phases:
    """Time inside the sink's phases, summed over a run."""

    plan_s: float = 0.0
    plan_cpu_s: float = 0.0
    http_s: float = 0.0
    http_cpu_s: float = 0.0
    waits_s: float = 0.0


@dataclass
class SinkResult:
    batch_size: int
    rate: float
    latency: float
    recipients: int
    batches: int
    wall_s: float
    cpu_s: float
    phases: Phases
    fake: dict[str, Any]
    fake_cpu_s: float

    @property
    def calls(self) -> int:
        return int(self.fake["requests"])

    def column(self) -> list[str]:
        n, p = self.recipients, self.phases
        other = self.wall_s - p.plan_s - p.http_s - p.waits_s
        sizes = self.fake["bytes"]
        return [
            f"{self.batch_size:,}",
            "10 (default)" if self.rate == 10 else f"{self.rate:,.0f}",
            f"{self.latency * 1000:.0f} ms",
            f"{self.wall_s:.1f} s",
            f"{self.calls:,} ({_statuses(self.fake['statuses'])})",
            f"{self.calls * 10_000 / n:.1f}",
            f"{n / max(1, self.calls):,.0f}",
            f"**{n / self.wall_s:,.0f}**",
            f"{self.cpu_s:.1f} s ({1e6 * self.cpu_s / n:.0f} µs/email)",
            f"{p.plan_s:.1f} s, CPU {1e6 * p.plan_cpu_s / n:.0f} µs/email",
            f"{p.http_s:.1f} s, client CPU {1e6 * p.http_cpu_s / n:.0f} µs/email",
            f"{p.waits_s:.1f} s",
            f"{other:.1f} s",
            f"{sum(sizes) / max(1, len(sizes)) / 1e6:.2f} MB",
            f"{self.fake_cpu_s:.1f} s, {1000 * self.fake['handling_s'] / max(1, self.calls):.0f} ms/call",
        ]


SINK_ROWS = [
    "MOBILISE_DELIVERY_BATCH_SIZE (alerts per deliver())",
    "MOBILISE_SENDGRID_MAX_REQUESTS_PER_SECOND",
    "fake's latency per request",
    "wall time",
    "API calls (statuses)",
    "**API calls per 10,000 recipients** (floor 10)",
    "emails per call (mean)",
    "**emails/s handed to the provider**",
    "CPU of the process (all threads)",
    "in `plan_requests` (grouping, rendering, JSON bodies)",
    "in `_post` (sendgrid library: encode, send, wait)",
    "in rate-limit waits",
    "other (event loop, thread hand-offs, outcomes)",
    "request size (mean)",
    "fake SendGrid: CPU, handling per call",
]


def _statuses(statuses: dict[Any, int]) -> str:
    return ", ".join(f"{count:,}× {status}" for status, count in sorted(statuses.items(), key=str))


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _sink_table(results: Sequence[SinkResult]) -> str:
    columns = [r.column() for r in results]
    header = ["figure", *(f"run {i + 1}" for i in range(len(results)))]
    return _table(header, [[label, *(c[i] for c in columns)] for i, label in enumerate(SINK_ROWS)])


@contextlib.contextmanager
def _timed_planning(phases: Phases) -> Iterator[None]:
    original = sendgrid_mail.plan_requests

    def plan(*args: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            phases.plan_s += time.perf_counter() - started
            phases.plan_cpu_s += time.thread_time() - cpu

    sendgrid_mail.plan_requests = plan  # same signature, timed
    try:
        yield
    finally:
        sendgrid_mail.plan_requests = original


async def _deliver_all(
    alerts: Sequence[Alert], args: argparse.Namespace, url: str, batch_size: int, rate: float, phases: Phases
) -> tuple[float, float, int]:
    links = {"public_url": PUBLIC_URL, "secret_key": SECRET} if args.links else {"public_url": None}
    config = SendGridConfig(
        sendgrid_api_key=API_KEY,
        sendgrid_host=url,
        sendgrid_max_requests_per_second=rate,
        from_email=FROM,
        unsubscribe_email="unsubscribe@example.org",
        **links,
    )

    async def sleep(seconds: float) -> None:
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        phases.waits_s += time.perf_counter() - started

    sink = SendGridSink(config, sleep=sleep)
    post = sink._post  # the sink's own method, wrapped to time it

    def timed_post(*post_args: Any) -> tuple[int, Any, str]:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return post(*post_args)
        finally:
            phases.http_s += time.perf_counter() - started
            phases.http_cpu_s += time.thread_time() - cpu

    sink._post = timed_post  # type: ignore[method-assign,assignment]  # instrumentation only
    wall, cpu = time.perf_counter(), time.process_time()
    await sink.setup()
    batches = 0
    with _timed_planning(phases):
        for start in range(0, len(alerts), batch_size):
            outcomes = await sink.deliver(alerts[start : start + batch_size])
            batches += 1
            refused = [o for o in outcomes if not o.accepted]
            if refused or len(outcomes) != len(alerts[start : start + batch_size]):
                raise BenchError(f"batch {batches}: {len(refused)} alerts not accepted, e.g. {refused[:1]}")
    await sink.close()
    return time.perf_counter() - wall, time.process_time() - cpu, batches


def run_sink(args: argparse.Namespace) -> str:
    started = time.perf_counter()
    people = population(args.recipients, 0, args.seed)
    update = urgent_action()
    records = alert_records(update, people)
    if len(records) != args.recipients:
        raise BenchError(f"{len(records):,} alerts matched, expected {args.recipients:,}")
    prepared = time.perf_counter()
    alerts = [Alert.model_validate_json(r) for r in records]  # as the delivery stage reads them
    parsed = time.perf_counter()
    del people, records
    languages = Counter(a.language for a in alerts)
    reasons = Counter(
        "+".join(
            k
            for k, v in (
                ("world", a.reason.worldwide),
                ("region", a.reason.region),
                ("country", a.reason.country),
                ("interest", a.reason.interests),
                ("brand", a.reason.brands),
            )
            if v
        )
        for a in alerts
    )
    print(
        f"{len(alerts):,} alerts built in {prepared - started:.1f} s, read back (Alert.model_validate_json, "
        f"the delivery stage's cost, not timed below) in {parsed - prepared:.1f} s "
        f"({1e6 * (parsed - prepared) / len(alerts):.0f} µs each); languages {dict(languages)}; "
        f"reasons {dict(reasons.most_common(6))}",
        file=sys.stderr,
    )
    results: list[SinkResult] = []
    profile = ""
    for batch_size, rate, latency in itertools.product(args.batch_size, args.rate, args.latency):
        fake = FakeProcess(delay=latency)
        spy = None
        try:
            if args.py_spy and not results:
                args.py_spy.mkdir(parents=True, exist_ok=True)
                spy = start_py_spy(os.getpid(), args.py_spy / "sink.txt")
            fake_cpu = cpu_seconds(fake.pid)
            phases = Phases()
            wall, cpu, batches = asyncio.run(_deliver_all(alerts, args, fake.url, batch_size, rate, phases))
            fake_cpu = cpu_seconds(fake.pid) - fake_cpu
            if spy is not None:
                stop_py_spy(spy)
                profile = profile_table(args.py_spy / "sink.txt")
                spy = None
            summary = fake.ask("summary")
        finally:
            if spy is not None:
                stop_py_spy(spy)
            fake.stop()
        _verify(summary, len(alerts))
        result = SinkResult(
            batch_size, rate, latency, len(alerts), batches, wall, cpu, phases, summary, fake_cpu
        )
        results.append(result)
        print(
            f"batch {batch_size}, {rate:,.0f} req/s, latency {latency}s: {len(alerts) / wall:,.0f} emails/s, "
            f"{result.calls} calls, CPU {cpu:.1f} s",
            file=sys.stderr,
        )
    out = [
        f"Sink alone: {len(alerts):,} recipients of one urgent action, "
        f"languages {', '.join(f'{k} {v:,}' for k, v in languages.most_common())}; "
        f"signed unsubscribe links {'on' if args.links else 'off'}. "
        f"Every run: {len(alerts):,} personalizations accepted, {len(alerts):,} distinct alert ids.",
        "",
        _sink_table(results),
    ]
    if profile:
        out += [
            "",
            f"py-spy, first run (batch {results[0].batch_size}, {results[0].rate:,.0f} req/s):",
            "",
            profile,
        ]
    return "\n".join(out)


# -- part 2: end to end through one worker -----------------------------------------------------


@dataclass
class EndToEnd:
    matching: int
    subscribers: int
    batch_size: int
    rate: str
    concurrency: str
    latency: float
    indexing_s: float
    last_matched_s: float
    first_202_s: float
    last_202_s: float
    last_delivered_s: float
    fake: dict[str, Any]
    worker_cpu_s: float
    broker_cpu_s: float
    fake_cpu_s: float
    bench_cpu_s: float
    extra: dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        m, calls = self.matching, int(self.fake["requests"])
        rows = [
            ("subscriptions (matching / total)", f"{m:,} / {self.subscribers:,}"),
            ("MOBILISE_DELIVERY_BATCH_SIZE", f"{self.batch_size:,}"),
            ("MOBILISE_SENDGRID_MAX_REQUESTS_PER_SECOND", self.rate),
            ("MOBILISE_SENDGRID_CONCURRENCY", self.concurrency),
            ("the fake's round trip per request", f"{self.latency * 1000:.0f} ms"),
            ("publish → every subscription indexed", f"{self.indexing_s:.1f} s"),
            ("t0 → last case_update.matched (match + produce alerts)", f"{self.last_matched_s:.1f} s"),
            ("t0 → first 202", f"{self.first_202_s:.1f} s"),
            ("t0 → last 202", f"{self.last_202_s:.1f} s"),
            ("**emails/s, first publish → last 202**", f"**{m / self.last_202_s:,.0f}**"),
            (
                "emails/s, first → last 202",
                f"{m / max(1e-9, self.last_202_s - self.first_202_s):,.0f}",
            ),
            ("t0 → last alerts.delivered (recorded)", f"{self.last_delivered_s:.1f} s"),
            ("API calls (statuses)", f"{calls:,} ({_statuses(self.fake['statuses'])})"),
            ("calls per 10,000 recipients (floor 10)", f"{calls * 10_000 / m:.1f}"),
            ("emails per call (mean)", f"{m / max(1, calls):,.0f}"),
            (
                "fake: personalizations / distinct alert ids accepted",
                f"{self.fake['personalizations']:,} / {self.fake['unique_alert_ids']:,}",
            ),
            (
                "worker CPU (with its sink process), t0 → last 202",
                f"{self.worker_cpu_s:.1f} s ({1e6 * self.worker_cpu_s / m:.0f} µs/email)",
            ),
            ("broker CPU", f"{self.broker_cpu_s:.1f} s"),
            ("fake SendGrid CPU", f"{self.fake_cpu_s:.1f} s"),
            ("benchmark process CPU (log following)", f"{self.bench_cpu_s:.1f} s"),
            *self.extra.items(),
        ]
        return "| figure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def run_e2e(args: argparse.Namespace, work: Path) -> EndToEnd:
    deadline = time.monotonic() + args.timeout
    broker = EmbeddedBroker(log_path=work / "tansu.log")
    fake = FakeProcess(delay=args.e2e_latency)
    worker: Worker | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        broker.start()
        run_id = uuid.uuid4().hex[:8]
        names = TopicNames(prefix=f"sg-{run_id}-")
        create_topics([broker.bootstrap], topic_specs(names, args.partitions), 1)
        env = dict(os.environ)
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
            MOBILISE_APP_ID=f"sg-bench-{run_id}",
            MOBILISE_TOPIC_PREFIX=names.prefix,
            MOBILISE_PARTITIONS=str(args.partitions),
            MOBILISE_DATA_DIR=str(work / "data"),
            MOBILISE_LOG_FORMAT="json",
            MOBILISE_LOG_LEVEL="info",
            MOBILISE_DELIVERY_BATCH_SIZE=str(args.e2e_batch_size),
            MOBILISE_SINK="sendgrid",
            MOBILISE_SENDGRID_API_KEY=API_KEY,
            MOBILISE_SENDGRID_HOST=fake.url,
            MOBILISE_FROM_EMAIL=FROM,
        )
        if args.e2e_rate is not None:
            env["MOBILISE_SENDGRID_MAX_REQUESTS_PER_SECOND"] = str(args.e2e_rate)
        if args.e2e_concurrency is not None:
            env["MOBILISE_SENDGRID_CONCURRENCY"] = str(args.e2e_concurrency)
        if args.links:
            env.update(MOBILISE_PUBLIC_URL=PUBLIC_URL, MOBILISE_SECRET_KEY=SECRET)
        worker = Worker(env, work / "worker.log")
        workers = [worker]
        wait_until(
            "the worker to own every partition",
            lambda: (
                bool(worker.state.ready) and sorted(worker.state.ready[-1]) == list(range(args.partitions))
            ),
            workers,
            deadline,
        )
        people = population(args.matching, args.others, args.seed)
        ids = {s.subscriber_id for s in people}
        started = time.time()
        publish(
            [broker.bootstrap],
            names.subscriptions,
            [(s.subscriber_id, s.model_dump_json().encode()) for s in people],
        )
        print(f"published {len(people):,} subscriptions in {time.time() - started:.1f} s", file=sys.stderr)
        wait_until(
            f"{len(ids):,} subscriptions to be indexed",
            lambda: ids <= worker.state.indexed,
            workers,
            deadline,
        )
        indexing = worker.state.last_indexed - started
        print(f"indexed after {indexing:.1f} s", file=sys.stderr)
        time.sleep(1.0)  # let the last table writes and commits settle

        update = urgent_action()
        worker.event_id = update.event_id
        if args.py_spy:
            args.py_spy.mkdir(parents=True, exist_ok=True)
            spy = start_py_spy(worker.process.pid, args.py_spy / "worker.txt")
        broker_pid = broker._process.pid if broker._process else None  # private: the broker's pid
        before = (
            tree_cpu_seconds(worker.process.pid),
            cpu_seconds(broker_pid) if broker_pid else 0.0,
            cpu_seconds(fake.pid),
            time.process_time(),
        )
        t0 = time.time()
        publish([broker.bootstrap], names.case_updates, [(update.case_id, update.model_dump_json().encode())])
        wait_until(
            "the update to be matched on every partition",
            lambda: sorted(worker.state.matched) == list(range(args.partitions)),
            workers,
            deadline,
        )
        matched = sum(worker.state.matched.values())
        if matched != args.matching:
            raise BenchError(f"case_update.matched adds up to {matched:,}, expected {args.matching:,}")
        progress: list[tuple[int, float]] = [(0, 0.0)]

        def all_accepted() -> bool:
            if worker.state.dead_lettered:
                raise BenchError(f"{worker.state.dead_lettered} alerts were dead-lettered")
            progress[0] = fake.ask("progress")
            return bool(progress[0][0] >= args.matching)

        wait_until(f"{args.matching:,} emails to be accepted by the fake", all_accepted, workers, deadline)
        after = (
            tree_cpu_seconds(worker.process.pid),
            cpu_seconds(broker_pid) if broker_pid else 0.0,
            cpu_seconds(fake.pid),
            time.process_time(),
        )
        if spy is not None:
            stop_py_spy(spy)
            spy = None
        wait_until(
            f"{args.matching:,} alerts recorded in alerts.delivered lines",
            lambda: worker.state.delivered >= args.matching,
            workers,
            deadline,
        )
        time.sleep(2.0)  # grace: a duplicate would show up as an extra request
        summary = fake.ask("summary")
        _verify(summary, args.matching)
        return EndToEnd(
            matching=args.matching,
            subscribers=len(people),
            batch_size=args.e2e_batch_size,
            rate="10 (default)" if args.e2e_rate is None else f"{args.e2e_rate:,.0f}",
            concurrency="4 (default)" if args.e2e_concurrency is None else str(args.e2e_concurrency),
            latency=args.e2e_latency,
            indexing_s=indexing,
            last_matched_s=max(worker.state.matched_times) - t0,
            first_202_s=summary["first_202"] - t0,
            last_202_s=summary["last_202"] - t0,
            last_delivered_s=worker.state.last_delivered - t0,
            fake=summary,
            worker_cpu_s=after[0] - before[0],
            broker_cpu_s=after[1] - before[1],
            fake_cpu_s=after[2] - before[2],
            bench_cpu_s=after[3] - before[3],
        )
    finally:
        if spy is not None:
            stop_py_spy(spy)
        if worker is not None:
            worker.stop()
        fake.stop()
        broker.stop()


# -- main -----------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    return f"{cpu}, nproc {os.cpu_count()}, Python {platform.python_version()}, {platform.platform()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("part", choices=("sink", "e2e", "all"))
    parser.add_argument("--recipients", type=int, default=100_000, help="sink: alerts of the update")
    parser.add_argument(
        "--batch-size", type=int, action="append", help="sink: batch sizes to run (repeatable; 1000 and 500)"
    )
    parser.add_argument(
        "--rate", type=float, action="append", help="sink: max requests/s to run (repeatable; 10000 and 10)"
    )
    parser.add_argument(
        "--latency", type=float, action="append", help="sink: fake's delay per request in s (repeatable; 0)"
    )
    parser.add_argument("--links", action="store_true", help="signed one-click unsubscribe links on")
    parser.add_argument("--matching", type=int, default=100_000, help="e2e: subscribers the update matches")
    parser.add_argument("--others", type=int, default=20_000, help="e2e: subscribers it does not match")
    parser.add_argument("--partitions", type=int, default=8, help="e2e: MOBILISE_PARTITIONS")
    parser.add_argument("--e2e-batch-size", type=int, default=1000, help="e2e: MOBILISE_DELIVERY_BATCH_SIZE")
    parser.add_argument(
        "--e2e-rate",
        type=float,
        default=None,
        help="e2e: MOBILISE_SENDGRID_MAX_REQUESTS_PER_SECOND (default: unset)",
    )
    parser.add_argument(
        "--e2e-concurrency", type=int, default=None, help="e2e: MOBILISE_SENDGRID_CONCURRENCY (default: 4)"
    )
    parser.add_argument("--e2e-latency", type=float, default=0.0, help="e2e: fake's delay per request in s")
    parser.add_argument("--timeout", type=float, default=1800.0, help="e2e: bound of the whole run, seconds")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--py-spy", type=Path, default=None, help="record with py-spy into DIR")
    parser.add_argument("--keep", action="store_true", help="e2e: keep the temporary directory (logs)")
    args = parser.parse_args()
    args.batch_size = args.batch_size or [1000, 500]
    args.rate = args.rate or [10_000.0, 10.0]
    args.latency = args.latency or [0.0]
    configure_logging("console", "warning")  # keep the clients' info lines out of stdout
    print(f"machine: {machine()}\n")
    if args.part in ("sink", "all"):
        print(run_sink(args), "\n", flush=True)
    if args.part in ("e2e", "all"):
        work = Path(tempfile.mkdtemp(prefix="mobilise-sg-bench-"))
        try:
            result = run_e2e(args, work)
            print(f"End to end, one worker: {args.matching:,} recipients\n\n{result.table()}")
            if args.py_spy:
                print(
                    "\npy-spy, the worker from t0 to the last 202:\n\n"
                    + profile_table(args.py_spy / "worker.txt")
                )
        finally:
            if args.keep:
                print(f"kept {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
