"""``/my-data/{token}``: what is stored about a person, in plain words, and erasing it.

Reached from the preferences page and the "already subscribed" email, with the same
token as the preferences page (purpose "preferences": whoever may change someone's alerts
may see them).

* ``GET`` shows every field of the stored subscription, whether the person gets alerts
  (or why not: pending confirmation, or suppressed, with the reason and the date), what
  else is kept elsewhere, and an "Erase my data" form with a confirmation checkbox.
* ``POST`` (CSRF checked; without the checkbox ticked: 400, the page again with the
  message next to it) publishes a tombstone for the subscriber id on the subscriptions
  topic: the workers drop the person from their tables and send them nothing more, and
  compaction removes their records from the topic. The page saying it is done is shown
  once Kafka acknowledged it (503 otherwise: nothing was changed).
"""

from __future__ import annotations

from datetime import datetime

import structlog
from aiohttp import web

from schemas import SuppressionReason, country_name

from . import signed_pages
from .forms import (
    CSRF_FIELD,
    form_texts,
    frequency_choices,
    home_zone,
    interest_label,
    language_choices,
    language_switch,
    region_label,
    status_label,
    with_csrf,
)
from .pages import html_response, page_response, render_template, request_language
from .signed_pages import SignedLink
from .state import STATE
from .subscribers_view import SubscriberState

__all__ = ["add_routes"]

log = structlog.get_logger(__name__)

# The preferences page's token: whoever may change someone's alerts may see them.
_LINK = SignedLink(
    purpose="preferences",
    path="/my-data",
    invalid_event="web.my_data_link_invalid",
)
_ERASE_FIELD = "erase"

_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Your data",
        "intro": "This is everything we keep about you to send you alerts, as it is stored now.",
        "subscriber_id": "Your identifier",
        "email": "Email address",
        "name": "Name",
        "language": "Language of the alerts",
        "home_country": "Where you live",
        "time_zone": "Time zone",
        "time_zone_home": "Not given: we use {zone}, the time zone of where you live",
        "time_zone_utc": "Not given: we use UTC",
        "places": "Places you follow",
        "interests": "Issues you follow",
        "brands": "Brands you follow",
        "statuses": "Case updates you get",
        "frequency": "How often",
        "confirmed": "Address confirmed",
        "since": "Subscribed or last changed",
        "status": "Status",
        "none": "None",
        "worldwide": "Everywhere in the world",
        "yes": "Yes",
        "no": "No",
        "active": "You get alerts.",
        "pending": "You get no alerts until you confirm your address with the link we emailed you.",
        "suppressed": "You get no alerts since {date}: {reason}.",
        "no_subscription": "We no longer have your address or your choices, only the fact above.",
        "elsewhere": (
            "Elsewhere: copies of the alerts sent to you, with your address, are kept for up to 7 days "
            "so that a failed delivery can be tried again; what happened to each alert (sent, bounced, "
            "opened) is kept under your identifier, without your address."
        ),
        "erase_title": "Erase my data",
        "erase_text": (
            "This deletes your subscription and everything above. You will get no more alerts; to "
            "get them again you would have to subscribe again."
        ),
        "erase_confirm": "I understand: erase my data and stop my alerts",
        "erase_button": "Erase my data",
        "erase_missing": "Tick the box to confirm that you want your data erased.",
        "back": "Back to my alerts",
    },
    "fr": {
        "title": "Vos données",
        "intro": "Voici tout ce que nous gardons sur vous pour vous envoyer les alertes, tel que c'est "
        "enregistré maintenant.",
        "subscriber_id": "Votre identifiant",
        "email": "Adresse e-mail",
        "name": "Nom",
        "language": "Langue des alertes",
        "home_country": "Où vous habitez",
        "time_zone": "Fuseau horaire",
        "time_zone_home": "Non indiqué : nous utilisons {zone}, le fuseau du pays où vous habitez",
        "time_zone_utc": "Non indiqué : nous utilisons UTC",
        "places": "Lieux suivis",
        "interests": "Sujets suivis",
        "brands": "Marques suivies",
        "statuses": "Étapes des cas reçues",
        "frequency": "Fréquence",
        "confirmed": "Adresse confirmée",
        "since": "Abonnement ou dernière modification",
        "status": "État",
        "none": "Aucun",
        "worldwide": "Partout dans le monde",
        "yes": "Oui",
        "no": "Non",
        "active": "Vous recevez les alertes.",
        "pending": "Vous ne recevez aucune alerte tant que vous n'avez pas confirmé votre adresse avec le "
        "lien envoyé par e-mail.",
        "suppressed": "Vous ne recevez plus d'alertes depuis le {date} : {reason}.",
        "no_subscription": "Nous n'avons plus votre adresse ni vos choix, seulement le fait ci-dessus.",
        "elsewhere": (
            "Ailleurs : des copies des alertes qui vous ont été envoyées, avec votre adresse, sont gardées "
            "7 jours au plus pour pouvoir renvoyer celles qui ont échoué ; ce qu'il est advenu de chaque "
            "alerte (envoyée, rejetée, ouverte) est gardé sous votre identifiant, sans votre adresse."
        ),
        "erase_title": "Effacer mes données",
        "erase_text": (
            "Cela supprime votre abonnement et tout ce qui est ci-dessus. Vous ne recevrez plus d'alertes ; "
            "pour en recevoir à nouveau, il faudrait vous réabonner."
        ),
        "erase_confirm": "J'ai compris : effacer mes données et arrêter mes alertes",
        "erase_button": "Effacer mes données",
        "erase_missing": "Cochez la case pour confirmer que vous voulez effacer vos données.",
        "back": "Revenir à mes alertes",
    },
    "es": {
        "title": "Tus datos",
        "intro": "Esto es todo lo que guardamos sobre ti para enviarte las alertas, tal como está guardado "
        "ahora.",
        "subscriber_id": "Tu identificador",
        "email": "Correo electrónico",
        "name": "Nombre",
        "language": "Idioma de las alertas",
        "home_country": "Dónde vives",
        "time_zone": "Zona horaria",
        "time_zone_home": "No indicada: usamos {zone}, la zona horaria del país donde vives",
        "time_zone_utc": "No indicada: usamos UTC",
        "places": "Lugares que sigues",
        "interests": "Temas que sigues",
        "brands": "Marcas que sigues",
        "statuses": "Novedades de los casos que recibes",
        "frequency": "Frecuencia",
        "confirmed": "Dirección confirmada",
        "since": "Suscripción o último cambio",
        "status": "Estado",
        "none": "Ninguno",
        "worldwide": "En todo el mundo",
        "yes": "Sí",
        "no": "No",
        "active": "Recibes las alertas.",
        "pending": "No recibes alertas hasta que confirmes tu dirección con el enlace que te enviamos por "
        "correo.",
        "suppressed": "No recibes alertas desde el {date}: {reason}.",
        "no_subscription": "Ya no tenemos tu dirección ni tus preferencias, solo el hecho de arriba.",
        "elsewhere": (
            "En otros lugares: las copias de las alertas que te enviamos, con tu dirección, se guardan 7 "
            "días como máximo para poder reenviar las que fallaron; lo que pasó con cada alerta (enviada, "
            "rechazada, abierta) se guarda con tu identificador, sin tu dirección."
        ),
        "erase_title": "Borrar mis datos",
        "erase_text": (
            "Esto elimina tu suscripción y todo lo anterior. No recibirás más alertas; para volver a "
            "recibirlas tendrías que suscribirte de nuevo."
        ),
        "erase_confirm": "Lo entiendo: borrar mis datos y detener mis alertas",
        "erase_button": "Borrar mis datos",
        "erase_missing": "Marca la casilla para confirmar que quieres borrar tus datos.",
        "back": "Volver a mis alertas",
    },
}

_REASONS: dict[str, dict[SuppressionReason, str]] = {
    "en": {
        SuppressionReason.BOUNCE: "your mail server refused our emails",
        SuppressionReason.DROPPED: "our email provider could not send to this address",
        SuppressionReason.SPAM_REPORT: "an alert was marked as spam",
        SuppressionReason.UNSUBSCRIBE: "you unsubscribed through our email provider",
        SuppressionReason.GROUP_UNSUBSCRIBE: "you left the alerts at our email provider",
        SuppressionReason.LINK_UNSUBSCRIBE: "you unsubscribed with the link in an email",
    },
    "fr": {
        SuppressionReason.BOUNCE: "votre serveur de messagerie a refusé nos e-mails",
        SuppressionReason.DROPPED: "notre fournisseur d'e-mail n'a pas pu écrire à cette adresse",
        SuppressionReason.SPAM_REPORT: "une alerte a été signalée comme indésirable",
        SuppressionReason.UNSUBSCRIBE: "vous vous êtes désabonné·e chez notre fournisseur d'e-mail",
        SuppressionReason.GROUP_UNSUBSCRIBE: "vous avez quitté les alertes chez notre fournisseur d'e-mail",
        SuppressionReason.LINK_UNSUBSCRIBE: "vous vous êtes désabonné·e avec le lien d'un e-mail",
    },
    "es": {
        SuppressionReason.BOUNCE: "tu servidor de correo rechazó nuestros correos",
        SuppressionReason.DROPPED: "nuestro proveedor de correo no pudo enviar a esta dirección",
        SuppressionReason.SPAM_REPORT: "una alerta se marcó como spam",
        SuppressionReason.UNSUBSCRIBE: "te diste de baja a través de nuestro proveedor de correo",
        SuppressionReason.GROUP_UNSUBSCRIBE: "dejaste las alertas en nuestro proveedor de correo",
        SuppressionReason.LINK_UNSUBSCRIBE: "te diste de baja con el enlace de un correo",
    },
}


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %Z")


def _rows(
    current: SubscriberState, subscriber: str, language: str, digest_weekday: str
) -> list[tuple[str, str]]:
    """``(label, value)`` of everything stored, in the person's words."""
    words = _TEXTS[language]
    rows = [(words["subscriber_id"], subscriber)]
    subscription = current.subscription
    suppression = current.suppression if current.suppressed else None
    if suppression is not None:
        status = words["suppressed"].format(
            date=_when(suppression.occurred_at), reason=_REASONS[language][suppression.reason]
        )
    elif subscription is not None and subscription.confirmed:
        status = words["active"]
    else:
        status = words["pending"]
    rows.append((words["status"], status))
    if subscription is None:
        return rows
    places = [words["worldwide"]] if subscription.worldwide else []
    places += [region_label(r.value, language) for r in subscription.regions]
    places += [country_name(c) for c in subscription.countries]
    frequencies = dict(frequency_choices(language, digest_weekday))
    languages = dict(language_choices())
    zone = home_zone(subscription.home_country or "")
    if subscription.time_zone:
        time_zone = subscription.time_zone
    else:
        time_zone = words["time_zone_home"].format(zone=zone) if zone else words["time_zone_utc"]

    def listed(items: list[str]) -> str:
        return ", ".join(items) if items else words["none"]

    rows += [
        (words["email"], str(subscription.email)),
        (words["name"], subscription.name or words["none"]),
        (words["language"], languages.get(subscription.language, subscription.language)),
        (
            words["home_country"],
            country_name(subscription.home_country) if subscription.home_country else words["none"],
        ),
        (words["time_zone"], time_zone),
        (words["places"], listed(places)),
        (words["interests"], listed([interest_label(i, language) for i in subscription.interests])),
        (words["brands"], listed(list(subscription.brands))),
        (words["statuses"], listed([status_label(s.value, language) for s in subscription.statuses])),
        (words["frequency"], frequencies.get(subscription.frequency, subscription.frequency)),
        (words["confirmed"], words["yes" if subscription.confirmed else "no"]),
        (words["since"], _when(subscription.created_at)),
    ]
    return rows


def _page(
    request: web.Request,
    language: str,
    subscriber: str,
    current: SubscriberState,
    *,
    missing: bool = False,
    status: int = 200,
) -> web.Response:
    words = _TEXTS[language]
    base = request.app[STATE].settings.public_url or ""

    def page(token: str) -> web.Response:
        html = render_template(
            "my_data.html.j2",
            language=language,
            title=words["title"],
            t={**form_texts(language), **words},
            errors={_ERASE_FIELD: words["erase_missing"]} if missing else {},
            switch=language_switch(language),
            rows=_rows(current, subscriber, language, request.app[STATE].settings.digest_weekday),
            no_subscription=current.subscription is None,
            csrf_field=CSRF_FIELD,
            csrf_token=token,
            erase_field=_ERASE_FIELD,
            back=f"{base}/preferences/{request.match_info['token']}?lang={language}",
        )
        return html_response(html, language, status=status)

    return with_csrf(request, signed_pages.csrf_guard(request), page)


async def _show(request: web.Request) -> web.Response:
    visit = await signed_pages.visit(request, _LINK, request_language(request))
    if isinstance(visit, web.Response):
        return visit
    if visit.current is None:
        return signed_pages.unknown_subscriber(visit.language)
    return _page(request, visit.language, visit.subscriber, visit.current)


async def _erase(request: web.Request) -> web.Response:
    visit = await signed_pages.visit(request, _LINK, request_language(request))
    if isinstance(visit, web.Response):
        return visit
    assert visit.form is not None  # a POST's form, read and checked by visit
    current, subscriber, language = visit.current, visit.subscriber, visit.language
    if visit.form.get(_ERASE_FIELD) != "yes":
        if current is None:
            return signed_pages.unknown_subscriber(language)
        return _page(request, language, subscriber, current, missing=True, status=400)
    # Even for a person the view does not know: a tombstone more is harmless, and erasing
    # is what they asked for.
    failed = await signed_pages.record(
        request, visit, None, now=request.app[STATE].clock(), failure_event="web.erasure_not_recorded"
    )
    if failed is not None:
        return failed
    log.info("web.subscriber_erased", subscriber_id=subscriber, was_known=current is not None)
    return page_response("erased", language, links=[("subscribe", "/subscribe")])


def add_routes(app: web.Application) -> None:
    """Add ``GET`` and ``POST /my-data/{token}`` to ``app`` (after :data:`STATE` is set)."""
    signed_pages.install(app)
    app.router.add_get("/my-data/{token}", _show)
    app.router.add_post("/my-data/{token}", _erase)
