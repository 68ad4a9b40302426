"""OutboxSink: every alert becomes an RFC 5322 ``.eml`` file in a directory.

For development, demonstrations and tests, and for networks that hand mail to another
system by file drop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import jinja2

from mobilise.errors import RetryableError
from schemas import Alert

from .base import Sink, SinkOutcome
from .email_config import EmailSinkConfig
from .mime import to_bytes
from .rendering import render_alert

__all__ = ["OutboxConfig", "OutboxSink"]


class OutboxConfig(EmailSinkConfig):
    """Settings of the outbox sink (environment: ``MOBILISE_OUTBOX_DIR``, and the email ones)."""

    outbox_dir: Path = Path("outbox")
    """Directory that receives one ``<alert_id>.eml`` file per alert."""


class OutboxSink(Sink[OutboxConfig]):
    """Writes each alert to ``<outbox_dir>/<alert_id>.eml``.

    Delivery guarantee: exactly once per alert id. A file is written under a temporary
    name and then linked into place, which fails if the file exists; so a replayed alert
    never produces a second file, and a crash never leaves half a message behind. The
    batch is flushed to disk before any of its alerts is reported written.
    """

    name = "outbox"
    Config = OutboxConfig

    async def setup(self) -> None:
        """Create the outbox directory."""
        self.config.outbox_dir.mkdir(parents=True, exist_ok=True)
        self._identity = self.config.identity()

    async def deliver(self, alerts: Sequence[Alert]) -> Sequence[SinkOutcome]:
        """Write the batch off the event loop (file I/O blocks)."""
        if not self.config.outbox_dir.is_dir():
            raise RetryableError(f"the outbox {self.config.outbox_dir} is not a directory (any more)")
        return await asyncio.to_thread(self._write_all, alerts)

    def _write_all(self, alerts: Sequence[Alert]) -> list[SinkOutcome]:
        outcomes = [self._write_one(alert) for alert in alerts]
        if any(o.accepted and not o.duplicate for o in outcomes):
            # One flush for the whole batch, before any outcome is reported: a file per
            # fsync cost more than rendering it. (os.sync reaches the directory entries too.)
            os.sync()
        return outcomes

    def _write_one(self, alert: Alert) -> SinkOutcome:
        final = self.config.outbox_dir / f"{alert.alert_id}.eml"
        if final.exists():
            return SinkOutcome(
                alert_id=alert.alert_id, accepted=True, duplicate=True, provider_message_id=final.name
            )
        try:
            message = to_bytes(render_alert(alert, self._identity), self._identity, date_source=alert)
        except (jinja2.TemplateError, ValueError) as exc:
            # The same alert will fail the same way every time: a permanent failure.
            return SinkOutcome(alert_id=alert.alert_id, accepted=False, error=f"cannot render: {exc!r}")
        try:
            duplicate = self._write(final, message)
        except OSError as exc:
            return SinkOutcome(
                alert_id=alert.alert_id, accepted=False, retryable=True, error=f"cannot write: {exc}"
            )
        return SinkOutcome(
            alert_id=alert.alert_id, accepted=True, duplicate=duplicate, provider_message_id=final.name
        )

    def _write(self, final: Path, message: bytes) -> bool:
        """Write ``message`` under a temporary name and link it to ``final``; True if it existed."""
        # One writer per alert id at a time within a process; the pid keeps workers apart.
        temporary = final.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{final.name}")
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
