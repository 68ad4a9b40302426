"""The web process: SendGrid's event webhook, signed unsubscribe links, health.

One aiohttp application (:func:`create_app`) to which each feature adds its routes;
:func:`run_web` serves it (``mobilise web``), :class:`BackgroundWebServer` serves it on a
thread (``mobilise dev``, tests).
"""

from .app import create_app
from .server import BackgroundWebServer, run_web

__all__ = ["BackgroundWebServer", "create_app", "run_web"]
