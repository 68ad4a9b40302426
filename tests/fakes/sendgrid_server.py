"""A fake SendGrid v3 Mail Send API on 127.0.0.1 that enforces the documented contract.

It answers ``POST /v3/mail/send`` as SendGrid documents it: 401 without the right bearer
key; 400 with SendGrid-style ``{"errors": [{"message", "field", "help"}]}`` for a body that
breaks a rule (1..1,000 personalizations, each with a ``to``; at most 1,000 recipients; no
address twice; ``from.email``; a subject; non-empty content with text/plain first; custom
args and substitutions under 10,000 bytes per personalization; at most 10 categories of
at most 255 characters); 202 with ``X-Message-Id`` otherwise, or 200 in sandbox mode.

It records every request, and can be told how to answer the next ones
(:meth:`FakeSendGrid.script`): rate limited (429 with the X-RateLimit headers), refused,
a server error, or a dropped connection. :attr:`FakeSendGrid.delay` makes it slow: it
waits that long before answering each request (and still answers, and records, a request
whose client went away meanwhile, as SendGrid would). :meth:`FakeSendGrid.emails` gives
what each person would have received, substitutions applied.

Use it inside a test's event loop (``async with FakeSendGrid() as fake``) or, for worker
subprocesses, in a thread with its own loop (``with FakeSendGrid().in_thread() as fake``).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .loopback import LoopbackServer

__all__ = [
    "API_KEY",
    "PASS",
    "DropConnection",
    "FakeSendGrid",
    "RateLimited",
    "ReceivedEmail",
    "RecordedRequest",
    "Refused",
    "ServerError",
    "validate_mail_send",
]

API_KEY = "SG.fake-key.for-tests"
_HELP = "https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors"


@dataclass(frozen=True)
class RateLimited:
    """Answer 429, with X-RateLimit-Reset ``reset_in`` seconds from now (a Unix time)."""

    reset_in: float = 1.0
    limit: int = 600


@dataclass(frozen=True)
class Refused:
    """Answer ``status`` (400 by default) with these SendGrid-style errors."""

    status: int = 400
    errors: tuple[dict[str, Any], ...] = (
        {"message": "The from address does not match a verified Sender Identity.", "field": "from"},
    )


@dataclass(frozen=True)
class ServerError:
    """Answer a 5xx."""

    status: int = 500


@dataclass(frozen=True)
class DropConnection:
    """Close the connection without answering."""


@dataclass(frozen=True)
class _Pass:
    """Answer as SendGrid would."""


PASS = _Pass()
Answer = RateLimited | Refused | ServerError | DropConnection | _Pass


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received and what it answered (None: it dropped the connection)."""

    status: int | None
    body: Any
    message_id: str | None = None


@dataclass(frozen=True)
class ReceivedEmail:
    """What one person would have received from an accepted request."""

    to: dict[str, str]
    subject: str
    text: str
    html: str
    headers: dict[str, str]
    custom_args: dict[str, str]
    categories: list[str]
    message_id: str


def _error(message: str, field: str | None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": _HELP}


def _size(mapping: dict[str, Any]) -> int:
    return len(json.dumps(mapping, ensure_ascii=False, separators=(",", ":")).encode())


def _string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def validate_mail_send(body: Any) -> list[dict[str, Any]]:
    """The SendGrid-style errors of a Mail Send body; empty when it is valid."""
    if not isinstance(body, dict):
        return [_error("The request body must be a JSON object.", None)]
    errors: list[dict[str, Any]] = []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(_error("You must have at least one personalization.", "personalizations"))
        personalizations = []
    elif len(personalizations) > 1000:
        errors.append(
            _error(
                "The personalization block is limited to 1000 personalizations per API request. You "
                f"have provided {len(personalizations)} personalizations.",
                "personalizations",
            )
        )
    top_args = body.get("custom_args", {})
    if not _string_map(top_args):
        errors.append(_error("custom_args values must be strings.", "custom_args"))
        top_args = {}
    seen: set[str] = set()
    recipients = 0
    for i, p in enumerate(personalizations):
        where = f"personalizations.{i}"
        if not isinstance(p, dict):
            errors.append(_error("Each personalization must be an object.", where))
            continue
        to = p.get("to")
        if not isinstance(to, list) or not to:
            errors.append(_error("The to array is required for all personalization objects.", f"{where}.to"))
            to = []
        for kind in ("to", "cc", "bcc"):
            for j, address in enumerate(p.get(kind) or []):
                email = address.get("email") if isinstance(address, dict) else None
                if not isinstance(email, str) or "@" not in email:
                    errors.append(
                        _error(
                            "Each to object must at least have an email address.", f"{where}.{kind}.{j}.email"
                        )
                    )
                    continue
                if "name" in address and not isinstance(address["name"], str):
                    errors.append(_error("The name must be a string.", f"{where}.{kind}.{j}.name"))
                recipients += 1
                if email.casefold() in seen:
                    errors.append(
                        _error(
                            "Each email address in the personalization block should be unique between "
                            f"to, cc, and bcc. We found a duplicate instance in the {where}.{kind} field.",
                            where,
                        )
                    )
                seen.add(email.casefold())
        args = p.get("custom_args", {})
        if not _string_map(args):
            errors.append(_error("custom_args values must be strings.", f"{where}.custom_args"))
        elif _size({**top_args, **args}) > 10_000:
            errors.append(_error("The custom_args may not exceed 10,000 bytes.", f"{where}.custom_args"))
        substitutions = p.get("substitutions", {})
        if not _string_map(substitutions):
            errors.append(_error("Substitution values must be strings.", f"{where}.substitutions"))
        elif sum(len(k.encode()) + len(v.encode()) for k, v in substitutions.items()) > 10_000:
            errors.append(_error("The substitutions may not exceed 10,000 bytes.", f"{where}.substitutions"))
        if not _string_map(p.get("headers", {})):
            errors.append(_error("Header values must be strings.", f"{where}.headers"))
        if "subject" in p and not (isinstance(p["subject"], str) and p["subject"]):
            errors.append(_error("The subject must be a non-empty string.", f"{where}.subject"))
    if recipients > 1000:
        errors.append(
            _error(
                "There is a limit of 1000 total recipients (to + cc + bcc) per request.", "personalizations"
            )
        )
    sender = body.get("from")
    if not isinstance(sender, dict) or not isinstance(sender.get("email"), str) or "@" not in sender["email"]:
        errors.append(_error("The from object must be provided for every email send.", "from.email"))
    subject = body.get("subject")
    if not (isinstance(subject, str) and subject) and not all(
        isinstance(p, dict) and p.get("subject") for p in personalizations
    ):
        errors.append(_error("The subject is required.", "subject"))
    content = body.get("content")
    if not isinstance(content, list) or not content:
        errors.append(
            _error("Unless a valid template_id is provided, the content parameter is required.", "content")
        )
        content = []
    types = []
    for i, part in enumerate(content):
        if not (isinstance(part, dict) and isinstance(part.get("type"), str) and part["type"]):
            errors.append(
                _error(
                    "The content type must be a string at least one character in length.", f"content.{i}.type"
                )
            )
            continue
        if not (isinstance(part.get("value"), str) and part["value"]):
            errors.append(
                _error(
                    "The content value must be a string at least one character in length.",
                    f"content.{i}.value",
                )
            )
        types.append(part["type"])
    if "text/plain" in types and types[0] != "text/plain":
        errors.append(
            _error("If present, text/plain content must be first, followed by text/html.", "content")
        )
    if (
        "text/html" in types
        and "text/plain" in types
        and types.index("text/html") < types.index("text/plain")
    ):
        errors.append(_error("text/html content must come after text/plain.", "content"))
    categories = body.get("categories", [])
    if not isinstance(categories, list) or len(categories) > 10:
        errors.append(_error("You may not have more than 10 categories per request.", "categories"))
    elif not all(isinstance(c, str) and 0 < len(c) <= 255 for c in categories):
        errors.append(_error("A category cannot exceed 255 characters.", "categories"))
    if not _string_map(body.get("headers", {})):
        errors.append(_error("Header values must be strings.", "headers"))
    sandbox = body.get("mail_settings", {}).get("sandbox_mode", {})
    if "enable" in sandbox and not isinstance(sandbox["enable"], bool):
        errors.append(
            _error(
                "The sandbox mode enable param should be a boolean value.",
                "mail_settings.sandbox_mode.enable",
            )
        )
    return errors


def _substitute(text: str, substitutions: dict[str, str]) -> str:
    if not substitutions:
        return text
    pattern = re.compile("|".join(re.escape(key) for key in sorted(substitutions, key=len, reverse=True)))
    return pattern.sub(lambda match: substitutions[match.group(0)], text)


class FakeSendGrid(LoopbackServer):
    """The fake API. Start it with ``async with`` or :meth:`in_thread`; then use :attr:`url`."""

    name = "fake SendGrid server"

    def __init__(self, api_key: str = API_KEY, clock: Callable[[], float] = time.time) -> None:
        self.api_key = api_key
        self.clock = clock
        self.requests: list[RecordedRequest] = []
        self._script: list[Answer] = []
        self.delay = 0.0
        """Seconds to wait before answering each request (a slow API); may be changed at any time."""
        self.in_flight = 0
        self.most_in_flight = 0
        """The most requests it was handling at once."""
        self._rate_limited_until = 0.0
        self._lock = threading.Lock()

    # -- what the tests look at -------------------------------------------------------------

    def script(self, *answers: Answer) -> None:
        """Answer the next requests like this, in order (``PASS``: answer normally)."""
        with self._lock:
            self._script.extend(answers)

    def _recorded(self, status: int) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.status == status]

    @property
    def accepted(self) -> list[dict[str, Any]]:
        """Bodies of the requests answered 202 (sent)."""
        return [r.body for r in self._recorded(202)]

    @property
    def sandboxed(self) -> list[dict[str, Any]]:
        """Bodies of the requests answered 200 (sandbox mode: validated, nothing sent)."""
        return [r.body for r in self._recorded(200)]

    def statuses(self) -> list[int | None]:
        """The answer to every request so far, in order (None: connection dropped)."""
        with self._lock:
            return [r.status for r in self.requests]

    def personalizations(self) -> list[dict[str, Any]]:
        """Every personalization of every accepted request."""
        return [p for body in self.accepted for p in body["personalizations"]]

    def emails(self) -> list[ReceivedEmail]:
        """What each person of the accepted requests received, substitutions applied."""
        with self._lock:
            accepted = [r for r in self.requests if r.status == 202]
        received = []
        for request in accepted:
            body = request.body
            content = {part["type"]: part["value"] for part in body["content"]}
            for p in body["personalizations"]:
                values = p.get("substitutions", {})
                for to in p["to"]:
                    received.append(
                        ReceivedEmail(
                            to=to,
                            subject=_substitute(p.get("subject", body.get("subject", "")), values),
                            text=_substitute(content.get("text/plain", ""), values),
                            html=_substitute(content.get("text/html", ""), values),
                            headers={**body.get("headers", {}), **p.get("headers", {})},
                            custom_args={**body.get("custom_args", {}), **p.get("custom_args", {})},
                            categories=list(body.get("categories", [])),
                            message_id=request.message_id or "",
                        )
                    )
        return received

    # -- the server ------------------------------------------------------------------------

    async def _mail_send(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self._handle(request)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._answer(
                401,
                None,
                {
                    "errors": [
                        _error("The provided authorization grant is invalid, expired, or revoked", None)
                    ]
                },
            )
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        if request.content_type != "application/json":
            # Mail Send takes JSON only; a charset parameter is allowed.
            message = f"Content-Type must be application/json, not {request.content_type!r}"
            return self._answer(415, raw.decode(errors="replace"), {"errors": [_error(message, None)]})
        try:
            body = json.loads(raw)
        except ValueError:
            return self._answer(400, raw.decode(errors="replace"), {"errors": [_error("Bad Request", None)]})
        with self._lock:
            scripted = self._script.pop(0) if self._script else PASS
            if isinstance(scripted, _Pass) and self.clock() < self._rate_limited_until:
                # Like SendGrid: nothing gets through before the announced reset.
                scripted = RateLimited(reset_in=self._rate_limited_until - self.clock())
        if isinstance(scripted, DropConnection):
            with self._lock:
                self.requests.append(RecordedRequest(status=None, body=body))
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError  # nothing is written back
        if isinstance(scripted, RateLimited):
            reset = math.ceil(self.clock() + scripted.reset_in)
            with self._lock:
                self._rate_limited_until = max(self._rate_limited_until, reset)
            return self._answer(
                429,
                body,
                {"errors": [{"field": None, "message": "too many requests"}]},
                {
                    "X-RateLimit-Limit": str(scripted.limit),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(reset),
                },
            )
        if isinstance(scripted, Refused):
            return self._answer(scripted.status, body, {"errors": [dict(e) for e in scripted.errors]})
        if isinstance(scripted, ServerError):
            return self._answer(scripted.status, body, {"errors": [_error("Internal server error", None)]})
        errors = validate_mail_send(body)
        if errors:
            return self._answer(400, body, {"errors": errors})
        message_id = uuid.uuid4().hex[:22]
        sandbox = body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable") is True
        with self._lock:
            self.requests.append(
                RecordedRequest(status=200 if sandbox else 202, body=body, message_id=message_id)
            )
        return web.Response(status=200 if sandbox else 202, headers={"X-Message-Id": message_id})

    def _answer(
        self, status: int, body: Any, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> web.Response:
        with self._lock:
            self.requests.append(RecordedRequest(status=status, body=body))
        return web.json_response(payload, status=status, headers=headers)

    def application(self) -> web.Application:
        """``POST /v3/mail/send``."""
        app = web.Application(client_max_size=40 * 1024 * 1024)  # SendGrid takes up to 30 MB
        app.router.add_post("/v3/mail/send", self._mail_send)
        return app
