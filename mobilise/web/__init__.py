"""The web process: the activists' pages, the coordinators' API and console, SendGrid's webhook, health.

* The activists' pages (:mod:`~mobilise.web.subscribe`, :mod:`~mobilise.web.confirm`,
  :mod:`~mobilise.web.preferences`, :mod:`~mobilise.web.my_data`,
  :mod:`~mobilise.web.unsubscribe`): ``/subscribe`` with double opt-in, then
  ``/confirm/{token}``, ``/preferences/{token}``, ``/my-data/{token}`` and
  ``/unsubscribe/{token}``, reached by the signed links of the emails.
* The coordinators' JSON API under ``/api/v1`` (:mod:`~mobilise.web.coordinator_api`, its
  OpenAPI document at ``/api/v1/openapi.json``) and their console under ``/console``
  (:mod:`~mobilise.web.console`).
* SendGrid's event webhook, ``POST /webhooks/sendgrid`` (:mod:`~mobilise.web.sendgrid_webhook`).
* Health: ``/healthz`` and ``/readyz`` (:mod:`~mobilise.web.health`).

One aiohttp application (:func:`create_app`) to which each feature adds its routes;
:func:`run_web` serves it (``mobilise web``), :class:`BackgroundWebServer` serves it on a
thread (``mobilise dev``, tests).
"""

from .app import create_app
from .server import BackgroundWebServer, run_web

__all__ = ["BackgroundWebServer", "create_app", "run_web"]
