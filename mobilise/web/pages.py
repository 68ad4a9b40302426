"""Small HTML pages for people, in English, French or Spanish.

The language comes from the browser's ``Accept-Language`` (the web process does not know
whose link it is before checking it, and the page must not say more than it needs to);
English when none of the three is asked for. The activists' pages (subscribe, confirm,
preferences, my data) also take ``?lang=`` and the language a form was filled in
(:func:`request_language`).

Every page goes out with the same privacy headers (:func:`html_response`): their URLs
carry tokens that act for one person.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, Literal

import jinja2
from aiohttp import web

__all__ = [
    "PAGE_LANGUAGES",
    "LinkKind",
    "PageKind",
    "html_response",
    "negotiate_language",
    "page_response",
    "render_template",
    "request_language",
]

PAGE_LANGUAGES = ("en", "fr", "es")
"""Languages the pages are written in; the first is the fallback."""

PageKind = Literal[
    "confirm_unsubscribe",
    "unsubscribed",
    "invalid_link",
    "unavailable",
    "check_inbox",
    "confirm_subscription",
    "subscribed",
    "confirm_link_invalid",
    "not_pending",
    "invalid_personal_link",
    "unknown_subscriber",
    "forbidden",
    "rate_limited",
    "erased",
]

LinkKind = Literal["subscribe", "preferences", "my_data", "unsubscribe", "form"]
"""The links a page may offer, each with its label in every language."""

_LINKS: dict[str, dict[LinkKind, str]] = {
    "en": {
        "subscribe": "Subscribe to alerts",
        "preferences": "Manage your alerts",
        "my_data": "See or erase my data",
        "unsubscribe": "Unsubscribe",
        "form": "Back to the form",
    },
    "fr": {
        "subscribe": "S'abonner aux alertes",
        "preferences": "Gérer mes alertes",
        "my_data": "Voir ou effacer mes données",
        "unsubscribe": "Me désabonner",
        "form": "Revenir au formulaire",
    },
    "es": {
        "subscribe": "Suscribirse a las alertas",
        "preferences": "Gestionar mis alertas",
        "my_data": "Ver o borrar mis datos",
        "unsubscribe": "Darme de baja",
        "form": "Volver al formulario",
    },
}

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
        "check_inbox": (
            "Check your inbox",
            (
                "We have sent an email to the address you gave. Open the link in it to confirm your "
                "subscription; if you are already subscribed, the email has a link to manage your alerts "
                "instead.",
                "Nothing is sent to you until you confirm, and the link works for 7 days. No email after a "
                "few minutes? Look in your spam folder, or send the form again.",
            ),
            None,
        ),
        "confirm_subscription": (
            "Confirm your subscription",
            ("Press the button to start receiving alerts by email.",),
            "Confirm my subscription",
        ),
        "subscribed": (
            "You are subscribed",
            (
                "You will get an email when a case matches your choices. Every alert has a link to change "
                "them or to unsubscribe.",
            ),
            None,
        ),
        "confirm_link_invalid": (
            "This confirmation link does not work",
            (
                "It has expired (confirmation links work for 7 days), or it is incomplete or has been "
                "changed. Nothing was changed. Subscribe again to get a new link.",
            ),
            None,
        ),
        "not_pending": (
            "There is nothing to confirm",
            (
                "This subscription request is no longer pending: its data has been erased. You can "
                "subscribe again at any time.",
            ),
            None,
        ),
        "invalid_personal_link": (
            "This link does not work",
            (
                "The link is incomplete or has been changed. Open it again from one of our emails "
                "(the whole address).",
            ),
            None,
        ),
        "unknown_subscriber": (
            "We have no subscription for this link",
            (
                "Nothing is stored about the person this link was made for: their data may have been "
                "erased. You can subscribe again at any time.",
            ),
            None,
        ),
        "forbidden": (
            "Please send the form again",
            (
                "For your safety the form was not accepted, and nothing was changed: it was opened too "
                "long ago, or your browser did not send back our cookie. Go back to the form, reload it "
                "and send it again (cookies must be allowed for this site).",
            ),
            None,
        ),
        "rate_limited": (
            "Too many requests",
            (
                "This form has been sent too many times in a short while, and this time nothing was "
                "done. Please wait a few minutes and try again.",
            ),
            None,
        ),
        "erased": (
            "Your data is erased",
            ("We have deleted your subscription and what we stored about you. You will get no more alerts.",),
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
        "check_inbox": (
            "Consultez votre boîte de réception",
            (
                "Nous avons envoyé un e-mail à l'adresse indiquée. Ouvrez le lien qu'il contient pour "
                "confirmer votre abonnement ; si vous êtes déjà abonné·e, l'e-mail contient plutôt un lien "
                "pour gérer vos alertes.",
                "Rien ne vous est envoyé avant votre confirmation, et le lien est valable 7 jours. Pas "
                "d'e-mail après quelques minutes ? Regardez dans vos indésirables, ou renvoyez le "
                "formulaire.",
            ),
            None,
        ),
        "confirm_subscription": (
            "Confirmez votre abonnement",
            ("Appuyez sur le bouton pour commencer à recevoir les alertes par e-mail.",),
            "Confirmer mon abonnement",
        ),
        "subscribed": (
            "Vous êtes abonné·e",
            (
                "Vous recevrez un e-mail quand un cas correspond à vos choix. Chaque alerte contient un "
                "lien pour les modifier ou pour vous désabonner.",
            ),
            None,
        ),
        "confirm_link_invalid": (
            "Ce lien de confirmation ne fonctionne pas",
            (
                "Il a expiré (les liens de confirmation sont valables 7 jours), ou il est incomplet ou a "
                "été modifié. Rien n'a été modifié. Abonnez-vous à nouveau pour recevoir un nouveau lien.",
            ),
            None,
        ),
        "not_pending": (
            "Il n'y a rien à confirmer",
            (
                "Cette demande d'abonnement n'est plus en attente : ses données ont été effacées. Vous "
                "pouvez vous abonner à nouveau à tout moment.",
            ),
            None,
        ),
        "invalid_personal_link": (
            "Ce lien ne fonctionne pas",
            (
                "Le lien est incomplet ou a été modifié. Ouvrez-le à nouveau depuis l'un de nos e-mails "
                "(l'adresse entière).",
            ),
            None,
        ),
        "unknown_subscriber": (
            "Nous n'avons aucun abonnement pour ce lien",
            (
                "Rien n'est enregistré sur la personne pour qui ce lien a été créé : ses données ont "
                "peut-être été effacées. Vous pouvez vous abonner à nouveau à tout moment.",
            ),
            None,
        ),
        "forbidden": (
            "Veuillez renvoyer le formulaire",
            (
                "Par sécurité, le formulaire n'a pas été accepté et rien n'a été modifié : il a été ouvert "
                "il y a trop longtemps, ou votre navigateur n'a pas renvoyé notre cookie. Revenez au "
                "formulaire, rechargez-le et renvoyez-le (les cookies doivent être autorisés pour ce site).",
            ),
            None,
        ),
        "rate_limited": (
            "Trop de demandes",
            (
                "Ce formulaire a été envoyé trop de fois en peu de temps, et cette fois rien n'a été fait. "
                "Veuillez patienter quelques minutes et réessayer.",
            ),
            None,
        ),
        "erased": (
            "Vos données sont effacées",
            (
                "Nous avons supprimé votre abonnement et ce que nous avions enregistré sur vous. Vous ne "
                "recevrez plus d'alertes.",
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
        "check_inbox": (
            "Revisa tu bandeja de entrada",
            (
                "Hemos enviado un correo a la dirección que indicaste. Abre el enlace que contiene para "
                "confirmar tu suscripción; si ya estás suscrito o suscrita, el correo trae en cambio un "
                "enlace para gestionar tus alertas.",
                "No te enviamos nada hasta que confirmes, y el enlace vale 7 días. ¿No llega el correo en "
                "unos minutos? Mira en la carpeta de spam o vuelve a enviar el formulario.",
            ),
            None,
        ),
        "confirm_subscription": (
            "Confirma tu suscripción",
            ("Pulsa el botón para empezar a recibir las alertas por correo.",),
            "Confirmar mi suscripción",
        ),
        "subscribed": (
            "Te has suscrito",
            (
                "Recibirás un correo cuando un caso coincida con tus preferencias. Cada alerta trae un "
                "enlace para cambiarlas o para darte de baja.",
            ),
            None,
        ),
        "confirm_link_invalid": (
            "Este enlace de confirmación no funciona",
            (
                "Ha caducado (los enlaces de confirmación valen 7 días), o está incompleto o ha sido "
                "modificado. No se ha cambiado nada. Vuelve a suscribirte para recibir un enlace nuevo.",
            ),
            None,
        ),
        "not_pending": (
            "No hay nada que confirmar",
            (
                "Esta solicitud de suscripción ya no está pendiente: sus datos se han borrado. Puedes "
                "volver a suscribirte cuando quieras.",
            ),
            None,
        ),
        "invalid_personal_link": (
            "Este enlace no funciona",
            (
                "El enlace está incompleto o ha sido modificado. Ábrelo de nuevo desde uno de nuestros "
                "correos (la dirección completa).",
            ),
            None,
        ),
        "unknown_subscriber": (
            "No tenemos ninguna suscripción para este enlace",
            (
                "No guardamos nada sobre la persona para quien se creó este enlace: puede que sus datos "
                "se hayan borrado. Puedes volver a suscribirte cuando quieras.",
            ),
            None,
        ),
        "forbidden": (
            "Vuelve a enviar el formulario",
            (
                "Por seguridad no se ha aceptado el formulario y no se ha cambiado nada: se abrió hace "
                "demasiado tiempo, o tu navegador no devolvió nuestra cookie. Vuelve al formulario, "
                "recárgalo y envíalo de nuevo (las cookies deben estar permitidas para este sitio).",
            ),
            None,
        ),
        "rate_limited": (
            "Demasiadas solicitudes",
            (
                "Este formulario se ha enviado demasiadas veces en poco tiempo, y esta vez no se ha hecho "
                "nada. Espera unos minutos y vuelve a intentarlo.",
            ),
            None,
        ),
        "erased": (
            "Tus datos se han borrado",
            ("Hemos eliminado tu suscripción y lo que guardábamos sobre ti. No recibirás más alertas.",),
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


def request_language(request: web.Request, form_language: object = None) -> str:
    """The language of an activist's page: ``?lang=``, else the form's language, else the browser's.

    Args:
        request: The request (its ``lang`` query parameter and ``Accept-Language`` header).
        form_language: The language field of the form just posted, if any.

    """
    for candidate in (request.query.get("lang"), form_language):
        if isinstance(candidate, str) and candidate.strip().lower() in PAGE_LANGUAGES:
            return candidate.strip().lower()
    return negotiate_language(request.headers.get("Accept-Language"))


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
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("mobilise.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_template(name: str, **context: Any) -> str:
    """The template ``name`` of ``mobilise/web/templates`` rendered with ``context`` (autoescaped)."""
    return _environment().get_template(name).render(**context)


def html_response(html: str, language: str, *, status: int = 200) -> web.Response:
    """``html`` as a page in ``language``, with the privacy headers every page has."""
    return web.Response(
        text=html,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={**_HEADERS, "Content-Language": language},
    )


def page_response(
    kind: PageKind,
    language: str,
    *,
    status: int = 200,
    links: Sequence[tuple[LinkKind, str]] = (),
    hidden: Sequence[tuple[str, str]] = (),
) -> web.Response:
    """The HTML page ``kind`` in ``language`` (English if it has none), with privacy headers.

    Args:
        kind: Which page.
        language: Its language.
        status: The HTTP status.
        links: Links to offer under the text: what each is (its label) and where it goes.
        hidden: Hidden fields of the page's button form (a CSRF token), if it has a button.

    """
    chosen = language if language in _TEXTS else PAGE_LANGUAGES[0]
    title, paragraphs, button = _TEXTS[chosen][kind]
    html = render_template(
        "page.html.j2",
        language=chosen,
        title=title,
        paragraphs=paragraphs,
        button=button,
        hidden=hidden,
        links=[(href, _LINKS[chosen][link]) for link, href in links],
    )
    return html_response(html, chosen, status=status)
