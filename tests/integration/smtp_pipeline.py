"""A pipeline whose workers mail a real SMTP server, and the operator's commands against it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mobilise.broker import EmbeddedBroker
from mobilise.settings import load_settings
from mobilise.status import collect_status
from schemas import DeadLetter
from tests.unit.test_smtp_sink import SmtpServer

from .harness import PipelineHarness, Worker


class SmtpPipeline(PipelineHarness):
    """Workers deliver through the SMTP sink to ``server`` (plain SMTP on loopback, no login)."""

    def __init__(
        self, broker: EmbeddedBroker, tmp_path: Path, server: SmtpServer, *, partitions: int = 4, **env: str
    ) -> None:
        super().__init__(broker, tmp_path, partitions)
        self.server = server
        self.extra_env = env

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env.update(self.server.env(None, login=False), MOBILISE_SINK="smtp", MOBILISE_SMTP_TIMEOUT="10")
        env.update(self.extra_env)
        return env

    def cli(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """Run ``mobilise ARGS…`` against this pipeline."""
        return subprocess.run(
            [sys.executable, "-m", "mobilise", *args],
            env=self.env | {"MOBILISE_LOG_FORMAT": "json"} | extra_env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.model_validate_json(r.value) for r in self.read_topic(self.names.dead_letters)]

    def lag(self) -> int | None:
        """The group's total lag on the input topics, as `mobilise status` computes it."""
        report = collect_status(
            load_settings(
                kafka_bootstrap_servers=self.broker.bootstrap,
                app_id=self.app_id,
                topic_prefix=self.names.prefix,
            )
        )
        lags = report.group.lag
        return None if lags is None else sum(p.lag for p in lags)

    def restart_worker(self, **extra_env: str) -> tuple[Worker, Worker]:
        """Stop the (one) running worker and start another; both are returned, old first."""
        (old,) = self.workers
        assert old.stop() == 0
        self.workers.remove(old)
        new = self.start_worker(**extra_env)
        self.wait_ready()
        return old, new
