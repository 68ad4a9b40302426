"""The embedded broker starts on its own port, and never takes another program's listener for itself."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from mobilise.broker import EmbeddedBroker
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
