"""Run the pipeline's worker until it is told to stop."""

from __future__ import annotations

from collections.abc import Callable

import faust
from pydantic import ValidationError

from connectors.base import Sink, SinkConfig
from connectors.registry import load_sink
from connectors.sink_process import in_a_process
from mobilise.errors import ConfigurationError
from mobilise.interpreter import tune_interpreter
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
    tune_interpreter()
    sink_class = load_sink(settings.sink)
    config = _sink_config(sink_class)
    sink: Sink = (  # type: ignore[type-arg]  # any sink's config
        in_a_process(sink_class, config, log_format=settings.log_format, log_level=settings.log_level)
        if settings.sink_process
        else sink_class(config)
    )
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
    # Left on, faust's terminal spinner sets the root logger to DEBUG, so every debug call
    # of the Kafka client (one per record) builds a log record that nothing prints.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


def _sink_config(sink_class: type[Sink]) -> SinkConfig:  # type: ignore[type-arg]  # any sink
    """The sink's settings from the environment, or an error naming each wrong variable."""
    if not issubclass(sink_class.Config, SinkConfig):
        raise ConfigurationError(
            f"the {sink_class.name} connector takes its settings from a connectors file, not from "
            f"MOBILISE_ variables: choose an email sink for MOBILISE_SINK, and declare "
            f"{sink_class.name} in MOBILISE_CONNECTORS_FILE"
        )
    try:
        config = sink_class.Config()
    except ValidationError as exc:
        problems = [
            f"MOBILISE_{str(error['loc'][0]).upper() if error['loc'] else '?'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        ]
        message = f"invalid settings for the {sink_class.name} sink: " + "; ".join(problems)
        raise ConfigurationError(message) from exc
    return config
