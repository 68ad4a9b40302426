"""SubscriberFileSource: imports the subscribers of a CSV or JSON Lines file onto ``subscriptions``.

For a network moving its list from a spreadsheet or another tool. The file is read whole,
each row becomes a :class:`~schemas.Subscription` (the framework validates it), and the
import returns when the file is done. Rows that cannot be imported are listed, with the
reason, in a CSV report next to the file, so that the operator can fix them and import again.

* CSV: a header row naming the columns (``email`` and any of ``name``, ``language``,
  ``countries``, ``regions``, ``worldwide``, ``interests``, ``brands``, ``statuses``,
  ``frequency``, ``confirmed``, ``created_at``), one person a row. A list cell separates its
  items with ``;`` (or with ``,`` when it has no ``;``, so ``Nike, Inc.; H&M`` is two brands);
  a blank cell means the default. An unknown column stops the import before anything is sent.
* JSON Lines: one object a line with the Subscription's field names (lists as arrays).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import structlog
from pydantic import Field, model_validator

from mobilise.inputs import InvalidInput
from schemas import Language, Subscription

from .base import ConnectorConfig
from .source import Checkpoint, Rejection, Source, SourceContext, SourceRecord, validate_record

__all__ = ["SubscriberFileConfig", "SubscriberFileError", "SubscriberFileSource"]

log = structlog.get_logger(__name__)

FileFormat = Literal["csv", "jsonl"]

_SUFFIXES: dict[str, FileFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_CSV_COLUMNS = (
    "email",
    "name",
    "language",
    "countries",
    "regions",
    "worldwide",
    "interests",
    "brands",
    "statuses",
    "frequency",
    "confirmed",
    "created_at",
)
_LIST_COLUMNS = frozenset({"countries", "regions", "interests", "brands", "statuses"})
_BOOLEAN_COLUMNS = frozenset({"worldwide", "confirmed"})
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
# A report cell starting with one of these is a formula to a spreadsheet (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class SubscriberFileError(InvalidInput):
    """The subscriber file as a whole cannot be imported (unreadable, unknown columns…).

    Nothing of it was emitted; the message names the file, what is wrong and the fix.
    """


class SubscriberFileConfig(ConnectorConfig):
    """Settings of the subscriber-file source."""

    path: Path
    """The file of subscribers: CSV with a header row, or JSON Lines."""
    format: FileFormat | None = None
    """``csv`` or ``jsonl``; left out, the file's suffix says (``.csv``; ``.jsonl`` or ``.ndjson``)."""
    confirmed: bool
    """Whether the people in the file already confirmed their subscription elsewhere (double opt-in).

    Required, because only confirmed people get alerts and the import cannot guess: say
    ``true`` only when every one of them confirmed their address with the tool the list
    comes from (mail to people who never asked for it is spam, and spam complaints get the
    network's mail refused); say ``false`` to import them without sending them anything
    until they are confirmed. A ``confirmed`` column (or field) overrides it row by row.
    """
    # A description, not a docstring: Language's own description would win over a docstring.
    default_language: Language = Field(
        default="en", description="Language (ISO 639-1 code) of the people whose row gives none."
    )
    batch_size: int = Field(default=500, ge=1)
    """Rows emitted (and checkpointed) together: an interrupted import resumes after the last batch."""
    report_path: Path | None = None
    """Where the rejected rows are listed (CSV: row, email, reason); default ``<path>.rejected.csv``."""
    progress: bool | None = None
    """Show a progress bar on stderr: left out, only when stderr is a terminal; true always; false never."""

    @model_validator(mode="after")
    def _check_format(self) -> SubscriberFileConfig:
        if self.format is None and self.path.suffix.lower() not in _SUFFIXES:
            raise ValueError(
                f"format: cannot tell the format of {str(self.path)!r} from its suffix; set format "
                "to csv or jsonl, or name the file .csv, .jsonl or .ndjson"
            )
        return self

    @property
    def file_format(self) -> FileFormat:
        """The format the file is read as."""
        return self.format or _SUFFIXES[self.path.suffix.lower()]

    @property
    def rejected_report(self) -> Path:
        """Where the report of rejected rows goes."""
        return self.report_path or self.path.with_name(self.path.name + ".rejected.csv")


@dataclass(frozen=True)
class _Row:
    """One person of the file, ready to emit (``value``) or rejected before that (``problem``)."""

    number: int
    """Row number (CSV, counting the header as row 1) or line number (JSON Lines)."""
    origin: str
    email: str
    """The address as written, for the report."""
    value: dict[str, Any]
    problem: str | None = None

    def record(self) -> SourceRecord:
        return SourceRecord(value=self.value, origin=self.origin)


@dataclass(frozen=True)
class _Defaults:
    language: str
    confirmed: bool
    created_at: str


@dataclass(frozen=True)
class _File:
    digest: str
    rows: list[_Row]


class SubscriberFileSource(Source[SubscriberFileConfig]):
    """Imports a file of subscribers onto ``subscriptions``, then returns.

    Delivery guarantee: at least once per row. Each batch is emitted with a checkpoint
    (the file's SHA-256 and the rows done), so a run of the same file resumes after the
    last batch safely on the topic, and a second run of a file fully imported emits
    nothing; a changed file (another digest) is imported whole again. A crash between a
    batch and its checkpoint emits that batch again, which changes nothing: records are
    upserts keyed by subscriber_id (derived from the address when the row gives none), and
    the same row always makes the same record.

    A row without ``created_at`` gets the Unix epoch: the same record on every import,
    and one that never outranks an unsubscribe or a bounce (a subscription counts over a
    suppression only when created after it). So importing a list again never re-subscribes
    someone who left; a row that should, gives its own, later, ``created_at``.

    Addresses are compared stripped and case-folded: the first row of an address wins
    (even when it is rejected), later ones are rejected as ``duplicate of row N``.

    Raises:
        SubscriberFileError: (from :meth:`run`) the file cannot be read, is not UTF-8, or
            its CSV header is wrong (unknown, unnamed or repeated columns, no ``email``).
            Nothing is emitted then.

    """

    name = "subscriber-file"
    produces = ("subscriptions",)
    Config = SubscriberFileConfig

    async def run(self, context: SourceContext) -> None:
        """Emit the file's rows after those a previous run of the same file emitted; write the report."""
        config = self.config
        loaded = await asyncio.to_thread(_load, config.path, config.file_format, config)
        rows, total = loaded.rows, len(loaded.rows)
        start = _resume_point(context.checkpoint, loaded.digest, total)
        if context.checkpoint and start == 0 and context.checkpoint.get("sha256") != loaded.digest:
            log.info("subscribers.file_changed", path=str(config.path), rows=total)
        rejected: dict[str, str] = {}
        accepted = 0
        # Rows a previous run emitted are not emitted again, but the report covers the
        # whole file: their verdicts come from the runtime's own validation.
        for row in rows[:start]:
            reason = row.problem or _validation_problem(row)
            if reason is None:
                accepted += 1
            else:
                rejected[row.origin] = reason
        progress = _Progress(total, config.progress, sys.stderr)
        progress.show(start)
        emitted, done = 0, start
        try:
            for begin in range(start, total, config.batch_size):
                if context.stopping.is_set():
                    break
                batch = rows[begin : begin + config.batch_size]
                for row in batch:
                    if row.problem is not None:
                        rejected[row.origin] = row.problem
                checkpoint: Checkpoint = {"sha256": loaded.digest, "rows": begin + len(batch)}
                report = await context.emit([r.record() for r in batch if r.problem is None], checkpoint)
                for rejection in report.rejected:
                    rejected[rejection.origin] = rejection.reason
                emitted += len(report.accepted)
                done = begin + len(batch)
                progress.show(done)
        finally:
            progress.close()
        accepted += emitted
        by_origin = {row.origin: row for row in rows}
        lines = sorted(
            ((by_origin[o].number, by_origin[o].email, reason) for o, reason in rejected.items()),
            key=lambda line: line[0],
        )
        finished = done == total
        if finished:
            # A stopped run leaves the report alone: the run that finishes the file writes it
            # whole (the rows done before are judged again), a partial one would mislead.
            await asyncio.to_thread(_write_report, config.rejected_report, lines)
        log.info(
            "subscribers.imported",
            accepted=accepted,
            rejected=len(lines),
            emitted=emitted,
            skipped=start,
            rows=done,
            total=total,
            path=str(config.path),
            finished=finished,
            report=str(config.rejected_report) if lines and finished else None,
        )


def _resume_point(checkpoint: Mapping[str, Any] | None, digest: str, total: int) -> int:
    """Rows already done according to ``checkpoint``: 0 unless it is about this very file."""
    if not checkpoint or checkpoint.get("sha256") != digest:
        return 0
    rows = checkpoint.get("rows")
    if isinstance(rows, int) and not isinstance(rows, bool) and 0 <= rows <= total:
        return rows
    return 0


# Older than any suppression, so an undated import row never undoes an unsubscribe.
_UNDATED = datetime(1970, 1, 1, tzinfo=UTC).isoformat()


def _validation_problem(row: _Row) -> str | None:
    result = validate_record(Subscription, row.record())
    return result.reason if isinstance(result, Rejection) else None


def _load(path: Path, file_format: FileFormat, config: SubscriberFileConfig) -> _File:
    try:
        with path.open("rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise SubscriberFileError(
            f"cannot read the subscriber file {path}: {exc.strerror}; check the path setting"
        ) from exc
    try:
        text = data.decode("utf-8-sig")  # -sig: spreadsheets put a byte-order mark first
    except UnicodeDecodeError as exc:
        raise SubscriberFileError(
            f"{path} is not UTF-8 text (byte {exc.start} is not); save it as UTF-8 "
            "(in a spreadsheet: CSV UTF-8)"
        ) from exc
    defaults = _Defaults(
        language=config.default_language,
        confirmed=config.confirmed,
        created_at=_UNDATED,
    )
    rows = _parse_csv(text, path, defaults) if file_format == "csv" else _parse_jsonl(text, defaults)
    return _File(digest=hashlib.sha256(data).hexdigest(), rows=_deduplicate(rows))


def _parse_csv(text: str, path: Path, defaults: _Defaults) -> list[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header_row = next(reader, None)
    if header_row is None:
        raise SubscriberFileError(
            f"{path} is empty; its first row must name the columns, e.g. email,countries,interests"
        )
    header = [name.strip().lower() for name in header_row]
    _check_header(header, path)
    rows = []
    # Numbered as a spreadsheet shows them: the header is row 1, a blank row counts.
    for number, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        origin = f"row {number}"
        problems = []
        if len(cells) > len(header):
            problems.append(f"the row has {len(cells)} cells but the header names {len(header)} columns")
        value: dict[str, Any] = {}
        for column, raw in zip(header, cells, strict=False):
            cell = raw.strip()
            if not cell:
                continue  # a blank cell: the default
            if column in _LIST_COLUMNS:
                items = _split(cell)
                if items:
                    value[column] = items
            elif column in _BOOLEAN_COLUMNS:
                flag = _BOOLEANS.get(cell.lower())
                if flag is None:
                    problems.append(f"{column}: {cell!r} is not one of true, false, yes, no, 1, 0")
                else:
                    value[column] = flag
            else:
                value[column] = cell
        email = value.get("email", "")
        rows.append(_Row(number, origin, email, _with_defaults(value, defaults), "; ".join(problems) or None))
    return rows


def _check_header(header: Sequence[str], path: Path) -> None:
    problems = []
    unknown = [name for name in header if name and name not in _CSV_COLUMNS]
    if unknown:
        problems.append(f"unknown column(s) {', '.join(repr(n) for n in unknown)}")
    unnamed = [str(i) for i, name in enumerate(header, start=1) if not name]
    if unnamed:
        problems.append(f"column(s) {', '.join(unnamed)} have no name")
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        problems.append(f"column(s) {', '.join(repr(n) for n in repeated)} appear more than once")
    if "email" not in header:
        problems.append("no 'email' column")
    if problems:
        raise SubscriberFileError(
            f"{path} was not imported: {'; '.join(problems)}. The columns are "
            f"{', '.join(_CSV_COLUMNS)} (email required); rename or remove the others"
        )


def _split(cell: str) -> list[str]:
    separator = ";" if ";" in cell else ","
    return [item.strip() for item in cell.split(separator) if item.strip()]


def _parse_jsonl(text: str, defaults: _Defaults) -> list[_Row]:
    rows = []
    # split("\n"), not splitlines(): U+2028 and friends may stand unescaped inside a JSON string.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        origin = f"line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append(_Row(number, origin, "", {}, f"not JSON: {exc.msg} at column {exc.colno}"))
            continue
        if not isinstance(item, dict):
            problem = f"expected a JSON object with the subscription's fields, not {type(item).__name__}"
            rows.append(_Row(number, origin, "", {}, problem))
            continue
        email = item.get("email")
        address = email.strip() if isinstance(email, str) else ""
        rows.append(_Row(number, origin, address, _with_defaults(item, defaults)))
    return rows


def _with_defaults(value: dict[str, Any], defaults: _Defaults) -> dict[str, Any]:
    for field, default in (
        ("language", defaults.language),
        ("confirmed", defaults.confirmed),
        ("created_at", defaults.created_at),
    ):
        if value.get(field) is None:
            value[field] = default
    return value


def _deduplicate(rows: list[_Row]) -> list[_Row]:
    first: dict[str, int] = {}
    unique = []
    for row in rows:
        key = row.email.casefold()
        if not key:
            unique.append(row)  # no address: the validation says so
            continue
        if key not in first:
            first[key] = row.number
            unique.append(row)
            continue
        kind = row.origin.split(" ", 1)[0]
        problem = "; ".join(p for p in (f"duplicate of {kind} {first[key]}", row.problem) if p)
        unique.append(_Row(row.number, row.origin, row.email, row.value, problem))
    return unique


def _write_report(path: Path, lines: Sequence[tuple[int, str, str]]) -> None:
    """Write the rejected rows to ``path``, or remove a report a previous run left there."""
    try:
        if not lines:
            path.unlink(missing_ok=True)
            return
        temporary = path.with_name(f".{path.name}.tmp")
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(("row", "email", "reason"))
            writer.writerows((number, _cell(email), reason) for number, email, reason in lines)
        # Replaced whole: a reader never sees half a report.
        os.replace(temporary, path)
    except OSError as exc:
        raise SubscriberFileError(
            f"cannot write the report of rejected rows to {path}: {exc.strerror}; set report_path "
            "to a writable place (the rows themselves were imported)"
        ) from exc


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


class _Progress:
    """A ``subscribers: done/total rows`` line on ``stream``, rewritten in place, when enabled."""

    def __init__(self, total: int, enabled: bool | None, stream: TextIO) -> None:
        self._total = total
        self._stream = stream
        self._enabled = stream.isatty() if enabled is None else enabled
        self._shown = False

    def show(self, done: int) -> None:
        if self._enabled:
            self._stream.write(f"\rsubscribers: {done}/{self._total} rows")
            self._stream.flush()
            self._shown = True

    def close(self) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()
