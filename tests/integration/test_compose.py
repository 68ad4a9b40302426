"""docker-compose.yml agrees with itself, checked without a Docker engine.

``docker-compose config`` resolves the file as Compose will run it (anchors, merge keys,
profiles, relative paths), and these tests read that resolved model: every address a
mobilise container bootstraps from is a listener some broker really has and advertises
under its own service name, the KRaft quorum names real services by their node ids, the
worker can be scaled, and the ``cluster`` profile is three brokers with replicated topics.

Needs the ``docker-compose`` command (Debian: ``apt-get install docker-compose``); without
it these tests fail rather than skip, so a machine that lacks it cannot pass by accident.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

INSTALL_HINT = (
    "docker-compose is not installed, and these tests need it to resolve docker-compose.yml "
    "(no Docker engine is needed). Install it with `apt-get install docker-compose` "
    "(Debian/Ubuntu; run `apt-get update` first), then run the tests again."
)

PROFILES = [pytest.param((), id="default"), pytest.param(("cluster",), id="cluster")]

LOCALHOSTS = {"localhost", "127.0.0.1", "::1"}


# --------------------------------------------------------------------------- compose


def compose_command() -> list[str]:
    """The command that runs Compose: ``docker-compose`` (v1 or v2), else ``docker compose``."""
    standalone = shutil.which("docker-compose")
    if standalone:
        return [standalone]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    pytest.fail(INSTALL_HINT, pytrace=False)


@functools.cache
def compose_config(profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """The resolved compose model (``docker-compose config``) with the given profiles enabled."""
    command = compose_command()
    for profile in profiles:
        command += ["--profile", profile]
    command += ["-f", str(COMPOSE_FILE), "config"]
    # Profiles and files given in the caller's environment would change what is resolved.
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMPOSE_")}
    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"`{shlex.join(command)}` exited {result.returncode}:\n{result.stderr}{result.stdout}",
            pytrace=False,
        )
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict) and isinstance(config.get("services"), dict), result.stdout
    return config


def active_services(profiles: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Services that ``up`` starts with these profiles.

    Compose v2 leaves disabled services out of ``config``; v1 lists them all with their
    ``profiles``; filtering here gives the same answer for both.
    """
    enabled = set(profiles)
    return {
        name: service
        for name, service in compose_config(profiles)["services"].items()
        if not service.get("profiles") or enabled & set(service["profiles"])
    }


# --------------------------------------------------------------------------- parsing


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings, from the mapping or the ``KEY=VALUE`` list form."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, None) for item in raw)
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    """The command as an argument list (Compose accepts a string or a list)."""
    command = service.get("command")
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


@dataclass(frozen=True)
class Listener:
    """One entry of Kafka's ``listeners`` or ``advertised.listeners``."""

    name: str
    host: str
    port: int


def parse_listeners(value: str) -> dict[str, Listener]:
    """``NAME://host:port,...`` by listener name; an empty host means every interface."""
    listeners: dict[str, Listener] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        match = re.fullmatch(r"([A-Za-z0-9_-]+)://(\[[0-9A-Fa-f:.]*\]|[^:/\s]*):(\d+)", item)
        assert match, f"listener {item!r} is not NAME://host:port"
        name, host, port = match.group(1), match.group(2).strip("[]"), int(match.group(3))
        assert name not in listeners, f"listener {name} is given twice in {value!r}"
        listeners[name] = Listener(name, host, port)
    assert listeners, f"no listeners in {value!r}"
    return listeners


def parse_protocol_map(value: str) -> dict[str, str]:
    """``NAME:PROTOCOL,...`` as a mapping."""
    pairs = [part.strip().split(":") for part in value.split(",") if part.strip()]
    assert all(len(pair) == 2 and all(pair) for pair in pairs), f"bad protocol map {value!r}"
    return dict(pairs)


@dataclass(frozen=True)
class Voter:
    """One entry of ``controller.quorum.voters``: ``id@host:port``."""

    node_id: int
    host: str
    port: int


def parse_voters(value: str) -> list[Voter]:
    voters = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        match = re.fullmatch(r"(\d+)@([^:\s]+):(\d+)", item)
        assert match, f"quorum voter {item!r} is not id@host:port"
        voters.append(Voter(int(match.group(1)), match.group(2), int(match.group(3))))
    assert voters, f"no quorum voters in {value!r}"
    return voters


def parse_host_ports(value: str) -> list[tuple[str, int]]:
    """A ``host:port,host:port`` list, as bootstrap servers are written."""
    pairs = []
    for item in value.split(","):
        match = re.fullmatch(r"([^:\s]+):(\d+)", item.strip())
        assert match, f"{item!r} in {value!r} is not host:port"
        pairs.append((match.group(1), int(match.group(2))))
    return pairs


@dataclass(frozen=True)
class PortBinding:
    """A published port: host address (empty for all), host port, container port."""

    host_ip: str
    published: int | None
    target: int


def published_ports(service: dict[str, Any]) -> list[PortBinding]:
    """Ports in either the short (``[ip:]host:container[/proto]``) or the long syntax."""
    bindings = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            bindings.append(
                PortBinding(
                    str(entry.get("host_ip") or ""),
                    int(published) if published not in (None, "") else None,
                    int(entry["target"]),
                )
            )
            continue
        spec = str(entry).split("/", 1)[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 1:
            bindings.append(PortBinding("", None, int(parts[0])))
        elif len(parts) == 2:
            bindings.append(PortBinding("", int(parts[0]) if parts[0] else None, int(parts[1])))
        else:
            published = int(parts[1]) if parts[1] else None
            bindings.append(PortBinding(parts[0].strip("[]"), published, int(parts[2])))
    return bindings


@dataclass(frozen=True)
class Mount:
    """A volume entry: ``type`` is ``volume`` for a named volume, ``bind`` for a host path."""

    type: str
    source: str
    target: str


def mounts(service: dict[str, Any]) -> list[Mount]:
    result = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            result.append(Mount(entry["type"], str(entry.get("source") or ""), entry["target"]))
            continue
        parts = str(entry).split(":")
        if len(parts) == 1:
            result.append(Mount("volume", "", parts[0]))  # anonymous volume
        else:
            source, target = parts[0], parts[1]
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            result.append(Mount(kind, source, target))
    return result


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency name → condition; the short list form means ``service_started``."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def healthcheck_bootstrap(service: dict[str, Any]) -> tuple[str, int]:
    """The ``--bootstrap-server`` address a broker's healthcheck connects to."""
    test = (service.get("healthcheck") or {}).get("test")
    assert test, "no healthcheck test"
    text = test if isinstance(test, str) else " ".join(str(part) for part in test)
    match = re.search(r"--bootstrap-server[= ]+(\S+)", text)
    assert match, f"healthcheck {text!r} names no --bootstrap-server"
    assert re.search(r"/opt/kafka/bin/kafka-[a-z-]+\.sh", text), f"healthcheck {text!r} runs no Kafka tool"
    [address] = parse_host_ports(match.group(1))
    return address


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Broker:
    """A Kafka service, with its settings parsed."""

    name: str
    service: dict[str, Any]
    env: dict[str, str]

    @property
    def node_id(self) -> int:
        return int(self.env["KAFKA_NODE_ID"])

    @property
    def listeners(self) -> dict[str, Listener]:
        return parse_listeners(self.env["KAFKA_LISTENERS"])

    @property
    def advertised(self) -> dict[str, Listener]:
        return parse_listeners(self.env["KAFKA_ADVERTISED_LISTENERS"])

    @property
    def controller_listeners(self) -> set[str]:
        return set(self.env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(","))

    @property
    def voters(self) -> list[Voter]:
        return parse_voters(self.env["KAFKA_CONTROLLER_QUORUM_VOTERS"])

    def setting(self, key: str) -> int:
        assert key in self.env, f"{self.name} does not set {key} (Kafka's default assumes 3 brokers)"
        return int(self.env[key])

    def container_addresses(self) -> set[tuple[str, int]]:
        """Addresses other containers can bootstrap from and keep using.

        A client is handed back the advertised address of the listener it connected to,
        so that address must be this service's own name and the port it listens on.
        """
        listeners = self.listeners
        return {
            (adv.host, adv.port)
            for name, adv in self.advertised.items()
            if adv.host == self.name and name in listeners and listeners[name].port == adv.port
        }


def is_broker(service: dict[str, Any]) -> bool:
    image = str(service.get("image") or "").split("@")[0].rsplit(":", 1)[0]
    env = environment(service)
    return image.endswith("kafka") or "KAFKA_LISTENERS" in env or "KAFKA_PROCESS_ROLES" in env


def brokers(profiles: tuple[str, ...]) -> dict[str, Broker]:
    return {
        name: Broker(name, service, environment(service))
        for name, service in active_services(profiles).items()
        if is_broker(service)
    }


def mobilise_services(profiles: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Services that run the mobilise image (they are told where Kafka is)."""
    return {
        name: service
        for name, service in active_services(profiles).items()
        if "KAFKA_BOOTSTRAP_SERVERS" in environment(service)
    }


def workers(profiles: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in mobilise_services(profiles).items() if command_of(s) == ["worker"]}


def topic_creators(profiles: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in mobilise_services(profiles).items() if command_of(s) == ["topics", "create"]}


def quorum_of(broker: Broker, all_brokers: dict[str, Broker]) -> dict[str, Broker]:
    """The brokers named by this broker's quorum voters."""
    hosts = [voter.host for voter in broker.voters]
    missing = [host for host in hosts if host not in all_brokers]
    assert not missing, f"{broker.name}: quorum voters {missing} are not Kafka services"
    return {host: all_brokers[host] for host in hosts}


def in_profile(service: dict[str, Any], profile: str) -> bool:
    return profile in (service.get("profiles") or [])


# --------------------------------------------------------------------------- tests: brokers


def test_compose_config_resolves_with_and_without_the_cluster_profile() -> None:
    for profiles in ((), ("cluster",)):
        assert compose_config(profiles)["services"], f"no services with profiles {profiles}"


@pytest.mark.parametrize("profiles", PROFILES)
def test_kafka_is_the_apache_image_in_kraft_combined_mode(profiles: tuple[str, ...]) -> None:
    found = brokers(profiles)
    assert found, "no Kafka service"
    for broker in found.values():
        image = broker.service.get("image", "")
        assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", image), (
            f"{broker.name}: image {image!r} is not apache/kafka pinned to a release tag"
        )
        roles = set(broker.env.get("KAFKA_PROCESS_ROLES", "").split(","))
        assert roles == {"broker", "controller"}, f"{broker.name}: process roles {roles}"
        assert re.fullmatch(r"\d+", broker.env.get("KAFKA_NODE_ID", "")), f"{broker.name}: no node id"
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", broker.env.get("CLUSTER_ID", "")), (
            f"{broker.name}: CLUSTER_ID must be a 22-character base64 UUID"
        )
        assert not any("ZOOKEEPER" in key for key in broker.env), f"{broker.name} configures ZooKeeper"


@pytest.mark.parametrize("profiles", PROFILES)
def test_nothing_mentions_zookeeper(profiles: tuple[str, ...]) -> None:
    resolved = yaml.safe_dump(compose_config(profiles)).lower()
    assert "zookeeper" not in resolved


@pytest.mark.parametrize("profiles", PROFILES)
def test_broker_listeners_are_consistent(profiles: tuple[str, ...]) -> None:
    for broker in brokers(profiles).values():
        listeners, advertised = broker.listeners, broker.advertised
        protocols = parse_protocol_map(broker.env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"])
        ports = [listener.port for listener in listeners.values()]
        assert len(ports) == len(set(ports)), f"{broker.name}: two listeners share a port: {ports}"
        assert set(listeners) <= set(protocols), f"{broker.name}: listeners missing from the protocol map"
        assert set(advertised) <= set(listeners), (
            f"{broker.name}: advertises {set(advertised) - set(listeners)} which it does not listen on"
        )
        controllers = broker.controller_listeners
        assert controllers <= set(listeners), f"{broker.name}: controller listener {controllers} not bound"
        assert not controllers & set(advertised), f"{broker.name}: advertises its controller listener"


@pytest.mark.parametrize("profiles", PROFILES)
def test_inter_broker_listener_is_advertised_under_the_service_name(profiles: tuple[str, ...]) -> None:
    for broker in brokers(profiles).values():
        name = broker.env.get("KAFKA_INTER_BROKER_LISTENER_NAME")
        assert name, f"{broker.name}: no KAFKA_INTER_BROKER_LISTENER_NAME"
        assert name in broker.listeners, f"{broker.name}: inter-broker listener {name} is not bound"
        assert name in broker.advertised, f"{broker.name}: inter-broker listener {name} is not advertised"
        advertised = broker.advertised[name]
        assert advertised.host == broker.name, (
            f"{broker.name}: internal listener advertised as {advertised.host!r}, not its service name"
        )
        assert advertised.port == broker.listeners[name].port, (
            f"{broker.name}: {name} listens on {broker.listeners[name].port} but advertises {advertised.port}"
        )


@pytest.mark.parametrize("profiles", PROFILES)
def test_host_listeners_are_published_on_the_advertised_port(profiles: tuple[str, ...]) -> None:
    for broker in brokers(profiles).values():
        host_listeners = {n: a for n, a in broker.advertised.items() if a.host in LOCALHOSTS}
        assert host_listeners, f"{broker.name}: no listener advertised for clients on the host"
        bindings = published_ports(broker.service)
        for name, advertised in host_listeners.items():
            matching = [
                b
                for b in bindings
                if b.published == advertised.port and b.target == broker.listeners[name].port
            ]
            assert matching, (
                f"{broker.name}: {name} is advertised as localhost:{advertised.port} but no port maps "
                f"{advertised.port} to the listener's port {broker.listeners[name].port}: {bindings}"
            )


@pytest.mark.parametrize("profiles", PROFILES)
def test_published_host_ports_do_not_collide(profiles: tuple[str, ...]) -> None:
    seen: dict[int, str] = {}
    for name, service in active_services(profiles).items():
        for binding in published_ports(service):
            if binding.published is None:
                continue
            assert binding.published not in seen, (
                f"host port {binding.published} is published by {seen[binding.published]} and {name}"
            )
            seen[binding.published] = name


@pytest.mark.parametrize("profiles", PROFILES)
def test_quorum_voters_name_services_by_their_node_ids(profiles: tuple[str, ...]) -> None:
    everyone = brokers(profiles)
    for broker in everyone.values():
        voters = broker.voters
        quorum = quorum_of(broker, everyone)
        assert broker.name in quorum, f"{broker.name} is a controller but not among its own voters"
        assert len(quorum) == len(voters), f"{broker.name}: a service is listed twice among the voters"
        ids = [voter.node_id for voter in voters]
        assert len(ids) == len(set(ids)), f"{broker.name}: duplicate node ids among voters {ids}"
        for voter in voters:
            member = everyone[voter.host]
            assert voter.node_id == member.node_id, (
                f"{broker.name}: voter {voter.node_id}@{voter.host} but {voter.host} has "
                f"KAFKA_NODE_ID={member.node_id}"
            )
            controller_ports = {
                member.listeners[name].port
                for name in member.controller_listeners
                if name in member.listeners
            }
            assert voter.port in controller_ports, (
                f"{broker.name}: voter {voter.host}:{voter.port} is not {voter.host}'s controller "
                f"listener {controller_ports}"
            )
            # Everyone in a quorum must agree on it, and format storage as the same cluster.
            assert member.voters == voters, f"{broker.name} and {member.name} list different voters"
            assert member.env["CLUSTER_ID"] == broker.env["CLUSTER_ID"], (
                f"{broker.name} and {member.name} are in one quorum with different CLUSTER_IDs"
            )


@pytest.mark.parametrize("profiles", PROFILES)
def test_brokers_keep_data_in_a_named_volume(profiles: tuple[str, ...]) -> None:
    declared = set(compose_config(profiles).get("volumes") or {})
    for broker in brokers(profiles).values():
        log_dirs = broker.env.get("KAFKA_LOG_DIRS", "")
        assert log_dirs, f"{broker.name}: no KAFKA_LOG_DIRS (the image's default is under /tmp)"
        named = {m.target: m.source for m in mounts(broker.service) if m.type == "volume" and m.source}
        for log_dir in log_dirs.split(","):
            holders = [t for t in named if log_dir == t or log_dir.startswith(t.rstrip("/") + "/")]
            assert holders, f"{broker.name}: log dir {log_dir} is not on a named volume ({named})"
            assert named[holders[0]] in declared, f"{broker.name}: volume {named[holders[0]]} not declared"
    sources = [m.source for b in brokers(profiles).values() for m in mounts(b.service) if m.type == "volume"]
    assert len(sources) == len(set(sources)), f"two brokers share a data volume: {sources}"


@pytest.mark.parametrize("profiles", PROFILES)
def test_internal_replication_fits_the_quorum(profiles: tuple[str, ...]) -> None:
    everyone = brokers(profiles)
    for broker in everyone.values():
        size = len(quorum_of(broker, everyone))
        offsets_rf = broker.setting("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR")
        txn_rf = broker.setting("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR")
        txn_isr = broker.setting("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR")
        min_isr = broker.setting("KAFKA_MIN_INSYNC_REPLICAS")
        assert 1 <= offsets_rf <= size, f"{broker.name}: offsets RF {offsets_rf} with {size} broker(s)"
        assert 1 <= txn_rf <= size, f"{broker.name}: transaction log RF {txn_rf} with {size} broker(s)"
        assert 1 <= txn_isr <= txn_rf, f"{broker.name}: transaction min ISR {txn_isr} > RF {txn_rf}"
        if size > 1:
            # One broker down must still leave enough in-sync replicas to write.
            assert min_isr < size and txn_isr < size, f"{broker.name}: cannot lose a broker"


@pytest.mark.parametrize("profiles", PROFILES)
def test_broker_healthchecks_reach_the_broker_from_inside_its_container(profiles: tuple[str, ...]) -> None:
    for broker in brokers(profiles).values():
        host, port = healthcheck_bootstrap(broker.service)
        listeners = broker.listeners
        # The tool goes on to the advertised address; it must lead back to this container.
        reachable = broker.container_addresses() | {
            (adv.host, adv.port)
            for name, adv in broker.advertised.items()
            if adv.host in LOCALHOSTS and listeners[name].port == adv.port
        }
        assert (host, port) in reachable, (
            f"{broker.name}: healthcheck uses {host}:{port}, not an advertised address that leads "
            f"back to this container {sorted(reachable)}"
        )


# --------------------------------------------------------------------------- tests: mobilise


@pytest.mark.parametrize("profiles", PROFILES)
def test_bootstrap_servers_name_brokers_on_their_internal_listeners(profiles: tuple[str, ...]) -> None:
    everyone = brokers(profiles)
    services = mobilise_services(profiles)
    assert services, "no service sets KAFKA_BOOTSTRAP_SERVERS"
    for name, service in services.items():
        value = environment(service)["KAFKA_BOOTSTRAP_SERVERS"]
        addresses = parse_host_ports(value)
        for host, port in addresses:
            assert host in everyone, f"{name}: bootstrap host {host!r} is not a Kafka service"
            broker = everyone[host]
            assert (host, port) in broker.container_addresses(), (
                f"{name}: {host}:{port} is not a listener {host} advertises under its own name "
                f"(ports it does: {sorted(p for _, p in broker.container_addresses())})"
            )
        # Listing the whole quorum lets a worker start while any one broker is down.
        hosts = {host for host, _ in addresses}
        quorum = set(quorum_of(everyone[addresses[0][0]], everyone))
        assert hosts == quorum, f"{name}: bootstraps from {sorted(hosts)}, the cluster is {sorted(quorum)}"


@pytest.mark.parametrize("profiles", PROFILES)
def test_each_worker_has_a_topics_service_with_the_same_environment(profiles: tuple[str, ...]) -> None:
    found_workers, creators = workers(profiles), topic_creators(profiles)
    assert found_workers, "no service runs `mobilise worker`"
    for name, worker in found_workers.items():
        env = environment(worker)
        same = [n for n, s in creators.items() if environment(s) == env]
        assert len(same) == 1, (
            f"{name}: expected exactly one `topics create` service with the same environment "
            f"(one shared x- block), found {same} among {sorted(creators)}"
        )
        assert env.get("MOBILISE_LOG_FORMAT") == "json", f"{name}: MOBILISE_LOG_FORMAT is not json"
        for key in ("MOBILISE_PARTITIONS", "MOBILISE_REPLICATION_FACTOR"):
            assert re.fullmatch(r"[1-9]\d*", env.get(key, "")), f"{name}: {key}={env.get(key)!r}"


@pytest.mark.parametrize("profiles", PROFILES)
def test_worker_waits_for_healthy_brokers_and_created_topics(profiles: tuple[str, ...]) -> None:
    everyone = brokers(profiles)
    creators = topic_creators(profiles)
    for name, worker in workers(profiles).items():
        env = environment(worker)
        needs = depends_on(worker)
        for host, _ in parse_host_ports(env["KAFKA_BOOTSTRAP_SERVERS"]):
            assert needs.get(host) == "service_healthy", f"{name} does not wait for {host} to be healthy"
            assert everyone[host].service.get("healthcheck"), f"{host} has no healthcheck to wait for"
        own_topics = [n for n, s in creators.items() if environment(s) == env]
        assert len(own_topics) == 1, f"{name}: no single `topics create` service for its cluster"
        assert needs.get(own_topics[0]) == "service_completed_successfully", (
            f"{name} does not wait for {own_topics[0]} to complete successfully"
        )
    for name, creator in creators.items():
        needs = depends_on(creator)
        for host, _ in parse_host_ports(environment(creator)["KAFKA_BOOTSTRAP_SERVERS"]):
            assert needs.get(host) == "service_healthy", f"{name} does not wait for {host} to be healthy"
        restart = str(creator.get("restart", "no"))
        assert restart in {"no", "on-failure"}, f"{name} is one-shot but restart={restart}"


@pytest.mark.parametrize("profiles", PROFILES)
def test_worker_can_be_scaled(profiles: tuple[str, ...]) -> None:
    for name, worker in workers(profiles).items():
        assert "container_name" not in worker, f"{name}: container_name prevents --scale"
        bindings = [b for b in published_ports(worker) if b.published is not None]
        assert not bindings, f"{name}: fixed host ports prevent --scale: {bindings}"


@pytest.mark.parametrize("profiles", PROFILES)
def test_mobilise_runs_from_the_dockerfile_image(profiles: tuple[str, ...]) -> None:
    for name, service in mobilise_services(profiles).items():
        build = service.get("build")
        assert build, f"{name} is not built from the Dockerfile"
        if isinstance(build, str):
            build = {"context": build}
        context = (REPO / str(build.get("context", "."))).resolve()
        assert context == REPO, f"{name}: build context {context} is not the repository root"
        dockerfile = (context / str(build.get("dockerfile", "Dockerfile"))).resolve()
        assert dockerfile == DOCKERFILE, f"{name}: builds {dockerfile}, not {DOCKERFILE}"
        assert "entrypoint" not in service, f"{name}: overrides the image's `mobilise` entrypoint"
    for name, worker in workers(profiles).items():
        assert command_of(worker) == ["worker"], f"{name}: command {command_of(worker)}"
    assert topic_creators(profiles), "no service runs `mobilise topics create`"


@pytest.mark.parametrize("profiles", PROFILES)
def test_workers_get_the_time_a_stop_without_a_broker_takes(profiles: tuple[str, ...]) -> None:
    # A worker gives up its last commit after FINAL_COMMIT_SECONDS; Docker's default would kill it at 10 s.
    from streams.consumer import FINAL_COMMIT_SECONDS

    for name, worker in workers(profiles).items():
        grace = str(worker.get("stop_grace_period", "10s"))
        assert grace.endswith("s") and grace[:-1].isdigit(), f"{name}: stop_grace_period {grace!r}"
        assert int(grace[:-1]) >= 2 * FINAL_COMMIT_SECONDS, f"{name}: stop_grace_period {grace}"


@pytest.mark.parametrize("profiles", PROFILES)
def test_worker_outbox_is_a_named_volume(profiles: tuple[str, ...]) -> None:
    declared = set(compose_config(profiles).get("volumes") or {})
    for name, worker in workers(profiles).items():
        outbox = environment(worker).get("MOBILISE_OUTBOX_DIR", "")
        assert outbox.startswith("/"), f"{name}: MOBILISE_OUTBOX_DIR={outbox!r} is not absolute"
        named = {m.target: m.source for m in mounts(worker) if m.type == "volume"}
        assert outbox in named, f"{name}: nothing is mounted at the outbox {outbox} ({named})"
        assert named[outbox] in declared, f"{name}: outbox volume {named[outbox]!r} is not declared"


# --------------------------------------------------------------------------- tests: profiles


def test_default_stack_is_one_broker_one_topics_one_worker() -> None:
    found = brokers(())
    assert len(found) == 1, f"default stack has brokers {sorted(found)}"
    [broker] = found.values()
    assert [v.host for v in broker.voters] == [broker.name], "the single broker must be its own quorum"
    assert len(workers(())) == 1 and len(topic_creators(())) == 1
    for name, worker in workers(()).items():
        assert environment(worker)["MOBILISE_REPLICATION_FACTOR"] == "1", name


def test_cluster_profile_is_three_brokers_with_replicated_topics() -> None:
    profiles = ("cluster",)
    services = compose_config(profiles)["services"]
    cluster_brokers = {n: b for n, b in brokers(profiles).items() if in_profile(b.service, "cluster")}
    assert len(cluster_brokers) == 3, f"cluster profile brokers: {sorted(cluster_brokers)}"
    for broker in cluster_brokers.values():
        assert set(quorum_of(broker, cluster_brokers)) == set(cluster_brokers), (
            f"{broker.name}: quorum is not exactly the three cluster brokers"
        )
        assert broker.setting("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR") == 3, broker.name
        assert broker.setting("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR") == 3, broker.name
        assert broker.setting("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR") == 2, broker.name
        assert broker.setting("KAFKA_MIN_INSYNC_REPLICAS") == 2, broker.name
    ids = sorted(b.node_id for b in cluster_brokers.values())
    assert len(set(ids)) == 3, f"node ids {ids}"

    cluster_workers = {n: s for n, s in workers(profiles).items() if in_profile(s, "cluster")}
    cluster_topics = {n: s for n, s in topic_creators(profiles).items() if in_profile(s, "cluster")}
    assert len(cluster_workers) == 1 and len(cluster_topics) == 1, (
        f"cluster profile workers {sorted(cluster_workers)}, topics {sorted(cluster_topics)}"
    )
    for name, service in {**cluster_workers, **cluster_topics}.items():
        env = environment(service)
        assert env["MOBILISE_REPLICATION_FACTOR"] == "3", f"{name}: {env['MOBILISE_REPLICATION_FACTOR']}"
        hosts = {host for host, _ in parse_host_ports(env["KAFKA_BOOTSTRAP_SERVERS"])}
        assert hosts == set(cluster_brokers), f"{name} bootstraps from {sorted(hosts)}"

    # Without the profile none of it starts.
    for name in [*cluster_brokers, *cluster_workers, *cluster_topics]:
        assert name not in active_services(()), f"{name} starts without --profile cluster"
        assert services[name].get("profiles") == ["cluster"], name


@pytest.mark.parametrize("profiles", PROFILES)
def test_replication_factor_fits_the_cluster_a_service_uses(profiles: tuple[str, ...]) -> None:
    everyone = brokers(profiles)
    for name, service in mobilise_services(profiles).items():
        env = environment(service)
        first_host = parse_host_ports(env["KAFKA_BOOTSTRAP_SERVERS"])[0][0]
        size = len(quorum_of(everyone[first_host], everyone))
        rf = int(env["MOBILISE_REPLICATION_FACTOR"])
        assert 1 <= rf <= size, f"{name}: replication factor {rf} on a {size}-broker cluster"


# --------------------------------------------------------------------------- tests: image


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    pairs = []
    for text in logical:
        keyword, _, rest = text.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_dockerfile_installs_the_project_and_runs_the_worker_unprivileged() -> None:
    instructions = dockerfile_instructions()

    def last(keyword: str) -> str:
        found = [args for kw, args in instructions if kw == keyword]
        assert found, f"Dockerfile has no {keyword}"
        return found[-1]

    froms = [args for kw, args in instructions if kw == "FROM"]
    assert froms and froms[-1].split()[0] == "python:3.11-slim", f"final stage is FROM {froms}"
    runs = [args for kw, args in instructions if kw == "RUN"]
    assert any(re.search(r"pip install (?:\S+ )*--no-cache-dir (?:\S+ )*\.(?:\s|$)", r) for r in runs), runs
    assert yaml.safe_load(last("ENTRYPOINT")) == ["mobilise"], last("ENTRYPOINT")
    assert yaml.safe_load(last("CMD")) == ["worker"], last("CMD")

    user = last("USER").split(":")[0]
    assert user not in {"root", "0"}, "the image runs as root"
    keywords = [kw for kw, _ in instructions]
    assert max(i for i, kw in enumerate(keywords) if kw == "USER") < keywords.index("ENTRYPOINT")
    for directory in ("/data", "/outbox"):
        owned = [
            r for r in runs if re.search(rf"chown\s+(?:-\S+\s+)*{re.escape(user)}\S*\s[^&;]*{directory}\b", r)
        ]
        made = [r for r in runs if re.search(rf"mkdir\s[^&;]*{directory}\b", r)]
        assert made and owned, f"{directory} is not created and owned by {user}"


def test_dockerignore_keeps_what_the_build_needs_and_drops_local_state() -> None:
    patterns = {
        line.strip().strip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for excluded in (".git", "outbox", "data", ".venv", "venv"):
        assert excluded in patterns, f".dockerignore does not exclude {excluded}"
    assert any("__pycache__" in p for p in patterns), ".dockerignore keeps __pycache__"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = project.get("tool", {}).get("setuptools", {}).get("packages", [])
    needed = {"pyproject.toml", *(p for p in packages if isinstance(p, str))}
    readme = project["project"].get("readme")
    if isinstance(readme, str):
        needed.add(readme)
    assert not needed & patterns, f".dockerignore drops files `pip install .` needs: {needed & patterns}"
    assert not {"*", "**", "*.md", "*.toml"} & patterns, "a catch-all pattern drops build inputs"


def test_missing_compose_fails_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception) as failure:
        compose_command()
    assert "apt-get install docker-compose" in str(failure.value)
