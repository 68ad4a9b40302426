"""The embedded broker starts on its own port, and never takes another program's listener for itself."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from mobilise.broker import EmbeddedBroker, port_is_free
from mobilise.errors import FatalError


@contextmanager
def listener(port: int = 0) -> Iterator[int]:
    """Another program's server on a loopback port: it accepts connections and speaks no Kafka."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_port_given_that_another_program_holds_is_refused_by_name() -> None:
    with listener() as taken, pytest.raises(FatalError, match=rf"127.0.0.1:{taken} is taken by another"):
        EmbeddedBroker(port=taken).start()


def test_a_port_chosen_for_it_and_taken_before_the_start_is_chosen_again() -> None:
    broker = EmbeddedBroker()
    # What happened to a benchmark: another server got the port between the two steps.
    with listener(broker.port) as taken, broker:
        assert broker.port != taken and broker.bootstrap == f"127.0.0.1:{broker.port}"
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10_000)
        try:
            admin.create_topics([NewTopic(name="proof", num_partitions=1, replication_factor=1)])
            assert "proof" in admin.list_topics()
        finally:
            admin.close()


def test_a_broker_stopped_with_clients_connected_starts_again_on_its_port() -> None:
    broker = EmbeddedBroker()
    with broker:
        port = broker.port
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10_000)
        admin.list_topics()
    # The broker closed its connections first: they wait out TIME_WAIT on its port.
    admin.close()
    with broker:
        assert broker.port == port
        again = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10_000)
        try:
            assert again.list_topics() == []
        finally:
            again.close()


def _ended(pid: int) -> bool:
    """Whether a process is gone, or a zombie nobody has reaped yet (it holds no port then)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_broker_whose_starter_is_killed_outright_ends_too() -> None:
    # What a SIGKILL of `mobilise dev` did: the broker, in its own process group, ran on.
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from mobilise.broker import EmbeddedBroker; b = EmbeddedBroker().start(); "
            "print(b.pid, b.port, flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    broker_pid = None
    try:
        assert starter.stdout is not None
        ready, _, _ = select.select([starter.stdout], [], [], 60)
        assert ready, "the starter did not start its broker within 60 s"
        broker_pid, port = (int(word) for word in starter.stdout.readline().split())
        assert not _ended(broker_pid) and not port_is_free(port)
        starter.kill()
        starter.wait(timeout=10)
        deadline = time.monotonic() + 30
        while not _ended(broker_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _ended(broker_pid), "the broker outlived the process that started it"
        while not port_is_free(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert port_is_free(port)
    finally:
        starter.kill()
        starter.wait(timeout=10)
        if broker_pid is not None and not _ended(broker_pid):
            os.kill(broker_pid, signal.SIGKILL)
