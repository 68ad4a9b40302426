"""SMTP sink benchmark: one case update's alerts through the SMTP sink to a mail server on loopback.

What is measured, and how:

1. An aiosmtpd server starts in a process of its own on 127.0.0.1 (plain SMTP, no login:
   a local relay, as ``MOBILISE_SMTP_SECURITY=none`` on port 25). It takes every message
   and counts them and their bytes; ``--latency`` makes it wait that long before it answers
   each RCPT and DATA, as a server farther away (or a slower one) would.
2. ``--alerts`` alerts of one case update (English, an action call, each person with their
   own name, id and address) are built in memory, then handed to :class:`SmtpSink` in
   batches of ``--batch-size``, one ``deliver`` after another, with the next batch prepared
   meanwhile as the delivery stage does; ``--connections`` is ``MOBILISE_SMTP_CONNECTIONS``.
3. Reported: messages per second from the first ``deliver`` to the last answer, and the CPU
   time of the benchmark's process (the sink: rendering, the SMTP client) per message. The
   server's CPU is its own process's and reported apart. Checked: every outcome accepted,
   and the server counted exactly ``--alerts`` messages.

No Kafka here: this is the sink alone, the part a worker's delivery stage waits on.

Run: ``python bench/smtp_bench.py [--alerts 5000] [--batch-size 1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import sys
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

from connectors.smtp import SmtpConfig, SmtpSink
from mobilise.broker import free_port
from schemas import Alert, CaseUpdate, MatchReason, alert_id_for


class BenchError(RuntimeError):
    """A check failed."""


class _Counter:
    def __init__(self, latency: float) -> None:
        self.messages = 0
        self.bytes = 0
        self.latency = latency

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        await asyncio.sleep(self.latency)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's name
        await asyncio.sleep(self.latency)
        self.messages += 1
        self.bytes += len(envelope.original_content or b"")
        return "250 2.0.0 Ok: queued"


def _serve(port: int, latency: float, conn: Connection) -> None:
    """The server's process: serve until told to stop, then report what it took."""
    from aiosmtpd.controller import Controller

    counter = _Counter(latency)
    controller = Controller(counter, hostname="127.0.0.1", port=port, server_hostname="mail.bench")
    controller.start()
    conn.send("ready")
    conn.recv()  # "stop"
    controller.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    conn.send((counter.messages, counter.bytes, usage.ru_utime + usage.ru_stime))


def make_alerts(count: int) -> list[Alert]:
    case = CaseUpdate.model_validate_json(  # strict models: from JSON, as they arrive
        json.dumps(
            {
                "case_id": "bd-bench",
                "status": "urgent_action",
                "title": {"en": "Union leaders fired at Dhaka Knitwear"},
                "summary": {
                    "en": "Twelve union leaders were dismissed after they asked for the legal minimum wage."
                },
                "country": "BD",
                "brands": ["H&M", "Inditex"],
                "factory": {"name": "Dhaka Knitwear", "city": "Gazipur"},
                "issues": ["union_busting", "wages"],
                "occurred_at": "2026-01-01T00:00:00Z",
                "published_by": "bench",
                "action_call": {
                    "kind": "email_brand",
                    "instructions": {"en": "Write to the CEO and ask for the leaders to be reinstated."},
                    "target": {"name": "H&M", "email": "ceo@example.com"},
                    "deadline": "2026-02-01T09:30:00Z",
                },
            }
        )
    )
    public = case.public()
    return [
        Alert(
            alert_id=alert_id_for(case.event_id, f"sub-{i}"),
            event_id=case.event_id,
            subscriber_id=f"sub-{i}",
            email=f"person{i}@example.org",
            name=f"Person {i}",
            language="en",
            case=public,
            reason=MatchReason(country="BD", interests=("union_busting",)),
            created_at=datetime(2026, 1, 2, tzinfo=UTC),
        )
        for i in range(count)
    ]


async def deliver_all(sink: SmtpSink, batches: list[list[Alert]]) -> int:
    accepted = 0
    for index, batch in enumerate(batches):
        if index + 1 < len(batches):
            await sink.prepare(batches[index + 1])  # as the delivery stage does
        accepted += sum(o.accepted for o in await sink.deliver(batch))
    return accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=1, help="MOBILISE_SMTP_CONNECTIONS")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds the server waits before answering RCPT and DATA"
    )
    args = parser.parse_args()

    port = free_port()
    ours, theirs = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(port, args.latency, theirs), daemon=True
    )
    server.start()
    try:
        if not ours.poll(60) or ours.recv() != "ready":
            raise BenchError("the SMTP server did not start within 60 s")
        alerts = make_alerts(args.alerts)
        batches = [alerts[i : i + args.batch_size] for i in range(0, len(alerts), args.batch_size)]
        config = SmtpConfig(
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_security="none",
            smtp_max_messages_per_connection=100_000,  # kept open: the cost of a message, not of TLS
            smtp_connections=args.connections,
            from_email="Network alerts <alerts@example.net>",
            unsubscribe_email="stop@example.net",
        )

        async def run() -> tuple[int, float, float]:
            sink = SmtpSink(config)
            await sink.setup()
            try:
                cpu, wall = time.process_time(), time.perf_counter()
                accepted = await deliver_all(sink, batches)
                return accepted, time.perf_counter() - wall, time.process_time() - cpu
            finally:
                await sink.close()

        accepted, wall, cpu = asyncio.run(run())
        ours.send("stop")
        if not ours.poll(60):
            raise BenchError("the SMTP server did not report within 60 s")
        messages, size, server_cpu = ours.recv()
    finally:
        server.join(10)
        if server.is_alive():
            server.terminate()
    if accepted != args.alerts or messages != args.alerts:
        raise BenchError(f"{accepted:,} accepted and {messages:,} received, expected {args.alerts:,}")
    print(f"| alerts (batches of {args.batch_size:,}) | {args.alerts:,} |")
    print(f"| server latency (RCPT and DATA), connections | {args.latency * 1000:g} ms, {args.connections} |")
    print(f"| **messages/s** (first deliver → last answer) | **{args.alerts / wall:,.0f}** |")
    print(f"| sink CPU per message (rendering, SMTP client) | {1e6 * cpu / args.alerts:,.0f} µs |")
    print(f"| server CPU per message (aiosmtpd, own process) | {1e6 * server_cpu / args.alerts:,.0f} µs |")
    print(f"| message size | {size / messages:,.0f} bytes |")
    print(f"| wall | {wall:.2f} s |")
    print(f"| python | {sys.version.split()[0]}, pid {os.getpid()} |")


if __name__ == "__main__":
    main()
