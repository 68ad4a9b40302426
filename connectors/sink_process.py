"""An email sink run in a process of its own, so that rendering and sending use another core.

A worker is one Python process, and one Python process computes on one core at a time:
with the sink in it, matching, reading alert batches, recording outcomes, rendering every
email and encoding every request share that core. :class:`SinkProcess` starts the sink in a
child process (``MOBILISE_SINK_PROCESS``) and hands it each batch over a pipe: the alerts
as one :class:`schemas.AlertBatch` JSON (the case written once), and back one tuple per
alert. The worker goes on reading and recording batches meanwhile, and the delivery stage
still hands over one batch at a time, so its never-twice guarantee is unchanged.

If the child dies, the batch it had is reported as a retryable failure (its outcome is
unknown: the same one-batch window as a worker dying), and the next batch starts a new one.
An interrupt (the worker stops) goes to the child's sink at once, over the same pipe, while
the batch is with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import threading
import traceback
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import structlog

from mobilise.errors import ConfigurationError, RetryableError
from mobilise.interpreter import tune_interpreter
from mobilise.logs import configure_logging
from schemas import Alert, AlertBatch
from schemas._base import trusted

from .base import Sink, SinkConfig, SinkOutcome
from .lookahead import alert_ids

__all__ = ["SinkProcess", "SinkProcessError", "in_a_process"]

log = structlog.get_logger(__name__)

_READY_TIMEOUT = 60.0
"""Seconds a child has to import the sink and run its ``setup``."""
_CLOSE_TIMEOUT = 10.0
"""Seconds a child has to close its sink before it is terminated."""

_PREPARED_DEPTH = 2
"""Prepared batches a child keeps: the next one and the one after (as the delivery stage reads them)."""

_Message = tuple[str, int | None, list[bytes] | None]
"""(``prepare``, number, batches), (``deliver``, number of a prepared batch or None, batches or
None), (``interrupt``, None, None) or (``close``, None, None)."""


class SinkProcessError(RuntimeError):
    """The sink failed in its process for a reason that is not temporary; the message says which."""


@dataclass(frozen=True)
class _Start:
    """What a child needs to build the sink: its class, its settings and the log settings."""

    sink_class: type[Sink]  # type: ignore[type-arg]  # any email sink
    config: SinkConfig
    log_format: str
    log_level: str


def _batches(alerts: Sequence[Alert]) -> list[bytes]:
    """``alerts`` as alert batch JSON, one per run of alerts that share their batch's fields."""
    return [
        batch.model_dump_json(exclude_defaults=True).encode("utf-8")
        for batch in AlertBatch.of(alerts, batch_id="sink-process")
    ]


def _alerts(batches: list[bytes]) -> list[Alert]:
    return [alert for value in batches for alert in AlertBatch.model_validate_json(value).alerts()]


def _child(start: _Start, conn: Connection) -> None:
    """The child process: build the sink, then deliver what comes until told to close."""
    configure_logging(start.log_format, start.log_level)
    tune_interpreter()
    asyncio.run(_serve(start, conn))


async def _serve(start: _Start, conn: Connection) -> None:
    sink = start.sink_class(start.config)
    try:
        await sink.setup()
    except Exception as exc:  # every failure goes back to the worker, which raises it
        conn.send(("failed", _describe(exc), isinstance(exc, ConfigurationError)))
        return
    conn.send(("ready",))
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    # A thread reads the pipe, so that the next batch's "prepare" is read (and its
    # rendering begun) while this one is being delivered.
    reader = threading.Thread(
        target=_read_all, args=(conn, loop, inbox), name="sink-process-reader", daemon=True
    )
    reader.start()
    # Prepared batches by the number the worker gave them: the batch after next may be
    # prepared before the next one is delivered.
    prepared: OrderedDict[int, list[Alert]] = OrderedDict()
    delivering: asyncio.Task[None] | None = None
    try:
        while (message := await inbox.get()) is not None and message[0] != "close":
            kind, number, batches = message
            if kind == "interrupt":
                await sink.interrupt()  # the batch being delivered returns what it sent so far
                continue
            if kind == "prepare":
                prepared[number] = _alerts(batches)
                while len(prepared) > _PREPARED_DEPTH:
                    prepared.popitem(last=False)
                await sink.prepare(prepared[number])
                continue
            alerts = _alerts(batches) if batches is not None else prepared.get(number)
            for earlier in [n for n in prepared if number is not None and n <= number]:
                del prepared[earlier]
            delivering = asyncio.create_task(_answer(conn, sink, alerts))
    finally:
        if delivering is not None:
            await delivering
        await sink.close()


def _read_all(conn: Connection, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue[Any]) -> None:
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the worker went away
            message = None
        loop.call_soon_threadsafe(inbox.put_nowait, message)
        if message is None or message[0] == "close":
            return


async def _answer(conn: Connection, sink: Sink, alerts: list[Alert] | None) -> None:  # type: ignore[type-arg]
    if alerts is None:
        answer: tuple[Any, ...] = ("retryable", "the sink process had no prepared batch to deliver", None)
    else:
        answer = await _deliver(sink, alerts)
    with contextlib.suppress(OSError):  # the worker went away meanwhile: the sink closes all the same
        conn.send(answer)


async def _deliver(sink: Sink, alerts: list[Alert]) -> tuple[Any, ...]:  # type: ignore[type-arg]
    try:
        outcomes = await sink.deliver(alerts)
    except RetryableError as exc:
        return ("retryable", str(exc), exc.retry_after)
    except Exception as exc:  # said to the worker, which raises it there
        return ("failed", _describe(exc), False)
    return (
        "outcomes",
        [
            (o.record_id, o.accepted, o.provider_message_id, o.duplicate, o.retryable, o.retry_after, o.error)
            for o in outcomes
        ],
    )


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip()


class SinkProcess(Sink[SinkConfig, Alert]):
    """Delivers through an email sink that runs in a child process (see the module).

    Made for a sink class by :func:`in_a_process`, which gives it that sink's name, so
    metrics, logs and delivery records say ``outbox`` or ``sendgrid`` as before. The
    guarantee is the inner sink's: the same batches reach it, one at a time.
    """

    accepts = Alert
    Config = SinkConfig
    sink_class: type[Sink]  # type: ignore[type-arg]  # any email sink

    def __init__(self, config: SinkConfig, *, log_format: str = "json", log_level: str = "info") -> None:
        super().__init__(config)
        self._start = _Start(self.sink_class, config, log_format, log_level)
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._sending = threading.Lock()  # a prepare and a deliver may be sent from two threads
        self._prepared: OrderedDict[tuple[str, ...], int] = OrderedDict()
        """The alert ids of the batches the child has prepared, with the number it knows each by."""
        self._numbers = itertools.count()
        self._children = 0
        self.prepared_taken = 0
        """Batches delivered as the child had prepared them, without being sent to it again."""

    @property
    def restarts(self) -> int:
        """Children started after the first, each after one had died."""
        return max(0, self._children - 1)

    @property
    def pid(self) -> int | None:
        """The child's process id, while one runs."""
        return self._process.pid if self._process is not None else None

    async def setup(self) -> None:
        """Start the child and wait until its sink is set up; raise what its setup raised."""
        if self._process is not None and self._process.is_alive():
            return
        context = multiprocessing.get_context("spawn")  # never fork a process with an event loop and threads
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_child, args=(self._start, theirs), name=f"mobilise-sink-{self.name}", daemon=True
        )
        process.start()
        self._children += 1
        theirs.close()
        self._process, self._conn = process, ours
        self._prepared.clear()
        answer = await asyncio.to_thread(_await_answer, ours, _READY_TIMEOUT)
        if answer is None or answer[0] != "ready":
            await self._stop(gracefully=False)
            why = answer[1] if answer is not None else "it did not start in time, or died while starting"
            if answer is not None and answer[2]:
                raise ConfigurationError(why)
            raise SinkProcessError(f"the {self.name} sink could not start in its process: {why}")
        log.info("sink_process.ready", sink=self.name, pid=process.pid)

    async def close(self) -> None:
        """Ask the child to close its sink and end; stop it if it does not."""
        await self._stop(gracefully=True)

    async def prepare(self, records: Sequence[Alert], *, encoded: bytes | None = None) -> None:
        """Send the next batch to the child, which begins rendering it (see :meth:`Sink.prepare`).

        ``encoded``, when given, is the alert batch JSON whose recipients are exactly
        ``records`` (the record they were read from): sent as it is, not encoded again.
        """
        conn = self._live_connection()
        if conn is None:
            return  # deliver() starts a new child, and hands it the batch then
        batches = [encoded] if encoded is not None else _batches(records)
        number = next(self._numbers)
        try:
            await asyncio.to_thread(self._send, conn, ("prepare", number, batches))
        except OSError:
            return  # the child died: deliver() finds out and starts another
        self._prepared[alert_ids(records)] = number
        while len(self._prepared) > _PREPARED_DEPTH:
            self._prepared.popitem(last=False)

    async def interrupt(self) -> None:
        """Interrupt the sink in the child too: the batch it is delivering comes back early."""
        await super().interrupt()
        conn = self._live_connection()
        if conn is None:
            return
        with contextlib.suppress(OSError):  # the child died: nothing of it to interrupt
            await asyncio.to_thread(self._send, conn, ("interrupt", None, None))

    async def deliver(self, records: Sequence[Alert]) -> Sequence[SinkOutcome]:
        """Hand the batch to the child and return its outcomes."""
        if not records:
            return []
        if self.interrupted:  # the worker is stopping: no child is started for it
            return [SinkOutcome.interrupted(alert.alert_id) for alert in records]
        if self._live_connection() is None:
            await self._stop(gracefully=False)
            await self.setup()
        assert self._conn is not None
        # A prepared batch is not sent again: the child has it, under its number.
        number = self._prepared.pop(alert_ids(records), None)
        if number is not None:
            # The child drops the batches prepared before this one (they will not come).
            for key in [k for k, n in self._prepared.items() if n < number]:
                del self._prepared[key]
        batches = None if number is not None else _batches(records)
        self.prepared_taken += batches is None
        try:
            answer = await asyncio.to_thread(self._exchange, self._conn, ("deliver", number, batches))
        except (EOFError, OSError) as exc:
            process = self._process
            if process is not None:
                # The pipe closes a moment before the child is reaped: wait for its exit code.
                await asyncio.to_thread(process.join, _CLOSE_TIMEOUT)
            exitcode = process.exitcode if process is not None else None
            await self._stop(gracefully=False)
            log.error("sink_process.died", sink=self.name, exitcode=exitcode, error=repr(exc))
            raise RetryableError(
                f"the {self.name} sink's process ended (exit code {exitcode}) with a batch: "
                "its outcome is unknown, so it is tried again"
            ) from exc
        if answer[0] == "retryable":
            raise RetryableError(answer[1], retry_after=answer[2])
        if answer[0] == "failed":
            raise SinkProcessError(f"the {self.name} sink failed in its process: {answer[1]}")
        return [
            trusted(
                SinkOutcome,
                record_id=record_id,
                accepted=accepted,
                provider_message_id=message_id,
                duplicate=duplicate,
                retryable=retryable,
                retry_after=retry_after,
                error=error,
            )
            for record_id, accepted, message_id, duplicate, retryable, retry_after, error in answer[1]
        ]

    def _live_connection(self) -> Connection | None:
        """The pipe to the child, while the child runs."""
        if self._conn is None or self._process is None or not self._process.is_alive():
            return None
        return self._conn

    def _send(self, conn: Connection, message: _Message) -> None:
        with self._sending:
            conn.send(message)

    def _exchange(self, conn: Connection, message: _Message) -> Any:
        # One deliver at a time (the delivery stage's lock): the next answer is this one's.
        self._send(conn, message)
        return conn.recv()

    async def _stop(self, *, gracefully: bool) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is None:
            return
        if gracefully and conn is not None and process.is_alive():
            with contextlib.suppress(OSError):
                self._send(conn, ("close", None, None))
            await asyncio.to_thread(process.join, _CLOSE_TIMEOUT)
        if process.is_alive():
            process.terminate()
            await asyncio.to_thread(process.join, _CLOSE_TIMEOUT)
        if conn is not None:
            conn.close()


def _await_answer(conn: Connection, timeout: float) -> Any:
    try:
        return conn.recv() if conn.poll(timeout) else None
    except EOFError:
        return None


def in_a_process(
    sink_class: type[Sink],  # type: ignore[type-arg]  # any email sink
    config: SinkConfig,
    *,
    log_format: str,
    log_level: str,
) -> SinkProcess:
    """A :class:`SinkProcess` that runs ``sink_class(config)`` in a child, under its name."""
    process_class = type(
        f"{sink_class.__name__}InAProcess",
        (SinkProcess,),
        {"name": sink_class.name, "sink_class": sink_class, "__module__": __name__},
    )
    made: SinkProcess = process_class(config, log_format=log_format, log_level=log_level)
    return made
