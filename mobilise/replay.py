"""Replaying dead letters to their original topics after a fix, each record once.

Contract:

* A replay re-publishes the dead letter's original key and bytes, unchanged, to its
  original topic **and partition** (so a subscriber's records stay with their shard and
  their ``sent-alerts`` rows), in the original offset order, with the header
  ``mobilise-replay-of: <dead-letter id>`` so an operator can tell the copy from the original.
* Nothing already delivered is delivered again, because every stage is idempotent: the
  fan-out skips a case update whose ``event_id`` it already saw at another offset, the
  delivery stage skips an ``alert_id`` recorded in ``sent-alerts``, and subscriptions are
  upserts. A record that is still invalid is dead-lettered again, with its reason, as a
  new dead letter (whose id names the copy); nothing replays by itself, so there is no loop.
* Each replay is remembered in the compacted topic ``dead-letters-replayed`` (key: the
  dead-letter id), written after the broker acknowledged the copy. ``replay --all`` run
  twice therefore sends nothing the second time (``--force`` sends again, which the
  idempotent stages absorb). A crash between the copy and its marker can only lead to
  one more copy, absorbed the same way. Markers in a topic rather than a local file keep
  the memory with the cluster, whichever machine the operator runs the command on.
* Two things are never replayed, whatever the flags: a subscriptions record when a later
  record for the same subscriber exists (it would undo the later change, an erasure
  included), and an alert whose subscriber has since unsubscribed or been suppressed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import structlog
from kafka.errors import KafkaError
from pydantic import AwareDatetime, ValidationError

from schemas import Suppression, read_subscriptions_record
from schemas._base import Event
from streams.topics import TopicNames, TopicSpec

from .dead_letters import StoredDeadLetter, load, matches
from .errors import ConfigurationError, RetryableError
from .inputs import InvalidInput
from .settings import Settings
from .snapshot import StoredRecord, consumer, producer, read_topic

__all__ = [
    "REPLAYED_AT_HEADER",
    "REPLAY_HEADER",
    "ReplayMarker",
    "ReplayOutcome",
    "Selection",
    "Skipped",
    "SubscriberRecord",
    "check_subscribers",
    "latest_subscriber_records",
    "load_markers",
    "markers_topic",
    "replay_dead_letters",
    "replay_note",
    "select_for_replay",
    "subscriptions_to_read",
]

log = structlog.get_logger(__name__)

REPLAY_HEADER = "mobilise-replay-of"
"""Header on a replayed copy: the id of the dead letter it replays."""
REPLAYED_AT_HEADER = "mobilise-replayed-at"
"""Header on a replayed copy: when it was replayed (ISO 8601, UTC)."""

_SEND_TIMEOUT_SECONDS = 30.0


def markers_topic(prefix: str) -> str:
    """The compacted topic that remembers what was replayed: ``<prefix>dead-letters-replayed``."""
    return f"{prefix}dead-letters-replayed"


class ReplayMarker(Event):
    """That a dead letter's record was replayed (topic ``dead-letters-replayed``, key: the dead-letter id)."""

    schema_version: Literal[1] = 1
    """Version of this schema; a reader rejects versions it does not know."""
    dead_letter_id: str
    """The id of the dead letter replayed (``dl-…``)."""
    topic: str
    """Where the copy went: the original topic."""
    partition: int
    """The copy's partition: the original one."""
    offset: int
    """The copy's offset."""
    replayed_at: AwareDatetime
    """When the broker acknowledged the copy."""


def load_markers(records: Iterable[StoredRecord]) -> dict[str, ReplayMarker]:
    """The latest marker per dead-letter id; records that are not markers are ignored (and logged)."""
    markers: dict[str, ReplayMarker] = {}
    for record in records:
        if record.value is None:
            continue
        try:
            marker = ReplayMarker.model_validate_json(record.value)
        except ValidationError:
            log.warning("replay.marker_unreadable", partition=record.partition, offset=record.offset)
            continue
        markers[marker.dead_letter_id] = marker
    return markers


def replay_note(stored: StoredDeadLetter, markers: Mapping[str, ReplayMarker]) -> list[str]:
    """What is known about ``stored`` and replays: replayed already, and/or itself from a replayed copy."""
    notes = []
    marker = markers.get(stored.id)
    if marker is not None:
        notes.append(
            f"replayed {marker.replayed_at.strftime('%Y-%m-%d %H:%M:%SZ')} as "
            f"{marker.topic}[{marker.partition}]@{marker.offset}"
        )
    letter = stored.letter
    for other in markers.values():
        if (other.topic, other.partition, other.offset) == (letter.topic, letter.partition, letter.offset):
            notes.append(f"failed again after the replay of {other.dead_letter_id}")
    return notes


@dataclass(frozen=True)
class Skipped:
    """A dead letter that was selected but is not sent, and why."""

    stored: StoredDeadLetter
    reason: str


@dataclass(frozen=True)
class Selection:
    """The dead letters to send, in the order to send them, and those left out."""

    send: list[StoredDeadLetter] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def select_for_replay(
    letters: Sequence[StoredDeadLetter],
    markers: Mapping[str, ReplayMarker],
    *,
    ids: Collection[str] = (),
    topic: str | None = None,
    stage: str | None = None,
    prefix: str = "",
    force: bool = False,
) -> Selection:
    """Choose what to replay: ``ids`` (or every dead letter when empty) passing the filters.

    Each original record is sent once even when it was dead-lettered several times, and
    not at all when a marker says it was replayed already (unless ``force``). The result
    is in original (topic, partition, offset) order, so that a key's records keep their order.

    Raises:
        InvalidInput: an id in ``ids`` names no dead letter.

    """
    known = {s.id for s in letters}
    unknown = sorted(set(ids) - known)
    if unknown:
        raise InvalidInput(
            f"no dead letter with id {', '.join(unknown)}; `mobilise dead-letters list` shows the ids"
        )
    wanted = set(ids)
    chosen = [
        s
        for s in letters
        if (not wanted or s.id in wanted) and matches(s.letter, topic=topic, stage=stage, prefix=prefix)
    ]
    send: list[StoredDeadLetter] = []
    skipped: list[Skipped] = []
    first: dict[str, StoredDeadLetter] = {}
    for stored in chosen:
        if stored.id in first:
            skipped.append(Skipped(stored, f"same record as dead letter {first[stored.id].position}"))
            continue
        first[stored.id] = stored
        marker = markers.get(stored.id)
        if marker is not None and not force:
            when = marker.replayed_at.strftime("%Y-%m-%d %H:%M:%SZ")
            skipped.append(Skipped(stored, f"already replayed {when} (--force to send it again)"))
            continue
        send.append(stored)
    send.sort(key=lambda s: (s.letter.topic, s.letter.partition, s.letter.offset))
    return Selection(send=send, skipped=skipped)


@dataclass(frozen=True)
class SubscriberRecord:
    """The latest record that changed a subscriber's state on the subscriptions topic."""

    partition: int
    offset: int
    kind: Literal["subscription", "suppression", "tombstone"]


def subscriptions_to_read(letters: Iterable[StoredDeadLetter], names: TopicNames) -> dict[int, int]:
    """Partition → first offset of the subscriptions topic that :func:`check_subscribers` needs.

    A subscriptions record needs what came after it; an alert needs its subscriber's
    whole history (alerts are co-partitioned with subscriptions).
    """
    start: dict[int, int] = {}
    for stored in letters:
        letter = stored.letter
        if letter.topic == names.subscriptions:
            offset = letter.offset + 1
        elif letter.topic == names.alerts:
            offset = 0
        else:
            continue
        start[letter.partition] = min(offset, start.get(letter.partition, offset))
    return start


def latest_subscriber_records(records: Iterable[StoredRecord]) -> dict[str, SubscriberRecord]:
    """Subscriber id → the last record that changed their state, as a worker applies them.

    A tombstone with a key, or a valid Subscription or Suppression keyed by its own
    subscriber id, changes state; anything else was dead-lettered by the worker and
    changed nothing. ``records`` must be in offset order within each partition.
    """
    latest: dict[str, SubscriberRecord] = {}
    for record in records:
        key = record.key.decode("utf-8", "replace") if record.key else None
        if not key:
            continue
        if record.value is None:
            latest[key] = SubscriberRecord(record.partition, record.offset, "tombstone")
            continue
        try:
            parsed = read_subscriptions_record(record.value)
        except ValidationError:
            continue
        if parsed.subscriber_id != key:
            continue
        kind: Literal["subscription", "suppression"] = (
            "suppression" if isinstance(parsed, Suppression) else "subscription"
        )
        latest[key] = SubscriberRecord(record.partition, record.offset, kind)
    return latest


def check_subscribers(
    selection: Selection, subscribers: Mapping[str, SubscriberRecord], names: TopicNames
) -> Selection:
    """Leave out what would undo a later subscriptions change or mail someone who left.

    ``subscribers`` comes from :func:`latest_subscriber_records` over (at least) the
    offsets :func:`subscriptions_to_read` asked for.
    """
    send: list[StoredDeadLetter] = []
    skipped = list(selection.skipped)
    for stored in selection.send:
        letter = stored.letter
        subscriber = letter.key.decode("utf-8", "replace") if letter.key else ""
        latest = subscribers.get(subscriber)
        if letter.topic == names.subscriptions and latest is not None and latest.offset > letter.offset:
            skipped.append(
                Skipped(
                    stored,
                    f"superseded by a later record for subscriber {subscriber} at "
                    f"{letter.topic}[{latest.partition}]@{latest.offset}; replaying would undo it",
                )
            )
        elif letter.topic == names.alerts and (latest is None or latest.kind != "subscription"):
            state = "erased" if latest is None or latest.kind == "tombstone" else "suppressed"
            skipped.append(
                Skipped(stored, f"subscriber {subscriber} has been {state} since; the alert is not sent")
            )
        else:
            send.append(stored)
    return Selection(send=send, skipped=skipped)


@dataclass(frozen=True)
class ReplayOutcome:
    """What a replay did (or, for a dry run, would do)."""

    replayed: list[tuple[StoredDeadLetter, ReplayMarker]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    would_send: list[StoredDeadLetter] = field(default_factory=list)
    """Filled on a dry run instead of ``replayed``."""


def replay_dead_letters(
    settings: Settings,
    *,
    ids: Collection[str] = (),
    topic: str | None = None,
    stage: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ReplayOutcome:
    """Replay the selected dead letters (every one when ``ids`` is empty) of ``settings``' pipeline.

    Raises:
        ConfigurationError: the brokers cannot be reached, or an original topic is gone.
        InvalidInput: an id names no dead letter.
        RetryableError: the broker did not acknowledge every copy (those it did are marked).

    """
    names = TopicNames(prefix=settings.topic_prefix)
    markers_name = markers_topic(settings.topic_prefix)
    bootstrap = settings.bootstrap_servers
    with consumer(bootstrap) as reader:
        letters = load(read_topic(reader, names.dead_letters)).letters
        markers = load_markers(read_topic(reader, markers_name))
        selection = select_for_replay(
            letters, markers, ids=ids, topic=topic, stage=stage, prefix=settings.topic_prefix, force=force
        )
        needed = subscriptions_to_read(selection.send, names)
        if needed:
            history = read_topic(reader, names.subscriptions, start=needed)
            selection = check_subscribers(selection, latest_subscriber_records(history), names)
        for name in sorted({s.letter.topic for s in selection.send}):
            partitions = reader.partitions_for_topic(name) or set()
            missing = sorted(
                {s.letter.partition for s in selection.send if s.letter.topic == name} - partitions
            )
            if missing:
                raise ConfigurationError(
                    f"cannot replay to {name}: partition(s) {missing} do not exist; the dead letters came "
                    "from a topic that has been deleted or recreated. Run `mobilise topics create` (with the "
                    "MOBILISE_TOPIC_PREFIX and MOBILISE_PARTITIONS of the pipeline that wrote them) first"
                )
    if dry_run or not selection.send:
        return ReplayOutcome(skipped=selection.skipped, would_send=selection.send if dry_run else [])
    _ensure_markers_topic(bootstrap, markers_name, settings.replication_factor)
    replayed = _send(bootstrap, markers_name, selection.send, clock)
    log.info(
        "dead_letters.replayed",
        replayed=len(replayed),
        skipped=len(selection.skipped),
        topics=dict(Counter(marker.topic for _, marker in replayed)),
        markers_topic=markers_name,
    )
    return ReplayOutcome(replayed=replayed, skipped=selection.skipped)


def _ensure_markers_topic(bootstrap: Sequence[str], name: str, replication_factor: int) -> None:
    from streams.admin import create_topics

    with consumer(bootstrap) as probe:
        if probe.partitions_for_topic(name):
            return
    # One partition: markers are few, and one partition keeps "the latest per id" simple.
    spec = TopicSpec(name=name, partitions=1, configs={"cleanup.policy": "compact"})
    create_topics(list(bootstrap), [spec], replication_factor)


def _send(
    bootstrap: Sequence[str],
    markers_name: str,
    letters: Sequence[StoredDeadLetter],
    clock: Callable[[], datetime],
) -> list[tuple[StoredDeadLetter, ReplayMarker]]:
    replayed: list[tuple[StoredDeadLetter, ReplayMarker]] = []
    failures: list[str] = []
    with producer(bootstrap) as client:
        futures = []
        for stored in letters:
            letter = stored.letter
            headers = [
                (REPLAY_HEADER, stored.id.encode("ascii")),
                (REPLAYED_AT_HEADER, clock().isoformat().encode("ascii")),
            ]
            futures.append(
                client.send(
                    letter.topic,
                    key=letter.key,
                    value=letter.value,
                    partition=letter.partition,
                    headers=headers,
                )
            )
        for stored, future in zip(letters, futures, strict=True):
            try:
                metadata = future.get(timeout=_SEND_TIMEOUT_SECONDS)
            except KafkaError as exc:
                failures.append(f"{stored.id}: {exc}")
                continue
            marker = ReplayMarker(
                dead_letter_id=stored.id,
                topic=metadata.topic,
                partition=metadata.partition,
                offset=metadata.offset,
                replayed_at=clock(),
            )
            replayed.append((stored, marker))
            log.debug(
                "dead_letter.replayed", dead_letter_id=stored.id, topic=marker.topic, offset=marker.offset
            )
        marker_futures = [
            client.send(
                markers_name, key=m.dead_letter_id.encode("ascii"), value=m.model_dump_json().encode()
            )
            for _, m in replayed
        ]
        try:
            for future in marker_futures:
                future.get(timeout=_SEND_TIMEOUT_SECONDS)
        except KafkaError as exc:
            failures.append(f"recording the replays in {markers_name}: {exc}")
    if failures:
        raise RetryableError(
            f"replayed {len(replayed)} of {len(letters)}; the broker did not acknowledge: "
            + "; ".join(failures[:5])
            + ". Run the same command again: what was sent is recorded or absorbed by the idempotent stages"
        )
    return replayed
