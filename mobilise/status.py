"""``mobilise status``: what the pipeline is doing, from the brokers' point of view.

Everything is read from Kafka (no worker needs to answer): topics and their offsets, the
consumer group's committed offsets and lag on the input topics, the group's members, the
dead letters and the last delivery per sink. A part the broker cannot provide (the
embedded Tansu broker does not report members' partitions, for instance) is reported as
not available, with the broker's reason, and the rest is still shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from kafka import KafkaAdminClient
from pydantic import BaseModel, ConfigDict, ValidationError

from schemas import DeliveryEvent
from streams.topics import TopicNames

from .dead_letters import load, shorten
from .replay import markers_topic
from .settings import Settings
from .snapshot import StoredRecord, TopicOffsets, admin_client, consumer, read_topic, topic_offsets

__all__ = [
    "DeadLetterSummary",
    "GroupStatus",
    "LatestDeadLetter",
    "Member",
    "PartitionLag",
    "SinkStatus",
    "StatusReport",
    "TopicStatus",
    "assigned_partitions",
    "collect_status",
    "format_status",
    "lag_of",
    "last_delivery_per_sink",
]

log = structlog.get_logger(__name__)

_LATEST_DEAD_LETTERS = 5
_COUNT_BY_READING = 50_000
"""Up to this many (by offsets), dead letters are read and counted one by one."""
_DELIVERY_TAIL = 200
"""Records read from the end of each partition of deliveries to find the last per sink."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class TopicStatus(_Model):
    """One topic: its partitions and their end offsets."""

    name: str
    role: str
    """What the topic is for, e.g. ``input`` or ``changelog``."""
    exists: bool
    partitions: int = 0
    end_offsets: dict[int, int] = {}
    """Partition → the offset the next record will get."""
    stored: int = 0
    """Records between the beginning and end offsets (an upper bound on a compacted topic)."""


class PartitionLag(_Model):
    """How far the consumer group is behind on one partition of an input topic."""

    topic: str
    partition: int
    end: int
    committed: int | None
    """The group's committed offset; None when it never committed on this partition."""
    lag: int
    """Records not processed yet: ``end - committed`` (from the beginning when never committed)."""


class Member(_Model):
    """A worker in the consumer group."""

    member_id: str
    client_id: str = ""
    host: str = ""
    partitions: list[str] | None = None
    """``topic[partition]`` assigned to it; None when the broker does not report assignments."""


class GroupStatus(_Model):
    """The workers' consumer group (``MOBILISE_APP_ID``)."""

    group_id: str
    lag: list[PartitionLag] | None = None
    """Per input partition; None when the broker cannot list the group's offsets."""
    lag_note: str | None = None
    state: str | None = None
    members: list[Member] | None = None
    """None when the broker cannot describe the group."""
    members_note: str | None = None


class LatestDeadLetter(_Model):
    """One recent dead letter, in short."""

    id: str
    at: datetime
    stage: str
    origin: str
    """``topic[partition]@offset`` of the original record."""
    reason: str


class DeadLetterSummary(_Model):
    """How many dead letters there are and the latest ones."""

    count: int
    """Dead letters on the topic."""
    exact: bool = True
    """False when ``count`` comes from offsets (a large topic): then it is approximate."""
    latest: list[LatestDeadLetter] = []
    replayed: int = 0
    """Dead letters recorded as replayed."""


class SinkStatus(_Model):
    """The last thing a sink reported on the deliveries topic."""

    sink: str
    at: datetime
    outcome: str
    alert_id: str
    last_accepted_at: datetime | None = None
    """When the sink last accepted an alert, among the records read."""


class StatusReport(_Model):
    """Everything ``mobilise status`` shows."""

    generated_at: datetime
    bootstrap_servers: str
    app_id: str
    topic_prefix: str
    topics: list[TopicStatus]
    group: GroupStatus
    dead_letters: DeadLetterSummary
    sinks: list[SinkStatus]
    sinks_note: str = ""


def lag_of(offsets: TopicOffsets, committed: Mapping[int, int]) -> list[PartitionLag]:
    """The lag of every partition of ``offsets.topic`` given the group's ``committed`` offsets."""
    lags = []
    for partition in offsets.partitions:
        end = offsets.end[partition]
        done = committed.get(partition)
        start = done if done is not None else offsets.beginning.get(partition, 0)
        lags.append(
            PartitionLag(
                topic=offsets.topic, partition=partition, end=end, committed=done, lag=max(0, end - start)
            )
        )
    return lags


def assigned_partitions(assignment: Any) -> list[str] | None:
    """``topic[partition]`` strings from a member assignment as kafka-python decodes it.

    kafka-python gives a ConsumerProtocolAssignment object, its ``to_dict()`` form, or
    the raw (possibly empty) bytes when it could not decode it; the last gives None.
    """
    if isinstance(assignment, dict):
        entries = assignment.get("assigned_partitions")
    else:
        entries = getattr(assignment, "assigned_partitions", None)
    if not entries:
        return None
    found: list[str] = []
    for entry in entries:
        if isinstance(entry, dict):
            topic, partitions = entry.get("topic"), entry.get("partitions")
        elif isinstance(entry, tuple | list) and len(entry) == 2:
            topic, partitions = entry
        else:
            topic, partitions = getattr(entry, "topic", None), getattr(entry, "partitions", None)
        found.extend(f"{topic}[{p}]" for p in partitions or ())
    return sorted(found)


def last_delivery_per_sink(records: Iterable[StoredRecord]) -> list[SinkStatus]:
    """The latest sink-side delivery record per sink (provider feedback is left out)."""
    last: dict[str, DeliveryEvent] = {}
    accepted: dict[str, datetime] = {}
    for record in records:
        if record.value is None:
            continue
        try:
            event = DeliveryEvent.model_validate_json(record.value)
        except ValidationError:
            continue
        if event.provider_event_id is not None:
            continue  # the provider's later report (opened, bounced…), not the sink's delivery
        if event.sink not in last or event.at >= last[event.sink].at:
            last[event.sink] = event
        if event.outcome == "accepted" and (event.sink not in accepted or event.at > accepted[event.sink]):
            accepted[event.sink] = event.at
    return [
        SinkStatus(
            sink=sink,
            at=event.at,
            outcome=event.outcome.value,
            alert_id=event.alert_id,
            last_accepted_at=accepted.get(sink),
        )
        for sink, event in sorted(last.items())
    ]


class _TolerantAdmin(KafkaAdminClient):  # type: ignore[misc]  # kafka-python is untyped
    """A KafkaAdminClient that ignores the authorized operations a broker returns unasked.

    Tansu fills DescribeGroups' ``authorized_operations`` with a bit kafka-python does not
    know (``ValueError: 15 is not a valid ACLOperation``); nothing here needs them.
    """

    def _process_acl_operations(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj.pop("authorized_operations", None)
        return obj


def _not_available(exc: Exception) -> str:
    return f"not available on this broker ({type(exc).__name__}: {shorten(str(exc), 120)})"


def _topics(names: TopicNames, app_id: str, existing: Iterable[str]) -> list[tuple[str, str]]:
    listed = [
        (names.case_updates, "input"),
        (names.subscriptions, "input"),
        (names.case_fanout, "input (internal)"),
        (names.alerts, "input (internal)"),
        (names.deliveries, "output"),
        (names.dead_letters, "output"),
        (markers_topic(names.prefix), "replays"),
    ]
    # The workers' own topics (table changelogs, the assignor's) are named after the app id.
    listed.extend((name, "worker state") for name in sorted(existing) if name.startswith(f"{app_id}-"))
    return listed


def collect_status(
    settings: Settings, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> StatusReport:
    """Read everything :class:`StatusReport` holds from the brokers of ``settings``.

    Raises:
        ConfigurationError: the brokers cannot be reached.

    """
    names = TopicNames(prefix=settings.topic_prefix)
    bootstrap = settings.bootstrap_servers
    inputs = [names.case_updates, names.subscriptions, names.case_fanout, names.alerts]
    with consumer(bootstrap) as reader:
        existing = set(reader.topics())
        offsets: dict[str, TopicOffsets] = {}
        topics = []
        for name, role in _topics(names, settings.app_id, existing):
            found = topic_offsets(reader, name) if name in existing else None
            if found is None:
                topics.append(TopicStatus(name=name, role=role, exists=False))
                continue
            offsets[name] = found
            topics.append(
                TopicStatus(
                    name=name,
                    role=role,
                    exists=True,
                    partitions=len(found.partitions),
                    end_offsets=found.end,
                    stored=found.stored,
                )
            )
        dead_offsets = offsets.get(names.dead_letters)
        # Counted by reading when that is cheap: offsets alone undercount on Tansu (see
        # TopicOffsets.end). Past the threshold, offsets give the count and the tail the latest.
        exact = dead_offsets is None or dead_offsets.stored <= _COUNT_BY_READING
        tail = None if exact else _LATEST_DEAD_LETTERS
        dead_records = read_topic(reader, names.dead_letters, tail=tail)
        dead = load(dead_records)
        markers = read_topic(reader, markers_topic(names.prefix))
        deliveries = read_topic(reader, names.deliveries, tail=_DELIVERY_TAIL)
    group = _group(settings, bootstrap, [offsets[name] for name in inputs if name in offsets])
    latest = sorted(dead.letters, key=lambda s: s.letter.at)[-_LATEST_DEAD_LETTERS:]
    return StatusReport(
        generated_at=clock(),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        app_id=settings.app_id,
        topic_prefix=settings.topic_prefix,
        topics=topics,
        group=group,
        dead_letters=DeadLetterSummary(
            count=len(dead_records) if exact else dead_offsets.stored if dead_offsets else 0,
            exact=exact,
            latest=[
                LatestDeadLetter(
                    id=s.id,
                    at=s.letter.at,
                    stage=s.letter.stage,
                    origin=f"{s.letter.topic}[{s.letter.partition}]@{s.letter.offset}",
                    reason=s.letter.reason,
                )
                for s in reversed(latest)
            ],
            replayed=len({r.key for r in markers if r.value is not None}),
        ),
        sinks=last_delivery_per_sink(deliveries),
        sinks_note=f"from the last {_DELIVERY_TAIL} records of each partition of {names.deliveries}",
    )


def _group(settings: Settings, bootstrap: Sequence[str], inputs: Sequence[TopicOffsets]) -> GroupStatus:
    group_id = settings.app_id
    lag: list[PartitionLag] | None = None
    lag_note = state = members_note = None
    members: list[Member] | None = None
    with admin_client(bootstrap, client_class=_TolerantAdmin) as admin:
        try:
            committed = admin.list_group_offsets({group_id: None}).get(group_id, {})
        except Exception as exc:  # an optional part: say what failed and show the rest
            lag_note = _not_available(exc)
            log.debug("status.offsets_unavailable", group_id=group_id, error=str(exc))
        else:
            lag = []
            for offsets in inputs:
                mine = {
                    tp.partition: int(m.offset) for tp, m in committed.items() if tp.topic == offsets.topic
                }
                lag.extend(lag_of(offsets, {p: o for p, o in mine.items() if o >= 0}))
        try:
            described = admin.describe_groups([group_id]).get(group_id, {})
        except Exception as exc:  # as above
            members_note = _not_available(exc)
            log.debug("status.group_unavailable", group_id=group_id, error=str(exc))
        else:
            state = described.get("group_state") or None
            members = [
                Member(
                    member_id=str(m.get("member_id", "")),
                    client_id=str(m.get("client_id") or ""),
                    host=str(m.get("client_host") or ""),
                    partitions=assigned_partitions(m.get("member_assignment")),
                )
                for m in described.get("members") or ()
            ]
            if members and all(m.partitions is None for m in members):
                members_note = "partitions per member: not available on this broker (it sends no assignments)"
    return GroupStatus(
        group_id=group_id, lag=lag, lag_note=lag_note, state=state, members=members, members_note=members_note
    )


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def format_status(report: StatusReport) -> str:
    """The report as text for a terminal."""
    prefix = report.topic_prefix
    w = max([36, *(len(t.name) for t in report.topics)])  # the name column
    lines = [
        f"mobilise status at {_when(report.generated_at)}",
        f"  KAFKA_BOOTSTRAP_SERVERS={report.bootstrap_servers}  MOBILISE_APP_ID={report.app_id}"
        + (f"  MOBILISE_TOPIC_PREFIX={prefix}" if prefix else ""),
        "",
        "Topics",
        f"  {'topic':<{w}} {'role':<17} {'partitions':>10} {'end offsets':>12}",
    ]
    for topic in report.topics:
        if topic.exists:
            ends = sum(topic.end_offsets.values())
            lines.append(f"  {topic.name:<{w}} {topic.role:<17} {topic.partitions:>10} {ends:>12}")
        else:
            hint = (
                "(created by the first replay)" if topic.role == "replays" else "(`mobilise topics create`)"
            )
            lines.append(f"  {topic.name:<{w}} {topic.role:<17} missing {hint}")
    group = report.group
    lines += ["", f"Consumer group {group.group_id}" + (f" ({group.state})" if group.state else "")]
    if group.lag is None:
        lines.append(f"  lag: {group.lag_note}")
    else:
        lines.append(f"  {'input topic':<{w}} {'committed':>10} {'end':>10} {'lag':>8}  behind")
        by_topic: dict[str, list[PartitionLag]] = {}
        for entry in group.lag:
            by_topic.setdefault(entry.topic, []).append(entry)
        for topic_name, entries in by_topic.items():
            committed = sum(e.committed or 0 for e in entries)
            never = sum(e.committed is None for e in entries)
            behind = " ".join(f"p{e.partition}={e.lag}" for e in entries if e.lag) or "-"
            note = f"  ({never} partition(s) never committed)" if never else ""
            lines.append(
                f"  {topic_name:<{w}} {committed:>10} {sum(e.end for e in entries):>10} "
                f"{sum(e.lag for e in entries):>8}  {behind}{note}"
            )
    if group.members is None:
        lines.append(f"  workers: {group.members_note}")
    else:
        lines.append(f"  workers: {len(group.members)}")
        for member in group.members:
            where = f" {member.client_id}@{member.host}" if member.client_id or member.host else ""
            parts = ", ".join(member.partitions) if member.partitions is not None else "-"
            lines.append(f"    {member.member_id}{where}: {parts}")
        if group.members_note:
            lines.append(f"  {group.members_note}")
    dead = report.dead_letters
    count = str(dead.count) if dead.exact else f"about {dead.count}"
    lines += ["", f"Dead letters: {count} ({dead.replayed} replayed)"]
    for letter in dead.latest:
        origin = letter.origin.removeprefix(prefix) if prefix else letter.origin
        lines.append(
            f"  {_when(letter.at)}  {letter.id}  {origin}  {letter.stage}  {shorten(letter.reason, 80)}"
        )
    if dead.count:
        lines.append("  (`mobilise dead-letters list` for all, `show ID` for one)")
    lines += ["", "Last delivery per sink"]
    if not report.sinks:
        lines.append("  none yet")
    for sink in report.sinks:
        lines.append(
            f"  {sink.sink:<10} {sink.outcome:<14} {_when(sink.at)}  alert {sink.alert_id}"
            f"  (last accepted {_when(sink.last_accepted_at)})"
        )
    return "\n".join(lines)
