"""The ``mobilise`` command."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import structlog
from pydantic import ValidationError

from schemas import CaseStatus, Region, Subscription, subscriber_id_for, wave_id_for
from schemas.export import export_json_schemas

from .errors import MobiliseError
from .inputs import InvalidInput, read_case_updates
from .logs import configure_logging
from .settings import Settings, load_settings

if TYPE_CHECKING:
    from .web.tokens import TokenRegistry

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])


def _friendly(fn: F) -> F:
    """Turn our errors into one clear line on stderr and a non-zero exit."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InvalidInput as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except MobiliseError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _settings(**overrides: Any) -> Settings:
    settings = load_settings(**overrides)
    configure_logging(settings.log_format, settings.log_level)
    return settings


@click.group()
@click.version_option(package_name="mobilise")
def main() -> None:
    """Case updates in, alerts to every matching activist out, through Kafka.

    Configuration comes from environment variables (see the README): KAFKA_BOOTSTRAP_SERVERS,
    MOBILISE_PARTITIONS, MOBILISE_SINK, MOBILISE_OUTBOX_DIR, ...
    """


@main.command()
@_friendly
def worker() -> None:
    """Run a worker against KAFKA_BOOTSTRAP_SERVERS (production)."""
    from streams.worker import run_worker

    run_worker(_settings())


@main.command("web")
@click.option("--host", default=None, help="Interface to listen on (default: MOBILISE_WEB_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default: MOBILISE_WEB_PORT, 8080).")
@_friendly
def web_command(host: str | None, port: int | None) -> None:
    """Serve the activists' pages, the coordinators' API and console, SendGrid's webhook, health.

    The activists' pages: /subscribe (with double opt-in), then /confirm, /preferences,
    /my-data and /unsubscribe, reached by the signed links of the emails. The coordinators'
    JSON API under /api/v1 (its OpenAPI document at /api/v1/openapi.json) and their console
    under /console. SendGrid's event webhook at /webhooks/sendgrid. Health at /healthz and
    /readyz.
    """
    from .web import run_web

    settings = _settings()
    run_web(settings, host=host or settings.web_host, port=settings.web_port if port is None else port)


@main.group()
def topics() -> None:
    """Manage the pipeline's topics."""


@topics.command("create")
@_friendly
def topics_create() -> None:
    """Create every topic that does not exist yet (safe to run again)."""
    from streams.admin import create_topics
    from streams.topics import TopicNames, topic_specs

    settings = _settings()
    created = create_topics(
        settings.bootstrap_servers,
        topic_specs(TopicNames(prefix=settings.topic_prefix), settings.partitions),
        settings.replication_factor,
    )
    click.echo(f"created {len(created)} topic(s): {', '.join(created) or 'all existed already'}")


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@_friendly
def publish(file: Path) -> None:
    """Validate the case update(s) in FILE (JSON or YAML) and publish them.

    Nothing is published unless every update in the file is valid.
    """
    from streams.admin import publish as send
    from streams.topics import TopicNames

    settings = _settings()
    updates = read_case_updates(file)
    send(
        settings.bootstrap_servers,
        TopicNames(prefix=settings.topic_prefix).case_updates,
        [(u.case_id, u.model_dump_json().encode("utf-8")) for u in updates],
    )
    for update in updates:
        wave = update.action_call.wave if update.action_call is not None else None
        held = f"\t{wave_id_for(update.case_id, wave)}" if wave is not None else ""
        click.echo(f"{update.event_id}\t{update.case_id}\t{update.status.value}{held}")


@main.command()
@click.option("--email", required=True, help="Where alerts go.")
@click.option("--name", default=None, help="How to greet the person.")
@click.option("--language", default="en", show_default=True, help="Language code for alerts.")
@click.option("--country", "countries", multiple=True, help="ISO country code to follow (repeatable).")
@click.option(
    "--region",
    "regions",
    multiple=True,
    type=click.Choice([r.value for r in Region]),
    help="UN M49 region (repeatable).",
)
@click.option("--worldwide", is_flag=True, help="Follow cases everywhere.")
@click.option("--interest", "interests", multiple=True, help="Interest to follow, e.g. wages (repeatable).")
@click.option("--brand", "brands", multiple=True, help="Brand to follow (repeatable).")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in CaseStatus]),
    help="Only these statuses (repeatable; default all).",
)
@click.option(
    "--frequency",
    type=click.Choice(["immediate", "daily", "weekly"]),
    default="immediate",
    show_default=True,
    help="Every alert at once, or a daily or weekly digest at the person's local morning.",
)
@click.option("--home-country", default=None, help="Where they live (ISO code): their variant, their zone.")
@click.option("--time-zone", default=None, help="IANA time zone, e.g. Asia/Dhaka (default: their country's).")
@click.option(
    "--unconfirmed", is_flag=True, help="Record the subscription as not yet confirmed (it gets no alerts)."
)
@_friendly
def subscribe(
    email: str,
    name: str | None,
    language: str,
    countries: tuple[str, ...],
    regions: tuple[str, ...],
    worldwide: bool,
    interests: tuple[str, ...],
    brands: tuple[str, ...],
    statuses: tuple[str, ...],
    frequency: str,
    home_country: str | None,
    time_zone: str | None,
    unconfirmed: bool,
) -> None:
    """Subscribe a person (an operator's command: they are confirmed unless --unconfirmed)."""
    from streams.admin import publish as send
    from streams.topics import TopicNames

    settings = _settings()
    fields: dict[str, Any] = {
        "email": email,
        "name": name,
        "language": language,
        "countries": countries,
        "regions": regions,
        "worldwide": worldwide,
        "interests": interests,
        "brands": brands,
        "frequency": frequency,
        "home_country": home_country,
        "time_zone": time_zone,
        "confirmed": not unconfirmed,
        "created_at": datetime.now(UTC).isoformat(),
    }
    if statuses:
        fields["statuses"] = statuses
    try:
        subscription = Subscription.model_validate_json(json.dumps(fields))
    except ValidationError as exc:
        raise InvalidInput(_describe(exc)) from exc
    send(
        settings.bootstrap_servers,
        TopicNames(prefix=settings.topic_prefix).subscriptions,
        [(subscription.subscriber_id, subscription.model_dump_json().encode("utf-8"))],
    )
    click.echo(subscription.subscriber_id)


@main.command()
@click.option("--email", default=None, help="The address to unsubscribe.")
@click.option("--subscriber-id", default=None, help="Or the subscriber id.")
@_friendly
def unsubscribe(email: str | None, subscriber_id: str | None) -> None:
    """Unsubscribe a person and erase their data (a tombstone on subscriptions)."""
    from streams.admin import publish as send
    from streams.topics import TopicNames

    if bool(email) == bool(subscriber_id):
        raise InvalidInput("give exactly one of --email or --subscriber-id")
    settings = _settings()
    target = subscriber_id or subscriber_id_for(email or "")
    send(settings.bootstrap_servers, TopicNames(prefix=settings.topic_prefix).subscriptions, [(target, None)])
    click.echo(target)


@main.group()
def waves() -> None:
    """Scheduled waves of action calls."""


@waves.command("cancel")
@click.argument("wave_id")
@click.option("--case", "case_id", required=True, help="The case whose update carried the wave.")
@click.option("--by", "cancelled_by", default=None, help="Who calls it off (default: the login name).")
@_friendly
def waves_cancel(wave_id: str, case_id: str, cancelled_by: str | None) -> None:
    """Call off the wave WAVE_ID: its alerts still held are never sent.

    One record goes to every partition of wave-cancellations, so that each worker learns
    it for the alerts it holds. Alerts already released stay sent.
    """
    import asyncio

    from streams.topics import TopicNames

    from .kafka_security import kafka_security
    from .wave_cancellation import WaveCancelled, cancel_wave
    from .web.publisher import KafkaPublisher

    settings = _settings()

    async def cancel() -> WaveCancelled:
        publisher = KafkaPublisher(settings.bootstrap_servers, options=kafka_security().client_options())
        try:
            return await cancel_wave(
                publisher,
                TopicNames(prefix=settings.topic_prefix),
                wave_id=wave_id,
                case_id=case_id,
                cancelled_by=cancelled_by or os.environ.get("USER") or "cli",
                at=datetime.now(UTC),
            )
        finally:
            await publisher.close()

    try:
        copies = asyncio.run(cancel()).partitions
    except ValidationError as exc:
        raise InvalidInput(_describe(exc)) from exc
    click.echo(f"{wave_id} cancelled ({copies} partitions)")


@main.group()
def schemas() -> None:
    """The event schemas."""


@schemas.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def schemas_export(directory: Path) -> None:
    """Write a JSON Schema file per event model into DIRECTORY."""
    for path in export_json_schemas(directory):
        click.echo(str(path))


@main.group()
def tokens() -> None:
    """API tokens for the coordinators' JSON API and console (stored hashed on the api-tokens topic)."""


@tokens.command("create")
@click.option("--name", required=True, help="Who will hold it; their case updates carry it as published_by.")
@click.option(
    "--role",
    type=click.Choice(["coordinator", "admin"]),
    default="coordinator",
    show_default=True,
    help="coordinator: publish and follow cases; admin: also manage tokens.",
)
@_friendly
def tokens_create(name: str, role: str) -> None:
    """Make a token and print it, once: only its hash is stored, so it cannot be shown again."""
    from schemas import TokenRole
    from streams.admin import publish as send
    from streams.topics import TopicNames

    from .web.tokens import issue_token

    settings = _settings()
    try:
        issued = issue_token(name, TokenRole(role), now=datetime.now(UTC))
    except ValidationError as exc:
        raise InvalidInput(_describe(exc)) from exc
    record = issued.record
    send(
        settings.bootstrap_servers,
        TopicNames(prefix=settings.topic_prefix).api_tokens,
        [(record.token_id, record.model_dump_json().encode("utf-8"))],
    )
    click.echo(issued.token)
    click.echo(
        f"token {record.token_id} ({record.role.value}) for {record.name!r}: give it to its holder now, "
        "it is not shown again",
        err=True,
    )


def _read_tokens(settings: Settings) -> TokenRegistry:
    from streams.topics import TopicNames

    from .snapshot import consumer, read_topic
    from .web.tokens import TokenRegistry

    registry = TokenRegistry()
    with consumer(settings.bootstrap_servers) as reader:
        for record in read_topic(reader, TopicNames(prefix=settings.topic_prefix).api_tokens):
            registry.fold(record)
    return registry


@tokens.command("list")
@_friendly
def tokens_list() -> None:
    """One line per token, oldest first: id, role, active or when revoked, created, name."""
    for token in _read_tokens(_settings()).all():
        state = f"revoked {token.revoked_at.isoformat()}" if token.revoked_at else "active"
        click.echo(
            f"{token.token_id}\t{token.role.value}\t{state}\t{token.created_at.isoformat()}\t{token.name}"
        )


@tokens.command("revoke")
@click.argument("token_id")
@_friendly
def tokens_revoke(token_id: str) -> None:
    """Revoke TOKEN_ID: it stops working as soon as each web process has read the revocation."""
    from streams.admin import publish as send
    from streams.topics import TopicNames

    settings = _settings()
    known = _read_tokens(settings).get(token_id)
    if known is None:
        raise InvalidInput(f"no token {token_id!r}; `mobilise tokens list` shows the token ids")
    if known.revoked_at is not None:
        click.echo(f"{token_id} was already revoked at {known.revoked_at.isoformat()}")
        return
    revoked = known.model_copy(update={"revoked_at": datetime.now(UTC)})
    send(
        settings.bootstrap_servers,
        TopicNames(prefix=settings.topic_prefix).api_tokens,
        [(token_id, revoked.model_dump_json().encode("utf-8"))],
    )
    click.echo(f"{token_id} revoked")


@main.command()
@click.option(
    "--demo", is_flag=True, help="Publish a few subscriptions and case updates to see alerts appear."
)
@click.option(
    "--port", type=int, default=None, help="Broker port (default: 9092 if free, else any free port)."
)
@click.option(
    "--web-port", type=int, default=None, help="Web port (default: 8080 if free, else any free port)."
)
@click.option(
    "--connectors",
    "connectors_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A connectors file whose connectors run in the worker too.",
)
@_friendly
def dev(demo: bool, port: int | None, web_port: int | None, connectors_file: Path | None) -> None:
    """Run everything locally: embedded broker, topics, web process, worker with the outbox sink.

    The emails' unsubscribe links point at the local web process, signed with a key kept
    in the data directory (so links in earlier emails keep working after a restart).
    """
    from .broker import EmbeddedBroker, free_port, port_is_free
    from .web import BackgroundWebServer

    chosen = port or (9092 if port_is_free(9092) else free_port())
    web_chosen = web_port or (8080 if port_is_free(8080) else free_port())
    os.environ.setdefault("MOBILISE_LOG_FORMAT", "console")
    if connectors_file is not None:
        from connectors.declarations import load_connectors

        load_connectors(connectors_file)  # a wrong file stops here, before the broker starts
        os.environ["MOBILISE_CONNECTORS_FILE"] = str(connectors_file.resolve())
    outbox = Path(os.environ.setdefault("MOBILISE_OUTBOX_DIR", "outbox")).resolve()
    _dev_links(web_chosen)
    # A closed terminal stops everything as Ctrl-C does: the broker, in a process group of its
    # own, would otherwise outlive this process, which its hangup kills.
    signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    with EmbeddedBroker(port=chosen) as broker:
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
        settings = _settings(sink="outbox")
        from streams.admin import create_topics
        from streams.admin import publish as send
        from streams.topics import TopicNames, topic_specs

        names = TopicNames(prefix=settings.topic_prefix)
        create_topics(settings.bootstrap_servers, topic_specs(names, settings.partitions), 1)
        with BackgroundWebServer(settings, host="127.0.0.1", port=web_chosen) as server:
            click.echo(
                f"\n  broker     {broker.bootstrap} (embedded, in memory)\n"
                f"  subscribe  {server.url}/subscribe  (the confirmation email lands in the outbox)\n"
                f"  console    {server.url}/console  (sign in with a token: "
                f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap} mobilise tokens create --name you)\n"
                f"  api        {server.url}/api/v1/openapi.json\n"
                f"  outbox     {outbox}  (one .eml file per email)\n"
                f"  publish    KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap} mobilise publish FILE\n"
                "  stop       Ctrl-C\n"
            )
            from streams.worker import run_worker

            run_worker(settings, observe=_demo(settings, send, names) if demo else None)


def _dev_links(web_port: int) -> None:
    """Point the emails' links at the local web process, signed with a key kept in the data dir.

    Variables already set win: a developer may use their own key or a tunnel's address.
    """
    import secrets

    data_dir = Path(os.environ.get("MOBILISE_DATA_DIR") or Settings.model_fields["data_dir"].default)
    path = data_dir / "dev-secret-key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another `mobilise dev` wrote it first
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48) + "\n")
    os.environ.setdefault("MOBILISE_SECRET_KEY", path.read_text().strip())
    os.environ.setdefault("MOBILISE_PUBLIC_URL", f"http://127.0.0.1:{web_port}")


def _demo(settings: Settings, send: Callable[..., int], names: Any) -> Callable[[Any], None]:
    from .demo import demo_case_updates, demo_subscriptions

    subscriptions = demo_subscriptions()
    send(
        settings.bootstrap_servers,
        names.subscriptions,
        [(s.subscriber_id, s.model_dump_json().encode("utf-8")) for s in subscriptions],
    )
    log = structlog.get_logger("mobilise.demo")

    def publish_updates(pipeline: Any) -> None:
        # An update published before its subscribers are indexed would match nobody:
        # wait (bounded) until the worker holds them all.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            shards = [pipeline.shards.shard(p) for p in pipeline.shards.partitions]
            if sum(len(s) for s in shards if s is not None) >= len(subscriptions):
                break
            time.sleep(0.2)
        updates = demo_case_updates()
        send(
            settings.bootstrap_servers,
            names.case_updates,
            [(u.case_id, u.model_dump_json().encode("utf-8")) for u in updates],
        )
        log.info("demo.published", subscriptions=len(subscriptions), case_updates=len(updates))

    def observe(pipeline: Any) -> None:
        threading.Thread(target=publish_updates, args=(pipeline,), name="demo", daemon=True).start()

    return observe


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'subscription'}: {e['msg']}"
        for e in exc.errors(include_url=False)
    )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for machines.")
@_friendly
def status(as_json: bool) -> None:
    """Topics and lag, workers, dead letters and the last delivery per sink, read from Kafka."""
    from .status import collect_status, format_status

    report = collect_status(_settings())
    click.echo(report.model_dump_json(indent=2) if as_json else format_status(report))


@main.group()
def connectors() -> None:
    """Sources and sinks beyond the pipeline's own: list the installed ones, check a file, run it."""


@connectors.command("list")
def connectors_list() -> None:
    """Every installed connector type, what it reads or writes, and its settings."""
    from .connector_ops import describe_installed

    click.echo("\n".join(describe_installed()).rstrip())


@connectors.command("check")
@click.argument("file", type=click.Path(path_type=Path))
@_friendly
def connectors_check(file: Path) -> None:
    """Validate a connectors file; every bad field is named (exit 2 when any is)."""
    from connectors.declarations import load_connectors

    loaded = load_connectors(file)
    for connector in loaded:
        declaration = connector.declaration
        click.echo(f"ok  {declaration.name}: {declaration.type} on {declaration.topic}")
    click.echo(f"{file}: {len(loaded)} connector(s), all valid")


@connectors.command("run")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics and /health on this port.")
@_friendly
def connectors_run(file: Path, metrics_port: int | None) -> None:
    """Run the connectors of FILE until Ctrl-C, or until all have ended (exit 1 if one failed)."""
    from streams.admin import create_topics
    from streams.topics import TopicNames, topic_specs

    from .connector_ops import run_connectors

    settings = _settings()
    names = TopicNames(prefix=settings.topic_prefix)
    create_topics(
        settings.bootstrap_servers, topic_specs(names, settings.partitions), settings.replication_factor
    )
    statuses = run_connectors(settings, file, metrics_port=metrics_port)
    failed = [s for s in statuses.values() if s.state == "failed"]
    for status in statuses.values():
        why = f": {status.last_error}" if status.state == "failed" else ""
        click.echo(f"{status.name}: {status.state}{why}", err=True)
    if failed:
        sys.exit(1)


@connectors.command("reset")
@click.argument("name")
@_friendly
def connectors_reset(name: str) -> None:
    """Forget where source NAME is up to, so that its next run starts from the beginning."""
    from .connector_ops import reset_checkpoint

    reset_checkpoint(_settings(), name)
    click.echo(f"{name}: checkpoint reset")


@main.group("dead-letters")
def dead_letters() -> None:
    """Inspect the records the pipeline could not process, and replay them after a fix."""


@dead_letters.command("list")
@click.option("--topic", default=None, help="Only those from this original topic (prefix optional).")
@click.option("--stage", default=None, help="Only this stage, e.g. fanout, subscriptions, delivery.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="The latest N.")
@_friendly
def dead_letters_list(topic: str | None, stage: str | None, limit: int) -> None:
    """One line per dead letter, oldest first: when, id, topic[partition]@offset, stage, reason."""
    from streams.topics import TopicNames

    from .dead_letters import load, select, summary_line
    from .replay import load_markers, markers_topic, replay_note
    from .snapshot import consumer, read_topic

    settings = _settings()
    with consumer(settings.bootstrap_servers) as reader:
        found = load(read_topic(reader, TopicNames(prefix=settings.topic_prefix).dead_letters))
        markers = load_markers(read_topic(reader, markers_topic(settings.topic_prefix)))
    every = select(found.letters, topic=topic, stage=stage, prefix=settings.topic_prefix)
    shown = every[-limit:] if limit else []
    for stored in shown:
        note = "; ".join(replay_note(stored, markers))
        click.echo(summary_line(stored, prefix=settings.topic_prefix, note=note))
    if len(shown) < len(every):
        click.echo(f"(the latest {len(shown)} of {len(every)}; --limit to see more)")
    for bad in found.unreadable:
        click.echo(f"unreadable record at dead-letters {bad.partition}:{bad.offset}: {bad.error}", err=True)


@dead_letters.command("show")
@click.argument("reference")
@_friendly
def dead_letters_show(reference: str) -> None:
    """Everything about one dead letter: REFERENCE is its id (dl-…), PARTITION:OFFSET or OFFSET."""
    from streams.topics import TopicNames

    from .dead_letters import describe, load, resolve
    from .replay import load_markers, markers_topic, replay_note
    from .snapshot import consumer, read_topic

    settings = _settings()
    with consumer(settings.bootstrap_servers) as reader:
        letters = load(read_topic(reader, TopicNames(prefix=settings.topic_prefix).dead_letters)).letters
        markers = load_markers(read_topic(reader, markers_topic(settings.topic_prefix)))
    found = resolve(letters, reference)
    click.echo("\n\n".join(describe(s, replay_notes=replay_note(s, markers)) for s in found))


@dead_letters.command("replay")
@click.option("--id", "ids", multiple=True, help="A dead letter's id (dl-…) to replay (repeatable).")
@click.option("--all", "everything", is_flag=True, help="Every dead letter not replayed yet.")
@click.option("--topic", default=None, help="Only those from this original topic.")
@click.option("--stage", default=None, help="Only this stage, e.g. fanout or delivery.")
@click.option(
    "--force", is_flag=True, help="Send again what was replayed already (the stages drop duplicates)."
)
@click.option("--dry-run", is_flag=True, help="Say what would be sent; send nothing.")
@_friendly
def dead_letters_replay(
    ids: tuple[str, ...], everything: bool, topic: str | None, stage: str | None, force: bool, dry_run: bool
) -> None:
    """Re-publish dead letters' original records to their original topics, after a fix.

    Each record is sent once (a replay is remembered in the dead-letters-replayed topic);
    one that is still invalid comes back as a new dead letter. Nothing already delivered
    is delivered again: the stages drop known event ids and alert ids.
    """
    from .dead_letters import short_reference, summary_line
    from .replay import replay_dead_letters

    if bool(ids) == everything:
        raise InvalidInput("give --all or one or more --id (see `mobilise dead-letters list`)")
    settings = _settings()
    outcome = replay_dead_letters(settings, ids=ids, topic=topic, stage=stage, force=force, dry_run=dry_run)
    prefix = settings.topic_prefix
    for stored in outcome.would_send:
        click.echo("would replay  " + summary_line(stored, prefix=prefix))
    for stored, marker in outcome.replayed:
        copy = f"{marker.topic.removeprefix(prefix)}[{marker.partition}]@{marker.offset}"
        click.echo(f"replayed  {summary_line(stored, prefix=prefix)}  → {copy}")
    for skipped in outcome.skipped:
        click.echo(f"skipped   {short_reference(skipped.stored, prefix=prefix)}: {skipped.reason}")
    verb = "would be replayed" if dry_run else "replayed"
    count = len(outcome.would_send) if dry_run else len(outcome.replayed)
    click.echo(f"{count} dead letter(s) {verb}, {len(outcome.skipped)} skipped")
