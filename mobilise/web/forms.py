"""The subscription form: its fields and a Subscription, its messages, and its CSRF tokens.

The subscribe page and the preferences page show the same form (the preferences page
without the address: a new address is a new subscription). Pure but for the last two
points:

* :class:`FormValues` is what the form holds, as typed: :func:`read_form` reads it from a
  posted form, :func:`values_of` from a stored Subscription.
* :func:`check` names each field that is wrong, with an error code; :func:`error_message`
  says it in English, French or Spanish, to be shown next to the field.
  :func:`to_subscription` makes the Subscription of values that passed.
* The choices offered (regions with their countries, interests, case statuses,
  frequencies, languages, time zones) come from the schemas' vocabularies, labelled in
  each language (country names are the schemas' English short names, time zones the IANA
  names, from :func:`zoneinfo.available_timezones`).
* :class:`CsrfGuard` makes and checks CSRF tokens (double submit: a random per-browser
  cookie, and in each form an HMAC of it under the secret key with an expiry);
  :func:`csrf_token`, :func:`set_csrf_cookie` and :func:`csrf_valid` use it on requests;
  :func:`with_csrf` answers a page with a form, :func:`forged_refusal` refuses a post
  without a valid token, the same way on every page.
* :func:`render_form` renders the page of the form (``subscription_form.html.j2``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import unicodedata
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, Literal, get_args

import structlog
from aiohttp import web
from pydantic import EmailStr, SecretStr, TypeAdapter, ValidationError

from schemas import (
    CaseStatus,
    Region,
    Subscription,
    brand_key,
    country_name,
    known_countries,
    known_interests,
    region_of,
)
from schemas.subscription import Frequency
from schemas.wave import check_time_zone, country_zone

from .pages import PAGE_LANGUAGES, page_response, render_template
from .state import STATE

__all__ = [
    "ALERT_LANGUAGES",
    "CSRF",
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_MAX_AGE",
    "MAX_BRANDS",
    "CsrfGuard",
    "ErrorCode",
    "FieldName",
    "FormValues",
    "RegionChoice",
    "ZoneGroup",
    "check",
    "csrf_token",
    "csrf_valid",
    "error_message",
    "forged_refusal",
    "form_texts",
    "frequency_choices",
    "home_zone",
    "install_csrf",
    "interest_choices",
    "interest_label",
    "language_choices",
    "language_switch",
    "read_form",
    "region_choices",
    "region_label",
    "render_form",
    "set_csrf_cookie",
    "status_choices",
    "status_label",
    "time_zone_choices",
    "time_zone_names",
    "to_subscription",
    "values_of",
    "with_csrf",
]

log = structlog.get_logger(__name__)

ALERT_LANGUAGES = ("en", "fr", "es")
"""Languages the form offers for alerts: those the alert emails have templates in."""
MAX_BRANDS = 50
"""Most brands one subscription may follow."""
_MAX_NAME = 200
_MAX_BRAND = 200
_MAX_FIELD_CHARS = 10_000

FieldName = Literal[
    "email",
    "name",
    "language",
    "home_country",
    "time_zone",
    "places",
    "interests",
    "brands",
    "statuses",
    "frequency",
]
"""A field of the form, as errors name it (the id of the element the message sits next to)."""

ErrorCode = Literal[
    "email_missing",
    "email_invalid",
    "name_too_long",
    "language_unknown",
    "home_country_unknown",
    "time_zone_unknown",
    "places_missing",
    "places_unknown",
    "topics_missing",
    "interests_unknown",
    "brands_too_long",
    "brands_too_many",
    "statuses_missing",
    "statuses_unknown",
    "frequency_unknown",
]

_EMAIL: TypeAdapter[str] = TypeAdapter(EmailStr)


@dataclass(frozen=True)
class FormValues:
    """What the form holds: the text fields as typed, the choices as their values."""

    email: str = ""
    name: str = ""
    language: str = "en"
    home_country: str = ""
    """Where the person lives (a country code), or empty: they did not say."""
    time_zone: str = ""
    """The person's IANA time zone, or empty: their home country's (else UTC)."""
    worldwide: bool = False
    regions: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    interests: tuple[str, ...] = ()
    brands: str = ""
    """Brand names separated by commas, as typed."""
    statuses: tuple[str, ...] = field(default_factory=lambda: tuple(s.value for s in CaseStatus))
    frequency: str = get_args(Frequency)[0]

    @property
    def brand_list(self) -> tuple[str, ...]:
        """The brands as a list: split at commas, trimmed, without repeats (same brand key)."""
        seen: set[str] = set()
        brands = []
        for part in self.brands.split(","):
            name = " ".join(part.split())
            if name and brand_key(name) not in seen:
                seen.add(brand_key(name))
                brands.append(name)
        return tuple(brands)


def _texts(data: Mapping[str, Any], name: str) -> tuple[str, ...]:
    getall = getattr(data, "getall", None)
    raw = getall(name, []) if getall is not None else ([data[name]] if name in data else [])
    # Uploaded files and oversized values are not what this form sends: ignored.
    return tuple(v.strip() for v in raw if isinstance(v, str) and len(v) <= _MAX_FIELD_CHARS and v.strip())


def _text(data: Mapping[str, Any], name: str, default: str = "") -> str:
    values = _texts(data, name)
    return values[0] if values else default


def read_form(data: Mapping[str, Any], *, default_language: str = "en") -> FormValues:
    """The values of a posted form (``request.post()``; a repeated field gives each value).

    Nothing is validated here: :func:`check` says what is wrong, and the values are shown
    again as typed.
    """
    return FormValues(
        email=_text(data, "email"),
        name=_text(data, "name"),
        language=_text(data, "language", default_language),
        home_country=_text(data, "home_country"),
        time_zone=_text(data, "time_zone"),
        worldwide=_text(data, "worldwide") == "yes",
        regions=_texts(data, "regions"),
        countries=_texts(data, "countries"),
        interests=_texts(data, "interests"),
        brands=_text(data, "brands"),
        statuses=_texts(data, "statuses"),
        frequency=_text(data, "frequency", get_args(Frequency)[0]),
    )


def values_of(subscription: Subscription) -> FormValues:
    """The form filled with ``subscription``'s choices (and its address)."""
    return FormValues(
        email=str(subscription.email),
        name=subscription.name or "",
        language=subscription.language,
        home_country=subscription.home_country or "",
        time_zone=subscription.time_zone or "",
        worldwide=subscription.worldwide,
        regions=tuple(r.value for r in subscription.regions),
        countries=tuple(subscription.countries),
        interests=tuple(subscription.interests),
        brands=", ".join(subscription.brands),
        statuses=tuple(s.value for s in subscription.statuses),
        frequency=subscription.frequency,
    )


def check(values: FormValues, *, with_email: bool) -> dict[FieldName, ErrorCode]:
    """Each field of ``values`` that cannot make a Subscription, with why (empty: all good).

    Args:
        values: The form's values.
        with_email: Whether the form has the address (the subscribe form; the preferences
            form keeps the stored one).

    """
    errors: dict[FieldName, ErrorCode] = {}
    if with_email:
        if not values.email:
            errors["email"] = "email_missing"
        else:
            try:
                _EMAIL.validate_python(values.email)
            except ValidationError:
                errors["email"] = "email_invalid"
    if len(values.name) > _MAX_NAME:
        errors["name"] = "name_too_long"
    if values.language not in ALERT_LANGUAGES:
        errors["language"] = "language_unknown"
    if values.home_country and values.home_country.upper() not in known_countries():
        errors["home_country"] = "home_country_unknown"
    if values.time_zone and values.time_zone not in time_zone_names():
        errors["time_zone"] = "time_zone_unknown"
    regions = {r.value for r in Region}
    if any(r not in regions for r in values.regions) or any(
        c.upper() not in known_countries() for c in values.countries
    ):
        errors["places"] = "places_unknown"
    elif not (values.worldwide or values.regions or values.countries):
        errors["places"] = "places_missing"
    brands = values.brand_list
    if any(i not in _interests() for i in values.interests):
        errors["interests"] = "interests_unknown"
    elif not (values.interests or brands):
        errors["interests"] = "topics_missing"
    if any(len(b) > _MAX_BRAND for b in brands):
        errors["brands"] = "brands_too_long"
    elif len(brands) > MAX_BRANDS:
        errors["brands"] = "brands_too_many"
    statuses = {s.value for s in CaseStatus}
    if any(s not in statuses for s in values.statuses):
        errors["statuses"] = "statuses_unknown"
    elif not values.statuses:
        errors["statuses"] = "statuses_missing"
    if values.frequency not in get_args(Frequency):
        errors["frequency"] = "frequency_unknown"
    return errors


def to_subscription(
    values: FormValues,
    *,
    email: str,
    subscriber_id: str | None,
    confirmed: bool,
    created_at: datetime,
) -> Subscription:
    """The Subscription of ``values`` that passed :func:`check`.

    Args:
        values: The form's values.
        email: The address (the form's on the subscribe page, the stored one on the preferences page).
        subscriber_id: Whose subscription it is; None to derive it from the address.
        confirmed: Whether the address is confirmed.
        created_at: Its time (now: a newer subscription outranks an earlier suppression).

    Raises:
        ValidationError: the values did not pass :func:`check`.

    """
    return Subscription.model_validate(
        {
            **({"subscriber_id": subscriber_id} if subscriber_id else {}),
            "email": email,
            "name": values.name or None,
            "language": values.language,
            "home_country": values.home_country.upper() or None,
            "time_zone": values.time_zone or None,
            "worldwide": values.worldwide,
            "regions": tuple(dict.fromkeys(Region(r) for r in values.regions)),
            "countries": tuple(dict.fromkeys(c.upper() for c in values.countries)),
            "interests": tuple(dict.fromkeys(values.interests)),
            "brands": values.brand_list,
            # In the order of the vocabulary, whatever the order of the form.
            "statuses": tuple(s for s in CaseStatus if s.value in values.statuses),
            "frequency": values.frequency,
            "confirmed": confirmed,
            "created_at": created_at,
        }
    )


def _interests() -> frozenset[str]:
    # Read on each call, as the schemas do: the vocabulary is the environment's.
    return known_interests()


# -- words -----------------------------------------------------------------------------------

_ERRORS: dict[str, dict[ErrorCode, str]] = {
    "en": {
        "email_missing": "Enter your email address.",
        "email_invalid": "Enter an email address like name@example.org.",
        "name_too_long": f"Your name must be {_MAX_NAME} characters or fewer.",
        "language_unknown": "Choose one of the languages offered.",
        "home_country_unknown": "Choose the country you live in from the list, or “I would rather not say”.",
        "time_zone_unknown": "Choose your time zone from the list, or “From my home country”.",
        "places_missing": "Choose at least one region or country, or “Everywhere in the world”.",
        "places_unknown": "Choose regions and countries from the list.",
        "topics_missing": "Choose at least one issue, or name at least one brand below.",
        "interests_unknown": "Choose issues from the list.",
        "brands_too_long": f"Each brand name must be {_MAX_BRAND} characters or fewer.",
        "brands_too_many": f"Name at most {MAX_BRANDS} brands.",
        "statuses_missing": "Choose at least one kind of case update.",
        "statuses_unknown": "Choose case updates from the list.",
        "frequency_unknown": "Choose how often you want alerts.",
    },
    "fr": {
        "email_missing": "Saisissez votre adresse e-mail.",
        "email_invalid": "Saisissez une adresse e-mail de la forme nom@exemple.org.",
        "name_too_long": f"Votre nom doit faire au plus {_MAX_NAME} caractères.",
        "language_unknown": "Choisissez l'une des langues proposées.",
        "home_country_unknown": "Choisissez votre pays dans la liste, ou « Je préfère ne pas le dire ».",
        "time_zone_unknown": "Choisissez votre fuseau horaire dans la liste, ou « Celui de mon pays ».",
        "places_missing": "Choisissez au moins une région ou un pays, ou « Partout dans le monde ».",
        "places_unknown": "Choisissez les régions et les pays dans la liste.",
        "topics_missing": "Choisissez au moins un sujet, ou indiquez au moins une marque ci-dessous.",
        "interests_unknown": "Choisissez les sujets dans la liste.",
        "brands_too_long": f"Chaque nom de marque doit faire au plus {_MAX_BRAND} caractères.",
        "brands_too_many": f"Indiquez au plus {MAX_BRANDS} marques.",
        "statuses_missing": "Choisissez au moins une étape des cas.",
        "statuses_unknown": "Choisissez les étapes des cas dans la liste.",
        "frequency_unknown": "Choisissez à quelle fréquence vous voulez les alertes.",
    },
    "es": {
        "email_missing": "Escribe tu dirección de correo.",
        "email_invalid": "Escribe una dirección de correo como nombre@ejemplo.org.",
        "name_too_long": f"Tu nombre debe tener como máximo {_MAX_NAME} caracteres.",
        "language_unknown": "Elige uno de los idiomas propuestos.",
        "home_country_unknown": "Elige de la lista el país donde vives, o «Prefiero no decirlo».",
        "time_zone_unknown": "Elige tu zona horaria de la lista, o «La de mi país».",
        "places_missing": "Elige al menos una región o un país, o «En todo el mundo».",
        "places_unknown": "Elige las regiones y los países de la lista.",
        "topics_missing": "Elige al menos un tema, o escribe al menos una marca más abajo.",
        "interests_unknown": "Elige los temas de la lista.",
        "brands_too_long": f"Cada nombre de marca debe tener como máximo {_MAX_BRAND} caracteres.",
        "brands_too_many": f"Escribe como máximo {MAX_BRANDS} marcas.",
        "statuses_missing": "Elige al menos un tipo de novedad de los casos.",
        "statuses_unknown": "Elige las novedades de los casos de la lista.",
        "frequency_unknown": "Elige con qué frecuencia quieres recibir las alertas.",
    },
}

_FORM: dict[str, dict[str, str]] = {
    "en": {
        "subscribe_title": "Get alerts about workers' rights cases",
        "subscribe_intro": (
            "Tell us what you care about, and we will email you when a case calls for action. "
            "We send a confirmation link first: nothing else is sent until you open it."
        ),
        "preferences_title": "Your alerts",
        "preferences_intro": "Change what you hear about. The next case update uses your new choices.",
        "sent_to": "Alerts are sent to",
        "new_address": "To use another address, subscribe with it and unsubscribe this one.",
        "saved": "Your choices are saved.",
        "suppressed": (
            "You are unsubscribed at the moment, so you get no alerts. Saving these choices subscribes "
            "you again."
        ),
        "error_summary": "There is a problem",
        "error_title": "Error: ",
        "languages": "Language of this page",
        "email": "Email address",
        "email_hint": "We send a confirmation link to this address. It is never shown to anyone.",
        "name": "Your name (optional)",
        "name_hint": "Only to greet you in the emails.",
        "language": "Language of the alerts",
        "home_country": "Where do you live? (optional)",
        "home_country_hint": (
            "Some actions differ from place to place, like a protest at a store in your city: we use "
            "your country only to pick the action meant for where you live, never to choose which cases "
            "you hear about."
        ),
        "home_country_none": "I would rather not say",
        "time_zone": "Your time zone (optional)",
        "time_zone_hint": (
            "Some actions are timed to reach everyone at the same local hour, such as 9:00 in each "
            "person's morning, and digests come in your morning: this is the clock we use. With “From my "
            "home country”, we use the time zone of the country you live in when it has only one, "
            "otherwise UTC."
        ),
        "time_zone_default": "From my home country",
        "time_zone_default_known": "From my home country ({zone})",
        "time_zone_other": "Other",
        "places": "Where?",
        "places_hint": "Cases in the places you choose. Open a region to choose single countries.",
        "worldwide": "Everywhere in the world",
        "whole_region": "All of {region}",
        "countries_of": "Countries of {region}",
        "interests": "Which issues?",
        "interests_hint": "Cases about any of the issues you choose.",
        "brands": "Brands to follow (optional)",
        "brands_hint": "Separate names with commas, e.g. H&M, Zara. You get every case about these brands.",
        "statuses": "Which case updates?",
        "statuses_hint": "A case is updated as it goes on; choose the steps you want to hear about.",
        "frequency": "How often?",
        "frequency_hint": (
            "A digest gathers every matching case update since the one before. An urgent action may "
            "still be sent at once."
        ),
        "subscribe": "Subscribe",
        "save": "Save my choices",
        "privacy": (
            "We keep your address and choices only to send you these alerts. Every email has links to "
            "change them, to unsubscribe, and to see and erase your data."
        ),
    },
    "fr": {
        "subscribe_title": "Recevoir les alertes sur les droits des travailleurs et travailleuses",
        "subscribe_intro": (
            "Dites-nous ce qui vous importe : nous vous écrirons quand un cas appelle à agir. Nous "
            "envoyons d'abord un lien de confirmation : rien d'autre n'est envoyé avant que vous l'ouvriez."
        ),
        "preferences_title": "Vos alertes",
        "preferences_intro": "Modifiez ce que vous recevez. La prochaine mise à jour d'un cas tient compte "
        "de vos nouveaux choix.",
        "sent_to": "Les alertes sont envoyées à",
        "new_address": "Pour utiliser une autre adresse, abonnez-la et désabonnez celle-ci.",
        "saved": "Vos choix sont enregistrés.",
        "suppressed": (
            "Vous êtes désabonné·e pour le moment et ne recevez aucune alerte. Enregistrer ces choix "
            "vous abonne à nouveau."
        ),
        "error_summary": "Il y a un problème",
        "error_title": "Erreur : ",
        "languages": "Langue de cette page",
        "email": "Adresse e-mail",
        "email_hint": "Nous envoyons un lien de confirmation à cette adresse. Elle n'est montrée à personne.",
        "name": "Votre nom (facultatif)",
        "name_hint": "Seulement pour vous saluer dans les e-mails.",
        "language": "Langue des alertes",
        "home_country": "Où habitez-vous ? (facultatif)",
        "home_country_hint": (
            "Certaines actions changent d'un endroit à l'autre, comme un rassemblement devant un magasin "
            "de votre ville : votre pays sert uniquement à choisir l'action prévue là où vous habitez, "
            "jamais à choisir les cas dont vous êtes informé·e."
        ),
        "home_country_none": "Je préfère ne pas le dire",
        "time_zone": "Votre fuseau horaire (facultatif)",
        "time_zone_hint": (
            "Certaines actions sont prévues pour arriver partout à la même heure locale, par exemple à 9 h "
            "le matin de chacun·e, et les récapitulatifs arrivent le matin : c'est l'horloge que nous "
            "utilisons. Avec « Celui de mon pays », nous prenons le fuseau du pays où vous habitez s'il "
            "n'en a qu'un, sinon UTC."
        ),
        "time_zone_default": "Celui de mon pays",
        "time_zone_default_known": "Celui de mon pays ({zone})",
        "time_zone_other": "Autres",
        "places": "Où ?",
        "places_hint": "Les cas dans les lieux choisis. Ouvrez une région pour choisir des pays.",
        "worldwide": "Partout dans le monde",
        "whole_region": "Toute la région {region}",
        "countries_of": "Pays de la région {region}",
        "interests": "Quels sujets ?",
        "interests_hint": "Les cas qui concernent l'un des sujets choisis.",
        "brands": "Marques à suivre (facultatif)",
        "brands_hint": (
            "Séparez les noms par des virgules, par ex. H&M, Zara. Vous recevez tous les cas de ces marques."
        ),
        "statuses": "Quelles étapes des cas ?",
        "statuses_hint": "Un cas est mis à jour au fil du temps : choisissez les étapes qui vous "
        "intéressent.",
        "frequency": "À quelle fréquence ?",
        "frequency_hint": (
            "Un récapitulatif rassemble toutes les mises à jour de cas correspondantes depuis le "
            "précédent. Une action urgente peut tout de même être envoyée aussitôt."
        ),
        "subscribe": "M'abonner",
        "save": "Enregistrer mes choix",
        "privacy": (
            "Nous gardons votre adresse et vos choix uniquement pour vous envoyer ces alertes. Chaque "
            "e-mail contient des liens pour les modifier, vous désabonner, et voir et effacer vos données."
        ),
    },
    "es": {
        "subscribe_title": "Recibir alertas sobre casos de derechos laborales",
        "subscribe_intro": (
            "Dinos qué te importa y te escribiremos cuando un caso pida actuar. Primero enviamos un "
            "enlace de confirmación: no se envía nada más hasta que lo abras."
        ),
        "preferences_title": "Tus alertas",
        "preferences_intro": "Cambia lo que recibes. La próxima novedad de un caso usará tus nuevas "
        "preferencias.",
        "sent_to": "Las alertas se envían a",
        "new_address": "Para usar otra dirección, suscríbela y da de baja esta.",
        "saved": "Tus preferencias se han guardado.",
        "suppressed": (
            "Ahora estás dado o dada de baja y no recibes alertas. Al guardar estas preferencias te "
            "vuelves a suscribir."
        ),
        "error_summary": "Hay un problema",
        "error_title": "Error: ",
        "languages": "Idioma de esta página",
        "email": "Correo electrónico",
        "email_hint": "Enviamos un enlace de confirmación a esta dirección. Nunca se muestra a nadie.",
        "name": "Tu nombre (opcional)",
        "name_hint": "Solo para saludarte en los correos.",
        "language": "Idioma de las alertas",
        "home_country": "¿Dónde vives? (opcional)",
        "home_country_hint": (
            "Algunas acciones cambian según el lugar, como una protesta ante una tienda de tu ciudad: "
            "usamos tu país solo para elegir la acción pensada para donde vives, nunca para elegir de qué "
            "casos te informamos."
        ),
        "home_country_none": "Prefiero no decirlo",
        "time_zone": "Tu zona horaria (opcional)",
        "time_zone_hint": (
            "Algunas acciones se programan para llegar a todo el mundo a la misma hora local, como las "
            "9:00 de la mañana de cada persona, y los resúmenes llegan por la mañana: este es el reloj que "
            "usamos. Con «La de mi país», usamos la zona horaria del país donde vives si tiene solo una; "
            "si no, UTC."
        ),
        "time_zone_default": "La de mi país",
        "time_zone_default_known": "La de mi país ({zone})",
        "time_zone_other": "Otras",
        "places": "¿Dónde?",
        "places_hint": "Los casos en los lugares que elijas. Abre una región para elegir países.",
        "worldwide": "En todo el mundo",
        "whole_region": "Toda la región {region}",
        "countries_of": "Países de la región {region}",
        "interests": "¿Qué temas?",
        "interests_hint": "Los casos sobre cualquiera de los temas que elijas.",
        "brands": "Marcas a seguir (opcional)",
        "brands_hint": "Separa los nombres con comas, p. ej. H&M, Zara. Recibes todos los casos de esas "
        "marcas.",
        "statuses": "¿Qué novedades de los casos?",
        "statuses_hint": "Un caso se actualiza con el tiempo: elige las etapas que te interesan.",
        "frequency": "¿Con qué frecuencia?",
        "frequency_hint": (
            "Un resumen reúne todas las novedades de casos que coinciden desde el anterior. Una acción "
            "urgente puede enviarse igualmente en el momento."
        ),
        "subscribe": "Suscribirme",
        "save": "Guardar mis preferencias",
        "privacy": (
            "Guardamos tu dirección y tus preferencias solo para enviarte estas alertas. Cada correo trae "
            "enlaces para cambiarlas, darte de baja, y ver y borrar tus datos."
        ),
    },
}

_REGIONS: dict[str, dict[str, str]] = {
    "fr": {
        "australia-and-new-zealand": "Australie et Nouvelle-Zélande",
        "caribbean": "Caraïbes",
        "central-america": "Amérique centrale",
        "central-asia": "Asie centrale",
        "eastern-africa": "Afrique de l'Est",
        "eastern-asia": "Asie de l'Est",
        "eastern-europe": "Europe de l'Est",
        "melanesia": "Mélanésie",
        "micronesia": "Micronésie",
        "middle-africa": "Afrique centrale",
        "northern-africa": "Afrique du Nord",
        "northern-america": "Amérique du Nord",
        "northern-europe": "Europe du Nord",
        "polynesia": "Polynésie",
        "south-america": "Amérique du Sud",
        "south-eastern-asia": "Asie du Sud-Est",
        "southern-africa": "Afrique australe",
        "southern-asia": "Asie du Sud",
        "southern-europe": "Europe du Sud",
        "western-africa": "Afrique de l'Ouest",
        "western-asia": "Asie de l'Ouest",
        "western-europe": "Europe de l'Ouest",
        "antarctica": "Antarctique",
    },
    "es": {
        "australia-and-new-zealand": "Australia y Nueva Zelanda",
        "caribbean": "Caribe",
        "central-america": "Centroamérica",
        "central-asia": "Asia central",
        "eastern-africa": "África oriental",
        "eastern-asia": "Asia oriental",
        "eastern-europe": "Europa oriental",
        "melanesia": "Melanesia",
        "micronesia": "Micronesia",
        "middle-africa": "África central",
        "northern-africa": "África del Norte",
        "northern-america": "América del Norte",
        "northern-europe": "Europa del Norte",
        "polynesia": "Polinesia",
        "south-america": "América del Sur",
        "south-eastern-asia": "Sudeste asiático",
        "southern-africa": "África austral",
        "southern-asia": "Asia meridional",
        "southern-europe": "Europa meridional",
        "western-africa": "África occidental",
        "western-asia": "Asia occidental",
        "western-europe": "Europa occidental",
        "antarctica": "Antártida",
    },
}

_INTERESTS: dict[str, dict[str, str]] = {
    "en": {
        "wages": "Wages",
        "severance": "Severance pay",
        "union_busting": "Union busting",
        "freedom_of_association": "Freedom of association",
        "health_and_safety": "Health and safety",
        "building_safety": "Building safety",
        "gender_based_violence": "Gender-based violence",
        "forced_labour": "Forced labour",
        "child_labour": "Child labour",
        "living_wage": "Living wage",
        "working_hours": "Working hours",
        "migrant_workers": "Migrant workers",
        "social_security": "Social security",
        "factory_closure": "Factory closures",
        "repression_of_protest": "Repression of protest",
    },
    "fr": {
        "wages": "Salaires",
        "severance": "Indemnités de licenciement",
        "union_busting": "Répression syndicale",
        "freedom_of_association": "Liberté syndicale",
        "health_and_safety": "Santé et sécurité",
        "building_safety": "Sécurité des bâtiments",
        "gender_based_violence": "Violences fondées sur le genre",
        "forced_labour": "Travail forcé",
        "child_labour": "Travail des enfants",
        "living_wage": "Salaire vital",
        "working_hours": "Temps de travail",
        "migrant_workers": "Travailleurs et travailleuses migrant·es",
        "social_security": "Sécurité sociale",
        "factory_closure": "Fermetures d'usines",
        "repression_of_protest": "Répression des manifestations",
    },
    "es": {
        "wages": "Salarios",
        "severance": "Indemnizaciones por despido",
        "union_busting": "Represión antisindical",
        "freedom_of_association": "Libertad sindical",
        "health_and_safety": "Salud y seguridad",
        "building_safety": "Seguridad de los edificios",
        "gender_based_violence": "Violencia de género",
        "forced_labour": "Trabajo forzoso",
        "child_labour": "Trabajo infantil",
        "living_wage": "Salario digno",
        "working_hours": "Jornada laboral",
        "migrant_workers": "Trabajadores migrantes",
        "social_security": "Seguridad social",
        "factory_closure": "Cierres de fábricas",
        "repression_of_protest": "Represión de protestas",
    },
}

_STATUSES: dict[str, dict[str, str]] = {
    "en": {
        "opened": "New cases",
        "escalated": "A case escalates",
        "brand_contacted": "A brand is contacted",
        "brand_responded": "A brand responds",
        "urgent_action": "Urgent actions",
        "remedy_won": "A remedy is won",
        "closed": "A case is closed",
    },
    "fr": {
        "opened": "Nouveaux cas",
        "escalated": "Escalade d'un cas",
        "brand_contacted": "Une marque est contactée",
        "brand_responded": "Une marque répond",
        "urgent_action": "Actions urgentes",
        "remedy_won": "Une réparation est obtenue",
        "closed": "Un cas est clos",
    },
    "es": {
        "opened": "Casos nuevos",
        "escalated": "Un caso se agrava",
        "brand_contacted": "Se contacta a una marca",
        "brand_responded": "Una marca responde",
        "urgent_action": "Acciones urgentes",
        "remedy_won": "Se consigue una reparación",
        "closed": "Un caso se cierra",
    },
}

_FREQUENCIES: dict[str, dict[str, str]] = {
    "en": {
        "immediate": "As soon as a case matches",
        "daily": "One email a day (a digest, in your morning)",
        "weekly": "One email a week (a digest, on {day} morning)",
    },
    "fr": {
        "immediate": "Dès qu'un cas correspond",
        "daily": "Un e-mail par jour (un récapitulatif, le matin)",
        "weekly": "Un e-mail par semaine (un récapitulatif, le {day} matin)",
    },
    "es": {
        "immediate": "En cuanto un caso coincida",
        "daily": "Un correo al día (un resumen, por la mañana)",
        "weekly": "Un correo a la semana (un resumen, el {day} por la mañana)",
    },
}

_WEEKDAYS: dict[str, tuple[str, ...]] = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "fr": ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"),
    "es": ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
}
_WEEKDAY_KEYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_LANGUAGE_NAMES = {"en": "English", "fr": "Français", "es": "Español"}


def _language(language: str) -> str:
    return language if language in PAGE_LANGUAGES else PAGE_LANGUAGES[0]


def error_message(code: ErrorCode, language: str) -> str:
    """What the error ``code`` tells the person, in ``language`` (English if not offered)."""
    return _ERRORS[_language(language)][code]


def form_texts(language: str) -> Mapping[str, str]:
    """The headings, labels, hints and buttons of the form pages in ``language``."""
    return _FORM[_language(language)]


def _sort_key(label: str) -> str:
    # "África" sorts with the As: accents set aside, as a person reading the list expects.
    decomposed = unicodedata.normalize("NFKD", label.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def region_label(region: str, language: str) -> str:
    """The name of the UN M49 region ``region`` (its slug) in ``language``."""
    translated = _REGIONS.get(_language(language), {}).get(region)
    return translated or Region(region).label


def interest_label(interest: str, language: str) -> str:
    """The name of ``interest`` in ``language``; a deployment's own interests by their slug."""
    return _INTERESTS[_language(language)].get(interest) or interest.replace("_", " ").capitalize()


def status_label(status: str, language: str) -> str:
    """The name of the case status ``status`` in ``language``."""
    return _STATUSES[_language(language)][status]


@dataclass(frozen=True)
class RegionChoice:
    """A region of the form, with its countries: ``(code, name)`` sorted by name."""

    value: str
    label: str
    countries: tuple[tuple[str, str], ...]


def region_choices(language: str) -> list[RegionChoice]:
    """Every region with its countries, sorted by name in ``language``."""
    by_region: dict[str, list[tuple[str, str]]] = {r.value: [] for r in Region}
    for code in known_countries():
        by_region[region_of(code).value].append((code, country_name(code)))
    choices = [
        RegionChoice(
            value=region,
            label=region_label(region, language),
            countries=tuple(sorted(countries, key=lambda c: _sort_key(c[1]))),
        )
        for region, countries in by_region.items()
    ]
    return sorted(choices, key=lambda c: _sort_key(c.label))


def interest_choices(language: str) -> list[tuple[str, str]]:
    """``(slug, label)`` of every known interest, sorted by label in ``language``."""
    return sorted(((i, interest_label(i, language)) for i in _interests()), key=lambda c: _sort_key(c[1]))


def status_choices(language: str) -> list[tuple[str, str]]:
    """``(value, label)`` of every case status, in the order a case goes through them."""
    return [(s.value, status_label(s.value, language)) for s in CaseStatus]


_NOT_PLACES = frozenset({"localtime", "Factory"})
"""Names tzdata has that are no one's zone: this machine's own setting, and a placeholder."""


@cache
def time_zone_names() -> frozenset[str]:
    """The IANA time zones the form offers: every one this system knows that is a place."""
    names = set()
    for name in zoneinfo.available_timezones() - _NOT_PLACES:
        try:
            names.add(check_time_zone(name))
        except ValueError:
            continue  # listed but unreadable: the schema would refuse it too
    return frozenset(names)


@dataclass(frozen=True)
class ZoneGroup:
    """The time zones of one IANA area (``Africa``, ``America``…), or of none ("Other")."""

    label: str
    """The area (an English IANA name), or "Other" in the page's language."""
    lang: str | None
    """The language of the label and the zones' names: ``en`` for an area; None for "Other",
    whose label is in the page's language (each zone then says it is English)."""
    zones: tuple[tuple[str, str], ...]
    """``(name, label)`` of each zone, sorted: the label is the name after the area, with spaces."""


def time_zone_choices(language: str) -> list[ZoneGroup]:
    """Every offered time zone, grouped by IANA area in alphabetical order, "Other" last."""
    areas: dict[str, list[tuple[str, str]]] = {}
    others: list[tuple[str, str]] = []
    for name in sorted(time_zone_names()):
        area, _, rest = name.partition("/")
        if rest:
            areas.setdefault(area, []).append((name, rest.replace("_", " ")))
        else:
            others.append((name, name.replace("_", " ")))
    groups = [ZoneGroup(label=area, lang="en", zones=tuple(zones)) for area, zones in sorted(areas.items())]
    if others:
        other = form_texts(language)["time_zone_other"]
        groups.append(ZoneGroup(label=other, lang=None, zones=tuple(others)))
    return groups


def home_zone(home_country: str) -> str | None:
    """The time zone used for someone living in ``home_country`` who gave none (None: UTC)."""
    return country_zone(home_country) if home_country.upper() in known_countries() else None


def frequency_choices(language: str, digest_weekday: str = "monday") -> list[tuple[str, str]]:
    """``(value, label)`` of every frequency the Subscription model allows.

    Args:
        language: The page's language.
        digest_weekday: The day weekly digests go out (``MOBILISE_DIGEST_WEEKDAY``), named
            by the weekly digest's label.

    """
    language = _language(language)
    labels = _FREQUENCIES[language]
    day = dict(zip(_WEEKDAY_KEYS, _WEEKDAYS[language], strict=True)).get(digest_weekday, digest_weekday)
    return [(f, labels.get(f, f).format(day=day)) for f in get_args(Frequency)]


def language_choices() -> list[tuple[str, str]]:
    """``(code, name in that language)`` of each language alerts can be in."""
    return [(code, _LANGUAGE_NAMES[code]) for code in ALERT_LANGUAGES]


# -- CSRF ------------------------------------------------------------------------------------

CSRF_COOKIE = "mobilise_csrf"
"""The per-browser cookie that CSRF tokens are bound to."""
CSRF_FIELD = "csrf_token"
"""The hidden field of every form that carries the token."""
CSRF_MAX_AGE = 4 * 3600
"""Seconds a form's token stays valid: enough to fill the form in, not a day-old open tab."""
_CSRF_DOMAIN = b"mobilise.csrf"


class CsrfGuard:
    """Double-submit CSRF tokens: an HMAC of the browser's cookie, with an expiry.

    The cookie is random and set by the web process (SameSite=Lax, HttpOnly); each form
    carries ``<expiry>.<HMAC(cookie, expiry)>``. Another site can make a browser post a
    form, but cannot read the cookie nor make a token for it without the secret key, and
    a token lifted from one browser is worthless without that browser's cookie.

    Args:
        secret: The web process's secret key.
        clock: Current Unix time.

    """

    def __init__(self, secret: SecretStr, *, clock: Callable[[], float]) -> None:
        # A key of its own, as the link signer has: a CSRF token is never a valid link.
        self._key = hmac.new(secret.get_secret_value().encode("utf-8"), _CSRF_DOMAIN, hashlib.sha256).digest()
        self._clock = clock

    @staticmethod
    def new_cookie() -> str:
        """A fresh random cookie value."""
        return secrets.token_urlsafe(32)

    def _mac(self, cookie: str, expires: int) -> str:
        digest = hmac.new(self._key, f"{cookie}\x00{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def token_for(self, cookie: str) -> str:
        """The token for a form shown to the browser holding ``cookie``."""
        expires = int(self._clock()) + CSRF_MAX_AGE
        return f"{expires}.{self._mac(cookie, expires)}"

    def check(self, cookie: str | None, token: str | None) -> bool:
        """Whether ``token`` was made for ``cookie`` and has not expired."""
        if not cookie or not token or len(token) > 100:
            return False
        expires_text, _, mac = token.partition(".")
        if not expires_text.isdigit():
            return False
        expires = int(expires_text)
        if not hmac.compare_digest(mac, self._mac(cookie, expires)):
            return False
        return self._clock() < expires


CSRF = web.AppKey("mobilise_csrf_guard", CsrfGuard)
"""``app[CSRF]``: the app's :class:`CsrfGuard`; absent when there is no secret key."""
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def install_csrf(app: web.Application) -> CsrfGuard | None:
    """The app's CSRF guard, made on first use; None when ``MOBILISE_SECRET_KEY`` is not set."""
    existing = app.get(CSRF)
    if existing is not None:
        return existing
    state = app[STATE]
    if state.settings.secret_key is None:
        return None
    guard = app[CSRF] = CsrfGuard(state.settings.secret_key, clock=state.clock)
    return guard


def csrf_token(request: web.Request, guard: CsrfGuard) -> tuple[str, str | None]:
    """The token for a form on this page, and the new cookie to set when the browser has none."""
    cookie = request.cookies.get(CSRF_COOKIE)
    fresh = None
    if cookie is None or not _COOKIE_VALUE.fullmatch(cookie):
        cookie = fresh = guard.new_cookie()
    return guard.token_for(cookie), fresh


def set_csrf_cookie(response: web.StreamResponse, cookie: str | None, request: web.Request) -> None:
    """Set the CSRF cookie ``cookie`` on ``response`` (nothing when it is None: the browser has one).

    SameSite=Lax: sent when the person follows a link here, never with another site's POST;
    HttpOnly: no script needs it; Secure whenever the site is served over HTTPS.
    """
    if cookie is None:
        return
    public_url = request.app[STATE].settings.public_url or ""
    response.set_cookie(
        CSRF_COOKIE,
        cookie,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=request.secure or public_url.startswith("https://"),
    )


def csrf_valid(request: web.Request, form: Mapping[str, Any], guard: CsrfGuard) -> bool:
    """Whether the posted ``form`` carries a valid token for the browser's cookie."""
    token = form.get(CSRF_FIELD)
    return guard.check(request.cookies.get(CSRF_COOKIE), token if isinstance(token, str) else None)


def with_csrf(request: web.Request, guard: CsrfGuard, page: Callable[[str], web.Response]) -> web.Response:
    """The page ``page(token)`` of a form, with its CSRF token, setting the cookie when the browser has none.

    Args:
        request: The request the page answers.
        guard: The app's CSRF guard.
        page: Makes the page's response from the form's CSRF token.

    """
    token, cookie = csrf_token(request, guard)
    response = page(token)
    set_csrf_cookie(response, cookie, request)
    return response


def forged_refusal(
    request: web.Request,
    form: Mapping[str, Any],
    guard: CsrfGuard,
    language: str,
    *,
    path: str,
    **context: Any,
) -> web.Response | None:
    """The 403 page for a posted ``form`` without a valid CSRF token, logged; None when the token is valid.

    Args:
        request: The request that posted ``form``.
        form: The posted fields.
        guard: The app's CSRF guard.
        language: The page's language.
        path: The page's path for the log, without the token a signed link's path carries.
        **context: What else to log with the refusal (a subscriber id).

    """
    if csrf_valid(request, form, guard):
        return None
    log.info("web.csrf_refused", path=path, **context)
    return page_response("forbidden", language, status=403, links=[("form", request.path_qs)])


def language_switch(language: str) -> list[tuple[str, str, str, bool]]:
    """``(code, name, href, current)`` of each page language, for the switch at the top of a page."""
    names = dict(language_choices())
    return [(code, names[code], f"?lang={code}", code == language) for code in PAGE_LANGUAGES]


def render_form(
    *,
    language: str,
    with_email: bool,
    values: FormValues,
    errors: Mapping[FieldName, ErrorCode],
    csrf: str,
    address: str | None = None,
    saved: bool = False,
    suppressed: bool = False,
    links: Sequence[tuple[str, str]] = (),
    digest_weekday: str = "monday",
) -> str:
    """The HTML of the subscribe page (``with_email``) or of the preferences page.

    Args:
        language: The page's language.
        with_email: The subscribe page: with the address field.
        values: What the form shows.
        errors: The fields that are wrong; each message is shown next to its field and in
            a summary at the top.
        csrf: The CSRF token of the form.
        address: The address alerts go to (the preferences page).
        saved: Say that the choices were just saved.
        suppressed: Say that the person is unsubscribed at the moment.
        links: ``(href, label)`` of links under the form.
        digest_weekday: The day weekly digests go out (``MOBILISE_DIGEST_WEEKDAY``).

    """
    texts = form_texts(language)
    return render_template(
        "subscription_form.html.j2",
        language=language,
        t=texts,
        title=texts["subscribe_title" if with_email else "preferences_title"],
        intro=texts["subscribe_intro" if with_email else "preferences_intro"],
        button=texts["subscribe" if with_email else "save"],
        switch=language_switch(language),
        with_email=with_email,
        values=values,
        errors={name: error_message(code, language) for name, code in errors.items()},
        csrf_field=CSRF_FIELD,
        csrf_token=csrf,
        address=address,
        saved=saved,
        suppressed=suppressed,
        links=links,
        regions=region_choices(language),
        interests=interest_choices(language),
        statuses=status_choices(language),
        frequencies=frequency_choices(language, digest_weekday),
        languages=language_choices(),
        time_zones=time_zone_choices(language),
        home_zone=home_zone(values.home_country),
    )
