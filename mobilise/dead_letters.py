"""The dead-letters topic as an operator sees it: read, select, find and describe dead letters.

A dead letter's **id** (``dl-`` and 12 hex digits) is derived from the position of the
original record (topic, partition, offset). It is therefore the same in every process
and on every run, and a record dead-lettered twice (a worker re-reading after a crash)
gives two dead letters with one id: replaying by id sends that record once. A dead
letter can also be named by its own position on the dead-letters topic,
``PARTITION:OFFSET``, or by its offset alone when that is unambiguous.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from schemas import DeadLetter
from schemas._base import stable_id

from .inputs import InvalidInput
from .snapshot import StoredRecord

__all__ = [
    "DeadLetterLog",
    "StoredDeadLetter",
    "UnreadableRecord",
    "dead_letter_id",
    "describe",
    "load",
    "matches",
    "render_bytes",
    "resolve",
    "select",
    "short_reference",
    "shorten",
    "summary_line",
]

_REASON_WIDTH = 100


def dead_letter_id(letter: DeadLetter) -> str:
    """The id of ``letter``: a hash of its original record's topic, partition and offset."""
    return "dl-" + stable_id(letter.topic, letter.partition, letter.offset, length=12)


@dataclass(frozen=True)
class StoredDeadLetter:
    """A dead letter and where it is stored on the dead-letters topic."""

    partition: int
    """Its partition on the dead-letters topic."""
    offset: int
    """Its offset on the dead-letters topic."""
    letter: DeadLetter

    @property
    def id(self) -> str:
        """The id of the original record's dead letter (see :func:`dead_letter_id`)."""
        return dead_letter_id(self.letter)

    @property
    def position(self) -> str:
        """``PARTITION:OFFSET`` on the dead-letters topic."""
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True)
class UnreadableRecord:
    """A record on the dead-letters topic that is not a DeadLetter (written by something else)."""

    partition: int
    offset: int
    error: str


@dataclass(frozen=True)
class DeadLetterLog:
    """Everything read from the dead-letters topic, oldest first."""

    letters: list[StoredDeadLetter] = field(default_factory=list)
    unreadable: list[UnreadableRecord] = field(default_factory=list)


def load(records: Iterable[StoredRecord]) -> DeadLetterLog:
    """Parse the records of the dead-letters topic; sort the dead letters by time, then position."""
    letters: list[StoredDeadLetter] = []
    unreadable: list[UnreadableRecord] = []
    for record in records:
        try:
            letter = DeadLetter.model_validate_json(record.value if record.value is not None else b"null")
        except ValidationError as exc:
            unreadable.append(UnreadableRecord(record.partition, record.offset, str(exc.errors()[0]["msg"])))
            continue
        letters.append(StoredDeadLetter(record.partition, record.offset, letter))
    letters.sort(key=lambda s: (s.letter.at, s.partition, s.offset))
    return DeadLetterLog(letters=letters, unreadable=unreadable)


def matches(
    letter: DeadLetter, *, topic: str | None = None, stage: str | None = None, prefix: str = ""
) -> bool:
    """Whether ``letter`` passes the filters.

    Args:
        letter: The dead letter.
        topic: Its original topic, with or without the pipeline's ``prefix``; None: any.
        stage: Its stage, exactly or as the part before ``:`` (``delivery`` matches
            ``delivery:outbox``); None: any.
        prefix: The pipeline's topic prefix (``MOBILISE_TOPIC_PREFIX``).

    """
    if topic is not None and letter.topic not in {topic, prefix + topic}:
        return False
    return stage is None or letter.stage == stage or letter.stage.startswith(stage + ":")


def select(
    letters: Sequence[StoredDeadLetter],
    *,
    topic: str | None = None,
    stage: str | None = None,
    prefix: str = "",
    limit: int | None = None,
) -> list[StoredDeadLetter]:
    """The latest ``limit`` dead letters passing the filters (see :func:`matches`), oldest first."""
    chosen = [s for s in letters if matches(s.letter, topic=topic, stage=stage, prefix=prefix)]
    if limit is not None:
        chosen = chosen[-limit:] if limit > 0 else []
    return chosen


def resolve(letters: Sequence[StoredDeadLetter], reference: str) -> list[StoredDeadLetter]:
    """The dead letters ``reference`` names: an id, ``PARTITION:OFFSET``, or an unambiguous offset.

    Several dead letters share an id when their record was dead-lettered more than once;
    all of them are returned.

    Raises:
        InvalidInput: nothing matches, or a bare offset exists in several partitions.

    """
    reference = reference.strip()
    if reference.startswith("dl-"):
        found = [s for s in letters if s.id == reference]
    elif ":" in reference:
        partition, _, offset = reference.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise InvalidInput(
                f"{reference!r} is not PARTITION:OFFSET (e.g. 3:120) or a dead-letter id (dl-…)"
            )
        found = [s for s in letters if (s.partition, s.offset) == (int(partition), int(offset))]
    elif reference.isdigit():
        found = [s for s in letters if s.offset == int(reference)]
        if len({s.partition for s in found}) > 1:
            places = ", ".join(s.position for s in found)
            raise InvalidInput(
                f"offset {reference} exists in several partitions of the dead-letters topic ({places}); "
                "give PARTITION:OFFSET or the dl- id"
            )
    else:
        raise InvalidInput(
            f"{reference!r} is neither a dead-letter id (dl-…), PARTITION:OFFSET nor an offset; "
            "`mobilise dead-letters list` shows them"
        )
    if not found:
        raise InvalidInput(f"no dead letter {reference}; `mobilise dead-letters list` shows what there is")
    return found


def shorten(text: str, width: int = _REASON_WIDTH) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _when(letter: DeadLetter) -> str:
    return letter.at.strftime("%Y-%m-%d %H:%M:%SZ")


def _origin(letter: DeadLetter, prefix: str = "") -> str:
    topic = letter.topic.removeprefix(prefix) if prefix else letter.topic
    return f"{topic}[{letter.partition}]@{letter.offset}"


def short_reference(stored: StoredDeadLetter, *, prefix: str = "") -> str:
    """``id (topic[partition]@offset)``: the dead letter's id and where its record was."""
    return f"{stored.id} ({_origin(stored.letter, prefix)})"


def summary_line(stored: StoredDeadLetter, *, prefix: str = "", note: str = "") -> str:
    """One line: when, id, original topic[partition]@offset, stage, reason (short), and ``note``."""
    letter = stored.letter
    parts = [_when(letter), stored.id, _origin(letter, prefix), letter.stage, shorten(letter.reason)]
    if note:
        parts.append(f"({note})")
    return "  ".join(parts)


def render_bytes(data: bytes | None) -> str:
    """Bytes for a person: ``(none)``, JSON pretty-printed, UTF-8 text as is, else ``base64:…``."""
    if data is None:
        return "(none)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode("ascii")
    if not all(c.isprintable() or c in "\n\r\t" for c in text):
        return "base64:" + base64.b64encode(data).decode("ascii")
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return text


def describe(stored: StoredDeadLetter, *, replay_notes: Sequence[str] = ()) -> str:
    """Every field of a dead letter, for ``mobilise dead-letters show``."""
    letter = stored.letter
    lines = [
        f"id            {stored.id}",
        f"stored at     dead-letters {stored.position}",
        f"when          {letter.at.isoformat()}",
        f"stage         {letter.stage}",
        f"original      {letter.topic} partition {letter.partition} offset {letter.offset}",
        f"reason        {letter.reason}",
    ]
    if letter.errors:
        lines.append("errors")
        lines.extend(f"  {error.loc or '(record)'}: {error.msg} [{error.type}]" for error in letter.errors)
    for note in replay_notes:
        lines.append(f"replay        {note}")
    lines.append("key           " + render_bytes(letter.key).replace("\n", "\n              "))
    lines.append("value")
    lines.extend("  " + line for line in render_bytes(letter.value).splitlines() or [""])
    return "\n".join(lines)
