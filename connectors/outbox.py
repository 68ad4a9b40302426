"""OutboxSink: every alert becomes an RFC 5322 ``.eml`` file in a directory.

For development, demonstrations and tests, and for networks that hand mail to another
system by file drop.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import jinja2

from mobilise.errors import RetryableError
from schemas import Alert

from .base import Sink, SinkOutcome
from .email_config import EmailSinkConfig
from .mime import alert_bytes

__all__ = ["OutboxConfig", "OutboxSink"]


class OutboxConfig(EmailSinkConfig):
    """Settings of the outbox sink (environment: ``MOBILISE_OUTBOX_DIR``, and the email ones)."""

    outbox_dir: Path = Path("outbox")
    """Directory that receives one ``<alert_id>.eml`` file per alert."""


class OutboxSink(Sink[OutboxConfig, Alert]):
    """Writes each alert to ``<outbox_dir>/<alert_id>.eml``.

    Delivery guarantee: exactly once per alert id. A file is written under a temporary
    name and then linked into place, which fails if the file exists; so a replayed alert
    never produces a second file, and a crash never leaves half a message behind. The
    batch is flushed to disk before any of its alerts is reported written.
    """

    name = "outbox"
    accepts = Alert
    Config = OutboxConfig

    async def setup(self) -> None:
        """Create the outbox directory."""
        self.config.outbox_dir.mkdir(parents=True, exist_ok=True)
        self._identity = self.config.identity()
        self._anonymous = hasattr(os, "O_TMPFILE")
        self._directory = str(self.config.outbox_dir)
        self._directory_fd: int | None = os.open(self.config.outbox_dir, os.O_RDONLY)

    async def close(self) -> None:
        """Release the directory handle."""
        fd, self._directory_fd = self._directory_fd, None
        if fd is not None:
            os.close(fd)

    async def deliver(self, alerts: Sequence[Alert]) -> Sequence[SinkOutcome]:
        """Write the batch off the event loop (file I/O blocks)."""
        if not self.config.outbox_dir.is_dir():
            raise RetryableError(f"the outbox {self.config.outbox_dir} is not a directory (any more)")
        return await asyncio.to_thread(self._write_all, alerts)

    def _write_all(self, alerts: Sequence[Alert]) -> list[SinkOutcome]:
        # The flag is read between files: set by interrupt() on the event loop's thread.
        outcomes = [
            SinkOutcome.interrupted(alert.alert_id) if self.interrupted else self._write_one(alert)
            for alert in alerts
        ]
        if any(o.accepted for o in outcomes):
            # One flush for the whole batch, before any outcome is reported: a file per
            # fsync cost more than rendering it. Files found there count too: one may be
            # from a batch whose flush failed.
            try:
                _flush(self._directory_fd)
            except OSError as exc:
                # The files are there, so the retry finds them (duplicates) and flushes again.
                raise RetryableError(
                    f"the outbox {self.config.outbox_dir} could not be flushed to disk ({exc}): "
                    "its new files might not survive a crash, so the batch is tried again"
                ) from exc
        return outcomes

    def _write_one(self, alert: Alert) -> SinkOutcome:
        # No check for an existing file first: the delivery stage hands over only alerts it
        # has not recorded, so a file already there is rare, and the link below finds it.
        name = f"{alert.alert_id}.eml"
        try:
            message = alert_bytes(alert, self._identity)
        except (jinja2.TemplateError, ValueError) as exc:
            # The same alert will fail the same way every time: a permanent failure.
            return SinkOutcome.model_construct(
                record_id=alert.alert_id, accepted=False, retryable=False, error=f"cannot render: {exc!r}"
            )
        try:
            duplicate = self._write(name, message)
        except OSError as exc:
            return SinkOutcome.model_construct(
                record_id=alert.alert_id, accepted=False, retryable=True, error=f"cannot write: {exc}"
            )
        return SinkOutcome.accept(alert.alert_id, duplicate=duplicate, provider_message_id=name)

    def _write(self, name: str, message: bytes) -> bool:
        """Write ``message`` to a nameless file and link it in as ``name``; True if it existed."""
        final = os.path.join(self._directory, name)
        if self._anonymous:
            try:
                return self._write_anonymous(final, message)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.EXDEV):
                    raise
                self._anonymous = False  # this file system has no O_TMPFILE: named ones, then
        return self._write_named(final, message)

    def _write_anonymous(self, final: str, message: bytes) -> bool:
        # O_TMPFILE: the file has no name until it is complete, so a crash leaves nothing
        # behind, and linking it in fails if the name exists (one writer wins).
        fd = os.open(self._directory, os.O_TMPFILE | os.O_WRONLY, 0o644)
        try:
            _write_fully(fd, message)
            try:
                # src_dir_fd makes Python call linkat(…, AT_SYMLINK_FOLLOW), which links the
                # open file itself rather than the /proc symlink to it.
                os.link(f"/proc/self/fd/{fd}", final, src_dir_fd=self._directory_fd)
            except FileExistsError:
                return True
            return False
        finally:
            os.close(fd)

    def _write_named(self, final: str, message: bytes) -> bool:
        # One writer per alert id at a time within a process; the pid keeps workers apart.
        head, name = os.path.split(final)
        temporary = os.path.join(head, f".tmp-{os.getpid()}-{threading.get_ident()}-{name}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(message)
            try:
                os.link(temporary, final)
            except FileExistsError:
                return True  # another worker wrote it first; theirs stands
            return False
        finally:
            os.unlink(temporary)


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs  # Linux (glibc, musl)
    except (OSError, AttributeError):
        return None
    syncfs.argtypes = [ctypes.c_int]
    syncfs.restype = ctypes.c_int
    return cast(Callable[[int], int], syncfs)


_SYNCFS = _load_syncfs()


def _flush(directory_fd: int | None) -> None:
    """Flush the outbox's file system: its new files and their directory entries.

    syncfs(2) waits for that one file system only. os.sync, where it is missing, waits for
    every one on the host: a busy database disk or a network mount would hold each batch.
    """
    if _SYNCFS is None or directory_fd is None:
        os.sync()
        return
    if _SYNCFS(directory_fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _write_fully(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
