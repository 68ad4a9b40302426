"""Interpreter settings of the processes that move alerts: a worker, and its sink's process."""

from __future__ import annotations

import gc
import sys

__all__ = ["tune_interpreter"]

SWITCH_INTERVAL = 0.0005
"""Seconds a thread holding the GIL runs before another may take it (Python's default: 0.005)."""


def tune_interpreter() -> None:
    """Set the collector and the GIL hand-over for many small objects and threads doing I/O."""
    # A fan-out allocates a few objects per person while the shards hold a few per
    # subscriber: with the default threshold (700) the cyclic collector walks the whole heap
    # every few hundred alerts. 50,000 costs a little memory and saved about 15 % of the
    # CPU per alert in bench/end_to_end.py.
    gc.set_threshold(50_000, 50, 1000)
    # Files are written and requests sent by threads that give the GIL back at every system
    # call, while rendering the next batch holds it: at the default 5 ms, each call waited
    # up to 5 ms to get it again, and writing 1,000 outbox files took 150-900 ms instead
    # of about 80.
    sys.setswitchinterval(SWITCH_INTERVAL)
