"""``/acted/{action_id}/{token}?event=…&lang=…``: "I did this", the link of every action call's email.

The token is signed for "acted" with the action as its scope
(:meth:`mobilise.links.PublicLinks.acted_url`), so it says "this person did this action"
and nothing else; ``event`` names the case update whose email carried the link.

* ``GET`` records nothing (mail scanners and link previews open every link): it shows
  "Thank you! Tell us what you did" with a short form, in English, French or Spanish:
  did the person do what was asked, or something else for the case, and an optional note
  of at most :data:`MAX_NOTE` characters.
* ``POST`` (CSRF checked: 403 page) publishes an :class:`~schemas.ActionTaken` on the
  actions-taken topic, keyed by subscriber id, with ``taken_id_for(action_id,
  subscriber_id)``: a second click is the same record, and a person counts once per
  action. It carries where the person lives when their subscription says so. The
  thank-you page (with the progress toward the call's goal, if it has one) is shown once
  Kafka acknowledged the record (503 page otherwise: nothing was recorded).

A token that is malformed, altered, or signed for another action gets a 400 page; an
event the cases view does not know, or whose update has no action call with that id, a
404 page, as does a person of whom nothing is on record any more (erased). The pages
answer 503 while the cases or subscribers views are still reading their topics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from urllib.parse import urlencode

import structlog
from aiohttp import web

from mobilise.errors import RetryableError
from mobilise.links import InvalidLink, LinkSigner
from schemas import ActionCall, ActionTaken, CaseUpdate, action_id_for, region_of, taken_id_for

from . import signed_pages, subscribers_view
from .coordinator_api import coordinator
from .forms import CSRF_FIELD, CsrfGuard, forged_refusal, install_csrf, with_csrf
from .pages import PAGE_LANGUAGES, html_response, page_response, render_template, request_language
from .state import STATE

__all__ = ["MAX_NOTE", "add_routes", "progress_text"]

log = structlog.get_logger(__name__)

MAX_NOTE = 1000
"""Most characters of the note a person may add (``ActionTaken.note``)."""

_What = Literal["as_asked", "something_else"]
_WHATS: tuple[str, ...] = get_args(_What)
_PATH = "/acted"


@dataclass(frozen=True)
class _Acted:
    """What the routes need, made once with the app; None where ``MOBILISE_SECRET_KEY`` is missing."""

    signer: LinkSigner | None
    csrf: CsrfGuard | None


_PARTS = web.AppKey("mobilise_acted", _Acted)

_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "languages": "Language of this page",
        "error_summary": "There is a problem",
        "error_title": "Error: ",
        "title": "Thank you! Tell us what you did",
        "intro": "Telling us lets the coordinators know how much pressure the action is making.",
        "case": "The case:",
        "target": "Aimed at",
        "what": "What did you do?",
        "as_asked": "I did what was asked",
        "something_else": "I did something else for this case",
        "note": "Tell us more (optional)",
        "note_hint": f"At most {MAX_NOTE} characters. Only the network's coordinators read it.",
        "button": "Send",
        "what_missing": "Choose what you did.",
        "note_too_long": f"Your note must be {MAX_NOTE} characters or fewer.",
        "thanks_title": "Thank you!",
        "thanks": "Your action is counted. If you tell us again, you are still counted once.",
        "progress": "{acted} of {goal} {label} so far.",
        "progress_unlabelled": "{acted} of the {goal} actions aimed for so far.",
        "unknown_title": "We do not know this action",
        "unknown": (
            "The link is incomplete, or the action it was made for is no longer known. Open it again from "
            "the email (the whole address). Nothing was recorded."
        ),
    },
    "fr": {
        "languages": "Langue de cette page",
        "error_summary": "Il y a un problème",
        "error_title": "Erreur : ",
        "title": "Merci ! Dites-nous ce que vous avez fait",
        "intro": "Vos réponses montrent aux coordinateurs et coordinatrices quelle pression l'action exerce.",
        "case": "Le cas :",
        "target": "Destinataire :",
        "what": "Qu'avez-vous fait ?",
        "as_asked": "J'ai fait ce qui était demandé",
        "something_else": "J'ai fait autre chose pour ce cas",
        "note": "Dites-nous en plus (facultatif)",
        "note_hint": f"{MAX_NOTE} caractères au plus. Seule l'équipe de coordination du réseau le lit.",
        "button": "Envoyer",
        "what_missing": "Choisissez ce que vous avez fait.",
        "note_too_long": f"Votre message doit faire au plus {MAX_NOTE} caractères.",
        "thanks_title": "Merci !",
        "thanks": (
            "Votre action est comptée. Si vous nous le dites à nouveau, elle n'est comptée qu'une fois."
        ),
        "progress": "{acted} sur {goal} {label} pour l'instant.",
        "progress_unlabelled": "{acted} des {goal} actions visées pour l'instant.",
        "unknown_title": "Nous ne connaissons pas cette action",
        "unknown": (
            "Le lien est incomplet, ou l'action pour laquelle il a été créé n'est plus connue. Ouvrez-le à "
            "nouveau depuis l'e-mail (l'adresse entière). Rien n'a été enregistré."
        ),
    },
    "es": {
        "languages": "Idioma de esta página",
        "error_summary": "Hay un problema",
        "error_title": "Error: ",
        "title": "¡Gracias! Cuéntanos qué hiciste",
        "intro": "Contarlo permite a la coordinación saber cuánta presión está haciendo la acción.",
        "case": "El caso:",
        "target": "Dirigida a",
        "what": "¿Qué hiciste?",
        "as_asked": "Hice lo que se pedía",
        "something_else": "Hice otra cosa por este caso",
        "note": "Cuéntanos más (opcional)",
        "note_hint": f"Como máximo {MAX_NOTE} caracteres. Solo lo lee la coordinación de la red.",
        "button": "Enviar",
        "what_missing": "Elige lo que hiciste.",
        "note_too_long": f"Tu mensaje debe tener como máximo {MAX_NOTE} caracteres.",
        "thanks_title": "¡Gracias!",
        "thanks": "Tu acción se ha contado. Si nos lo vuelves a decir, se sigue contando una sola vez.",
        "progress": "{acted} de {goal} {label} por ahora.",
        "progress_unlabelled": "{acted} de las {goal} acciones previstas por ahora.",
        "unknown_title": "No conocemos esta acción",
        "unknown": (
            "El enlace está incompleto, o la acción para la que se creó ya no se conoce. Ábrelo de nuevo "
            "desde el correo (la dirección completa). No se ha registrado nada."
        ),
    },
}

_LANGUAGE_NAMES = {"en": "English", "fr": "Français", "es": "Español"}
_THOUSANDS = {"en": ",", "fr": "\u202f", "es": "."}


def _number(value: int, language: str) -> str:
    return f"{value:,}".replace(",", _THOUSANDS.get(language, ","))


def _localised(texts: Mapping[str, str], language: str) -> tuple[str, str]:
    """``(language, text)``: the text in ``language``, else English, else the first there is."""
    for code in (language, "en"):
        if code in texts:
            return code, texts[code]
    code = next(iter(texts))
    return code, texts[code]


def progress_text(acted: int, call: ActionCall, language: str) -> str | None:
    """The progress toward the call's goal in ``language``; None for a call without a goal.

    For example "1,234 of 5,000 emails to H&M so far." (thousands as the language writes them).
    """
    if call.goal is None:
        return None
    words = _TEXTS.get(language, _TEXTS["en"])
    acted_text, goal_text = _number(acted, language), _number(call.goal.count, language)
    if call.goal.label:
        label = _localised(call.goal.label, language)[1]
        return words["progress"].format(acted=acted_text, goal=goal_text, label=label)
    return words["progress_unlabelled"].format(acted=acted_text, goal=goal_text)


@dataclass(frozen=True)
class _Link:
    """A verified link, with the update and action call it is for."""

    subscriber: str
    action_id: str
    update: CaseUpdate
    call: ActionCall
    home_country: str | None


def _render(
    request: web.Request,
    language: str,
    *,
    title_key: str,
    paragraphs: tuple[str, ...],
    status: int,
    link: _Link | None = None,
    form: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    progress: str | None = None,
    csrf: str = "",
) -> web.Response:
    words = _TEXTS[language]
    event = request.query.get("event", "")
    switch = [
        (code, _LANGUAGE_NAMES[code], "?" + urlencode({"event": event, "lang": code}), code == language)
        for code in PAGE_LANGUAGES
    ]
    case_language, case_title = _localised(link.update.title, language) if link else ("", "")
    context: dict[str, Any] = {
        "language": language,
        "t": words,
        "title": words[title_key],
        "errors": dict(errors or {}),
        "switch": switch,
        "paragraphs": paragraphs,
        "case_title": case_title,
        "case_language": case_language,
        "target": link.call.for_place(link.home_country).target.name if link else "",
        "progress": progress,
        "form": form,
        "choices": [(what, words[what]) for what in _WHATS],
        "max_note": MAX_NOTE,
        "csrf_field": CSRF_FIELD,
        "csrf_token": csrf,
    }
    return html_response(render_template("acted.html.j2", **context), language, status=status)


def _form_page(
    request: web.Request,
    language: str,
    link: _Link,
    guard: CsrfGuard,
    form: Mapping[str, str],
    errors: Mapping[str, str] | None = None,
    *,
    status: int = 200,
) -> web.Response:
    def page(token: str) -> web.Response:
        return _render(
            request,
            language,
            title_key="title",
            paragraphs=(_TEXTS[language]["intro"],),
            status=status,
            link=link,
            form=form,
            errors=errors,
            csrf=token,
        )

    return with_csrf(request, guard, page)


async def _verified(
    request: web.Request, language: str, form: Mapping[str, Any] | None
) -> tuple[_Link, CsrfGuard] | web.Response:
    """The request's link and the update it is for, or the page to answer instead (400, 403, 404, 503)."""
    parts = request.app[_PARTS]
    if parts.signer is None or parts.csrf is None:
        return page_response("unavailable", language, status=503)
    action_id = request.match_info["action_id"]
    try:
        subscriber = parts.signer.verify(request.match_info["token"], "acted", scope=action_id)
    except InvalidLink as exc:
        log.info("web.acted_link_invalid", reason=exc.reason, method=request.method)
        return page_response("invalid_personal_link", language, status=400)
    if form is not None:
        refused = forged_refusal(request, form, parts.csrf, language, path=_PATH, subscriber_id=subscriber)
        if refused is not None:
            return refused
    shared = coordinator(request.app)
    if not await shared.views["cases"].wait_caught_up(subscribers_view.VIEW_WAIT_SECONDS):
        log.warning("web.acted_cases_not_ready", waited=subscribers_view.VIEW_WAIT_SECONDS)
        return page_response("unavailable", language, status=503)
    event_id = request.query.get("event", "")
    update = shared.cases.event(event_id) if event_id else None
    call = update.action_call if update is not None else None
    if update is None or call is None or action_id_for(update.case_id, call) != action_id:
        log.info(
            "web.acted_action_unknown",
            subscriber_id=subscriber,
            action_id=action_id,
            event_id=event_id[:128],
            event_known=update is not None,
        )
        return _render(
            request,
            language,
            title_key="unknown_title",
            paragraphs=(_TEXTS[language]["unknown"],),
            status=404,
        )
    view = await subscribers_view.ready_view(request.app)
    if view is None:
        return page_response("unavailable", language, status=503)
    current = view.subscribers.get(subscriber)
    if current is None:
        # Erased: recording what they did would store about them again what they asked us to forget.
        return signed_pages.unknown_subscriber(language)
    home = current.subscription.home_country if current.subscription is not None else None
    return _Link(subscriber, action_id, update, call, home), parts.csrf


async def _show(request: web.Request) -> web.Response:
    language = request_language(request)
    verified = await _verified(request, language, None)
    if isinstance(verified, web.Response):
        return verified
    link, guard = verified
    # Nothing is recorded here: a scanner opening the link must not count as an action.
    return _form_page(request, language, link, guard, {"what": "as_asked", "note": ""})


def _field(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


async def _record(request: web.Request) -> web.Response:
    form = await request.post()
    language = request_language(request, form.get("language"))
    verified = await _verified(request, language, form)
    if isinstance(verified, web.Response):
        return verified
    link, guard = verified
    words = _TEXTS[language]
    values = {"what": _field(form, "what"), "note": _field(form, "note")}
    errors: dict[str, str] = {}
    if values["what"] not in _WHATS:
        errors["what"] = words["what_missing"]
    if len(values["note"]) > MAX_NOTE:
        errors["note"] = words["note_too_long"]
    if errors:
        log.info("web.acted_invalid", subscriber_id=link.subscriber, fields=sorted(errors))
        return _form_page(request, language, link, guard, values, errors, status=400)
    state = request.app[STATE]
    taken = ActionTaken(
        taken_id=taken_id_for(link.action_id, link.subscriber),
        action_id=link.action_id,
        case_id=link.update.case_id,
        event_id=link.update.event_id,
        subscriber_id=link.subscriber,
        what="as_asked" if values["what"] == "as_asked" else "something_else",
        note=values["note"] or None,
        home_country=link.home_country,
        region=region_of(link.home_country) if link.home_country else None,
        at=datetime.fromtimestamp(state.clock(), UTC),
    )
    try:
        await state.publisher.publish(
            [(state.topics.actions_taken, link.subscriber, taken.model_dump_json().encode("utf-8"))]
        )
    except RetryableError as exc:
        log.error(
            "web.action_taken_not_recorded",
            subscriber_id=link.subscriber,
            action_id=link.action_id,
            error=str(exc),
        )
        return page_response("unavailable", language, status=503)
    cases = coordinator(request.app).cases
    # Read our own write: the thank-you page counts this person before the view reads it back.
    cases.add_taken(taken)
    acted = cases.acted(link.action_id)
    log.info(
        "web.action_taken",
        subscriber_id=link.subscriber,
        action_id=link.action_id,
        case_id=taken.case_id,
        event_id=taken.event_id,
        taken_id=taken.taken_id,
        what=taken.what,
        acted=acted,
    )
    return _render(
        request,
        language,
        title_key="thanks_title",
        paragraphs=(words["thanks"],),
        status=200,
        link=link,
        progress=progress_text(acted, link.call, language),
    )


def add_routes(app: web.Application) -> None:
    """Add ``GET`` and ``POST /acted/{action_id}/{token}`` to ``app`` (after :data:`STATE` is set)."""
    state = app[STATE]
    secret = state.settings.secret_key
    app[_PARTS] = _Acted(
        signer=LinkSigner(secret, clock=state.clock) if secret is not None else None,
        csrf=install_csrf(app),
    )
    coordinator(app)
    subscribers_view.install(app)
    app.router.add_get(f"{_PATH}/{{action_id}}/{{token}}", _show)
    app.router.add_post(f"{_PATH}/{{action_id}}/{{token}}", _record)
