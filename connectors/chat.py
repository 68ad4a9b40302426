"""AppriseSink: records as messages in coordinators' chat channels, through Apprise URLs.

Apprise speaks to Slack, Matrix, Telegram, Mastodon, Discord, Teams, ntfy and a hundred
more services, each named by a URL (``slack://…``, ``matrix://…``, ``tgram://…``) that
carries its tokens. A case update becomes "[Urgent action] <title> — <country>" and its
summary and action call; a dead letter its stage and reason (an operators' channel);
anything else its JSON. Templates (Jinja2) can say otherwise.

Apprise tells only whether a message went out. Why it did not is in what it logs
(``…error=400``), so each notification's log records are captured — attributed to the
notification by a context variable, so concurrent ones do not mix — and the HTTP status
they name decides between a permanent and a temporary failure (:func:`judge_failure`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import jinja2
import structlog
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, Field, SecretStr, field_validator

from mobilise.errors import ConfigurationError
from schemas import CaseUpdate, DeadLetter
from schemas.geography import country_name
from schemas.vocabulary import CaseStatus, Language

from .base import ConnectorConfig, Sink, SinkOutcome

__all__ = [
    "DEFAULT_BODY_TEMPLATE",
    "DEFAULT_TITLE_TEMPLATE",
    "AppriseConfig",
    "AppriseSink",
    "ChatMessage",
    "judge_failure",
    "render_message",
]

log = structlog.get_logger(__name__)

DEFAULT_TITLE_TEMPLATE = (
    "{% if kind == 'case_update' %}[{{ status_label }}] {{ title }} — {{ country_name }}"
    "{% elif kind == 'dead_letter' %}[Dead letter] {{ record.stage }}"
    "{% else %}[{{ model }}]{% endif %}"
)
"""The title when ``title_template`` is not set."""

DEFAULT_BODY_TEMPLATE = """\
{% if kind == 'case_update' %}
{{ summary }}
{% if record.brands %}

Brands: {{ record.brands | join(', ') }}
{% endif %}
{% if record.action_call %}

Action: {{ instructions }}
To: {{ record.action_call.target.name }}
{% if deadline %}
Deadline: {{ deadline }}
{% endif %}
{% endif %}

Case {{ record.case_id }} · {{ status_label }}
{% elif kind == 'dead_letter' %}
{{ record.reason }}
{% for error in record.errors %}
- {{ error.loc or '(record)' }}: {{ error.msg }}
{% endfor %}

{{ record.topic }} partition {{ record.partition }} offset {{ record.offset }}, at {{ record.at.isoformat() }}
{% else %}
{{ json }}
{% endif %}"""
"""The body when ``body_template`` is not set."""

_ENVIRONMENT = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True
)
_MAX_REMEMBERED = 10_000
_STATUS_IN_LOG = re.compile(r"\berror=([1-5]\d\d)\b")
_TEMPORARY_CLIENT_ERRORS = frozenset({408, 425, 429})
_NOTIFY_TYPES = {
    CaseStatus.URGENT_ACTION: "warning",
    CaseStatus.ESCALATED: "warning",
    CaseStatus.REMEDY_WON: "success",
}


class AppriseConfig(ConnectorConfig):
    """Settings of the Apprise (chat) sink."""

    urls: Annotated[list[SecretStr], Field(min_length=1)]
    """Apprise URLs of the channels, e.g. ``slack://T0/B0/XYZ`` or ``tgram://bottoken/chat``;
    secrets, given as ``${ENV_VAR}``. Each record is posted to every one."""
    language: Language = "en"
    """Language of the text taken from case updates (English, then any, when they lack it)."""
    title_template: str | None = None
    """Jinja2 template of the message title; see :data:`DEFAULT_TITLE_TEMPLATE` for the variables."""
    body_template: str | None = None
    """Jinja2 template of the message body; see :data:`DEFAULT_BODY_TEMPLATE` for the variables."""

    @field_validator("title_template", "body_template")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                _ENVIRONMENT.parse(value)
            except jinja2.TemplateSyntaxError as exc:
                raise ValueError(
                    f"is not a valid Jinja2 template: {exc.message} (line {exc.lineno})"
                ) from exc
        return value


# -- rendering ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatMessage:
    """One message, ready for Apprise."""

    title: str
    body: str
    notify_type: str
    """Apprise's ``info``, ``success``, ``warning`` or ``failure`` (how some services colour it)."""


def _pick(texts: dict[str, str], language: str) -> str:
    for wanted in (language, "en"):
        if wanted in texts:
            return texts[wanted]
    return next(iter(texts.values()), "")


def _variables(record: BaseModel, language: str) -> dict[str, Any]:
    variables: dict[str, Any] = {"language": language, "model": type(record).__name__}
    if isinstance(record, CaseUpdate):
        # The public projection only: coordinator-only fields cannot reach a channel.
        case = record.public()
        call = case.action_call
        variables.update(
            kind="case_update",
            record=case,
            event_id=record.event_id,
            status_label=case.status.value.replace("_", " ").capitalize(),
            country_name=country_name(case.country),
            title=_pick(case.title, language),
            summary=_pick(case.summary, language),
            instructions=_pick(call.instructions, language) if call else "",
            deadline=call.deadline.strftime("%Y-%m-%d %H:%M %Z") if call and call.deadline else None,
            json=case.model_dump_json(indent=2),
        )
    elif isinstance(record, DeadLetter):
        # Not the record's bytes: they may hold personal data, and the topic keeps them.
        variables.update(
            kind="dead_letter", record=record, json=record.model_dump_json(indent=2, exclude={"key", "value"})
        )
    else:
        variables.update(kind="record", record=record, json=record.model_dump_json(indent=2))
    return variables


def render_message(
    record: BaseModel,
    *,
    language: str = "en",
    title_template: str | None = None,
    body_template: str | None = None,
) -> ChatMessage:
    """The chat message for ``record``. Pure.

    Templates see ``kind`` (``case_update``, ``dead_letter`` or ``record``), ``record``
    (a case update's public projection, without its internal fields), ``model`` (the
    record's class name), ``json``, ``language`` and, for case updates, ``status_label``,
    ``country_name``, ``title``, ``summary``, ``instructions`` and ``deadline`` in
    ``language``.

    Raises:
        jinja2.TemplateError: a template does not render (an unknown variable, say).
        ValueError: the message would be empty.

    """
    variables = _variables(record, language)
    title = _ENVIRONMENT.from_string(title_template or DEFAULT_TITLE_TEMPLATE).render(variables).strip()
    body = _ENVIRONMENT.from_string(body_template or DEFAULT_BODY_TEMPLATE).render(variables).strip()
    if not (title or body):
        raise ValueError("the title and the body rendered empty")
    if isinstance(record, CaseUpdate):
        notify_type = _NOTIFY_TYPES.get(record.status, "info")
    else:
        notify_type = "failure" if isinstance(record, DeadLetter) else "info"
    return ChatMessage(title=title, body=body, notify_type=notify_type)


# -- judging Apprise's answer ---------------------------------------------------------------


def judge_failure(log_lines: Sequence[str]) -> tuple[bool, int | None]:
    """Whether a failed notification may succeed later, from what Apprise logged. Pure.

    Returns:
        (retryable, status): the last HTTP status the lines name (``error=404``); a 4xx
        other than 408, 425 and 429 is permanent; 5xx, those, and no status at all
        (a timeout, a refused connection) are retryable.

    """
    status = None
    for line in log_lines:
        for match in _STATUS_IN_LOG.finditer(line):
            status = int(match.group(1))
    if status is not None and 400 <= status < 500 and status not in _TEMPORARY_CLIENT_ERRORS:
        return False, status
    return True, status


_captured: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("apprise_captured", default=None)
_quiet: contextvars.ContextVar[bool] = contextvars.ContextVar("apprise_quiet", default=False)


class _CaptureFilter(logging.Filter):
    """On the ``apprise`` logger: copies each record to the notification that logged it.

    Apprise (2.x) runs a service in a worker thread with a copy of the caller's context,
    so the context variable set around one notification finds that notification's
    records and no other's. (Apprise 1.x's threads do not carry the context: there every
    failure has no known status, so it counts as retryable.)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        captured = _captured.get()
        if captured is not None:
            captured.append(record.getMessage())
        # While URLs are checked Apprise may log parts of them: those records go no further.
        return not _quiet.get()


_FILTER = _CaptureFilter()


def _capture_apprise_logs() -> None:
    apprise_logger = logging.getLogger("apprise")
    if _FILTER not in apprise_logger.filters:
        apprise_logger.addFilter(_FILTER)
    if apprise_logger.getEffectiveLevel() > logging.WARNING:
        # Apprise says why a message failed in warnings; a logger that drops them would
        # turn every refusal into an unknown (retryable) failure.
        apprise_logger.setLevel(logging.WARNING)


def _require_apprise() -> Any:
    try:
        import apprise
    except ImportError as exc:
        raise ConfigurationError(
            "the apprise connector needs the apprise library, which is not installed; "
            "install it with: pip install 'mobilise[chat]'"
        ) from exc
    return apprise


# -- the sink ------------------------------------------------------------------------------


@dataclass
class _Progress:
    """What became of one record on each channel, across attempts."""

    delivered: set[int] = field(default_factory=set)
    refused: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Channel:
    position: int
    service: str
    notifier: Any
    """An ``apprise.Apprise`` holding this one URL."""

    @property
    def label(self) -> str:
        return f"urls[{self.position}] ({self.service})"


class AppriseSink(Sink[AppriseConfig, BaseModel]):
    """Posts each record as one message to every channel of ``urls``.

    Delivery guarantee: at least once. Chat services take no idempotency key, so a
    message can repeat when the worker dies after posting it and before the framework
    recorded the outcome (the batch in flight), or when a service took a message but its
    answer was lost (reported as retryable, posted again). Within one process a record
    is not posted twice to a channel: a record accepted earlier (one of the last 10,000)
    is reported a duplicate, and a retried record goes only to the channels that have
    not taken it yet.

    Outcomes per record: accepted when every channel took it; retryable when a channel
    failed for a temporary reason (5xx, 408, 429, a timeout, no HTTP status in Apprise's
    log) — the records after it in the batch are not sent to that channel then, so that
    they stay in order; permanent when a channel refused it (another 4xx) or it cannot
    be rendered. Any model is accepted: case updates, dead letters (an operators'
    channel), anything else as JSON — mind that an alert's or a subscription's JSON holds
    a person's address.
    """

    name = "apprise"
    accepts: ClassVar[type[BaseModel]] = BaseModel
    Config = AppriseConfig

    def __init__(self, config: AppriseConfig) -> None:
        super().__init__(config)
        self._channels: list[_Channel] = []
        self._progress: OrderedDict[str, _Progress] = OrderedDict()
        self._accepted: OrderedDict[str, None] = OrderedDict()

    async def setup(self) -> None:
        """Load Apprise and check every URL; none is ever logged or put in an error.

        Raises:
            ConfigurationError: Apprise is not installed, or does not understand a URL
                (the message names its position in ``urls``).

        """
        apprise = _require_apprise()
        _capture_apprise_logs()
        channels = []
        token = _quiet.set(True)
        try:
            for position, url in enumerate(self.config.urls):
                service = apprise.Apprise.instantiate(url.get_secret_value())
                if service is None:
                    raise ConfigurationError(
                        f"urls[{position}] (URL {position + 1} of {len(self.config.urls)}) is not an Apprise "
                        "URL that this installation understands: an unknown scheme, or a part missing or "
                        "malformed; see https://github.com/caronc/apprise/wiki for the URL of each service"
                    )
                notifier = apprise.Apprise()
                notifier.add(service)
                channels.append(_Channel(position, str(getattr(service, "service_name", "?")), notifier))
        finally:
            _quiet.reset(token)
        self._channels = channels
        log.info("apprise.ready", channels=len(channels), services=[c.service for c in channels])

    async def close(self) -> None:
        """Forget the channels (Apprise keeps no connection open between notifications)."""
        self._channels = []

    async def deliver(self, records: Sequence[BaseModel]) -> Sequence[SinkOutcome]:
        """Post the records one after another, each to every channel at once; one outcome per record."""
        if not self._channels and self.config.urls:
            raise RuntimeError("AppriseSink.deliver() was called before setup()")
        halted: set[int] = set()
        outcomes = []
        for record in records:
            outcomes.append(await self._deliver_one(record, halted))
        return outcomes

    async def _deliver_one(self, record: BaseModel, halted: set[int]) -> SinkOutcome:
        record_id = self.record_id(record)
        if record_id in self._accepted:
            self._accepted.move_to_end(record_id)
            return SinkOutcome(record_id=record_id, accepted=True, duplicate=True)
        try:
            message = render_message(
                record,
                language=self.config.language,
                title_template=self.config.title_template,
                body_template=self.config.body_template,
            )
        except (jinja2.TemplateError, ValueError, TypeError, LookupError, AttributeError) as exc:
            # The same record fails the same way every time: a permanent failure.
            log.warning("apprise.cannot_render", record_id=record_id, error=repr(exc))
            return SinkOutcome(record_id=record_id, accepted=False, error=f"cannot render: {exc!r}")
        progress = self._progress.pop(record_id, None) or _Progress()
        waiting = [c for c in self._channels if c.position not in progress.delivered | set(progress.refused)]
        to_send = [c for c in waiting if c.position not in halted]
        results = await asyncio.gather(*(self._notify(c, message) for c in to_send))
        temporary: dict[int, str] = {}
        for channel, (sent, retryable, error) in zip(to_send, results, strict=True):
            if sent:
                progress.delivered.add(channel.position)
            elif retryable:
                temporary[channel.position] = error
                halted.add(channel.position)
            else:
                progress.refused[channel.position] = error
        for channel in waiting:
            if channel.position in halted and channel.position not in temporary:
                temporary[channel.position] = f"{channel.label}: not sent, an earlier record failed there"
        context = {"record_id": record_id, "delivered": sorted(progress.delivered)}
        if temporary:
            self._remember(self._progress, record_id, progress)
            error = "; ".join(temporary[p] for p in sorted(temporary))
            log.warning("apprise.unavailable", error=error, **context)
            return SinkOutcome(record_id=record_id, accepted=False, retryable=True, error=error)
        if progress.refused:
            error = "; ".join(progress.refused[p] for p in sorted(progress.refused))
            if progress.delivered:
                error += f" (posted to urls {sorted(progress.delivered)})"
            log.warning("apprise.refused", error=error, **context)
            return SinkOutcome(record_id=record_id, accepted=False, error=error)
        self._remember(self._accepted, record_id, None)
        log.info("apprise.posted", **context)
        return SinkOutcome(record_id=record_id, accepted=True)

    async def _notify(self, channel: _Channel, message: ChatMessage) -> tuple[bool, bool, str]:
        """Post ``message`` to one channel: (sent, retryable, error)."""
        lines: list[str] = []
        token = _captured.set(lines)
        try:
            sent = bool(
                await channel.notifier.async_notify(
                    body=message.body,
                    title=message.title,
                    notify_type=message.notify_type,
                    body_format="text",
                )
            )
        except Exception as exc:  # a plugin's bug: Apprise normally reports failures by its answer
            return False, True, f"{channel.label}: Apprise failed: {type(exc).__name__}"
        finally:
            _captured.reset(token)
        if sent:
            return True, False, ""
        retryable, status = judge_failure(lines)
        what = f"HTTP {status}" if status is not None else "no HTTP status (timeout or connection error?)"
        verb = "failed" if retryable else "refused the message"
        return False, retryable, f"{channel.label} {verb}: {what}"

    @staticmethod
    def _remember(memory: OrderedDict[str, Any], key: str, value: Any) -> None:
        memory[key] = value
        memory.move_to_end(key)
        while len(memory) > _MAX_REMEMBERED:
            memory.popitem(last=False)
