"""Small HTML pages for people, in English, French or Spanish.

The language comes from the browser's ``Accept-Language`` (the web process does not know
whose link it is before checking it, and the page must not say more than it needs to);
English when none of the three is asked for.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

import jinja2
from aiohttp import web

__all__ = ["PAGE_LANGUAGES", "PageKind", "negotiate_language", "page_response"]

PAGE_LANGUAGES = ("en", "fr", "es")
"""Languages the pages are written in; the first is the fallback."""

PageKind = Literal["confirm_unsubscribe", "unsubscribed", "invalid_link", "unavailable"]

_TEXTS: dict[str, dict[PageKind, tuple[str, tuple[str, ...], str | None]]] = {
    # kind: (title, paragraphs, button)
    "en": {
        "confirm_unsubscribe": (
            "Stop these alerts?",
            ("You will no longer receive this network's alerts by email.", "Press the button to confirm."),
            "Unsubscribe",
        ),
        "unsubscribed": (
            "You are unsubscribed",
            ("You will receive no more alerts. If this was a mistake, you can subscribe again at any time.",),
            None,
        ),
        "invalid_link": (
            "This link does not work",
            (
                "The unsubscribe link is incomplete or has been changed. Open it again from the "
                "email (the whole address), or follow the other unsubscribe instructions at the "
                "bottom of the email.",
            ),
            None,
        ),
        "unavailable": (
            "Please try again",
            (
                "We could not record your request just now, and nothing was changed. "
                "Please try again in a few minutes.",
            ),
            None,
        ),
    },
    "fr": {
        "confirm_unsubscribe": (
            "Ne plus recevoir ces alertes ?",
            (
                "Vous ne recevrez plus les alertes de ce réseau par e-mail.",
                "Appuyez sur le bouton pour confirmer.",
            ),
            "Me désabonner",
        ),
        "unsubscribed": (
            "Vous êtes désabonné·e",
            (
                "Vous ne recevrez plus d'alertes. Si c'est une erreur, vous pouvez vous réabonner "
                "à tout moment.",
            ),
            None,
        ),
        "invalid_link": (
            "Ce lien ne fonctionne pas",
            (
                "Le lien de désabonnement est incomplet ou a été modifié. Ouvrez-le à nouveau depuis "
                "l'e-mail (l'adresse entière), ou suivez les autres instructions de désabonnement en bas "
                "de l'e-mail.",
            ),
            None,
        ),
        "unavailable": (
            "Veuillez réessayer",
            (
                "Nous n'avons pas pu enregistrer votre demande pour le moment, et rien n'a été modifié. "
                "Veuillez réessayer dans quelques minutes.",
            ),
            None,
        ),
    },
    "es": {
        "confirm_unsubscribe": (
            "¿Dejar de recibir estas alertas?",
            ("Ya no recibirás por correo las alertas de esta red.", "Pulsa el botón para confirmar."),
            "Darme de baja",
        ),
        "unsubscribed": (
            "Te has dado de baja",
            ("No recibirás más alertas. Si fue un error, puedes volver a suscribirte cuando quieras.",),
            None,
        ),
        "invalid_link": (
            "Este enlace no funciona",
            (
                "El enlace para darse de baja está incompleto o ha sido modificado. Ábrelo de nuevo "
                "desde el correo (la dirección completa) o sigue las otras instrucciones para darte de "
                "baja al final del correo.",
            ),
            None,
        ),
        "unavailable": (
            "Inténtalo de nuevo",
            (
                "No hemos podido registrar tu solicitud en este momento y no se ha cambiado nada. "
                "Vuelve a intentarlo en unos minutos.",
            ),
            None,
        ),
    },
}

# The URL of these pages carries a token that acts for one person: it must not leak through
# a Referer header, a cache or a search engine, and the pages load nothing from anywhere.
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def negotiate_language(accept_language: str | None) -> str:
    """The page language for an ``Accept-Language`` header: the preferred one we have, else English.

    ``fr-CA`` counts as ``fr``; ``q=0`` excludes a language; among equal weights the
    first listed wins.
    """
    best: tuple[float, int, str] | None = None
    for position, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if primary in PAGE_LANGUAGES and weight > 0:
            candidate = (-weight, position, primary)
            best = candidate if best is None or candidate < best else best
    return best[2] if best is not None else PAGE_LANGUAGES[0]


@cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("mobilise.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("page.html.j2")


def page_response(kind: PageKind, language: str, *, status: int = 200) -> web.Response:
    """The HTML page ``kind`` in ``language`` (English if it has none), with privacy headers."""
    chosen = language if language in _TEXTS else PAGE_LANGUAGES[0]
    title, paragraphs, button = _TEXTS[chosen][kind]
    html = _template().render(language=chosen, title=title, paragraphs=paragraphs, button=button)
    return web.Response(
        text=html,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={**_HEADERS, "Content-Language": chosen},
    )
