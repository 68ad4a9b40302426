"""Run the pipeline's worker until it is told to stop."""

from __future__ import annotations

from collections.abc import Callable

import faust

from connectors.registry import load_sink
from mobilise.settings import Settings

from .app import Pipeline, create_app

__all__ = ["run_worker"]


def run_worker(settings: Settings, observe: Callable[[Pipeline], None] | None = None) -> None:
    """Run a worker for ``settings`` in this process; returns when SIGINT/SIGTERM stop it.

    ``observe`` receives the pipeline before the worker starts (``mobilise dev`` uses it
    to see when the demo's subscribers are indexed).

    Raises:
        ConfigurationError: the sink or its settings are wrong.

    """
    sink_class = load_sink(settings.sink)
    sink = sink_class(sink_class.Config())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pipeline = create_app(settings, sink)
    if observe is not None:
        observe(pipeline)
    worker = faust.Worker(
        pipeline.app,
        loglevel="DEBUG" if settings.log_level == "debug" else "WARNING",
        quiet=True,
        redirect_stdouts=False,  # stdout carries our structured log lines
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
