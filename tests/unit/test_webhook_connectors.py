"""The webhook connectors on loopback (no broker): the signature scheme, the sink against a real
aiohttp receiver, the source served to a real aiohttp client.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError
from structlog.testing import capture_logs

from connectors.attempts import deliver_with_retries
from connectors.registry import load_connector
from connectors.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, sign, verify
from connectors.source import Checkpoint, EmitReport, SourceRecord
from connectors.testing import MemorySourceContext, check_sink_outcomes
from connectors.webhook_sink import (
    RECORD_ID_HEADER,
    RECORD_TYPE_HEADER,
    WebhookSink,
    WebhookSinkConfig,
    judge_response,
)
from connectors.webhook_source import WebhookSource, WebhookSourceConfig
from mobilise.errors import RetryableError, SkippableError
from schemas import CaseUpdate

SECRET = "a-shared-secret-for-the-tests-0123456789"
KEY = SECRET.encode()
TS = 1_767_225_600
WAIT = 5.0  # bound on every wait for a server or a task


def case_fields(**changes: Any) -> dict[str, Any]:
    return {
        "case_id": "bd-1",
        "status": "urgent_action",
        "title": {"en": "Fired for organising"},
        "summary": {"en": "Twelve leaders dismissed."},
        "country": "BD",
        "brands": ["H&M"],
        "factory": {"name": "Dhaka Knitwear", "city": "Gazipur"},
        "issues": ["union_busting"],
        "occurred_at": "2026-01-01T00:00:00Z",
        "published_by": "p",
        "internal": {"workers_at_risk": ["Hidden Person"]},
        **changes,
    }


def make_case(**changes: Any) -> CaseUpdate:
    return CaseUpdate.model_validate_json(json.dumps(case_fields(**changes)))


# -- the signature -------------------------------------------------------------------------


def test_a_signed_body_verifies_and_carries_both_headers() -> None:
    body = b'{"case_id":"bd-1"}'
    headers = sign(KEY, body, TS)
    assert headers[TIMESTAMP_HEADER] == str(TS)
    assert headers[SIGNATURE_HEADER].startswith("v1=") and len(headers[SIGNATURE_HEADER]) == 3 + 64
    verify(KEY, body, headers, now=TS + 10)
    # Header names are case-insensitive, as HTTP's are.
    verify(KEY, body, {k.lower(): v for k, v in headers.items()}, now=TS)
    verify(KEY, body, {k: v.upper().replace("V1=", "v1=") for k, v in headers.items()}, now=TS)


def test_the_test_vector_of_the_module_docstring() -> None:
    headers = sign(b"example-secret-0123456789", b'{"case_id":"bd-1"}', 1767225600)
    assert headers == {
        "X-Mobilise-Timestamp": "1767225600",
        "X-Mobilise-Signature": "v1=de50611ae2508e8211075957b3522c5a439cb9929885c5088e036bcdbee28713",
    }


def test_a_tampered_body_is_refused() -> None:
    headers = sign(KEY, b'{"status":"resolved"}', TS)
    with pytest.raises(SignatureError, match="bad signature") as raised:
        verify(KEY, b'{"status":"urgent_action"}', headers, now=TS)
    assert "signs the exact body bytes" in str(raised.value)
    assert headers[SIGNATURE_HEADER][3:] not in str(raised.value)  # no signature to learn from


def test_the_wrong_secret_is_refused() -> None:
    headers = sign(b"another-secret-of-someone-else", b"{}", TS)
    with pytest.raises(SignatureError, match=r"bad signature.*the same secret"):
        verify(KEY, b"{}", headers, now=TS)


def test_a_changed_timestamp_breaks_the_signature() -> None:
    headers = sign(KEY, b"{}", TS)
    headers[TIMESTAMP_HEADER] = str(TS + 1)
    with pytest.raises(SignatureError, match="bad signature"):
        verify(KEY, b"{}", headers, now=TS)


def test_a_stale_timestamp_is_refused_naming_its_age() -> None:
    headers = sign(KEY, b"{}", TS)
    verify(KEY, b"{}", headers, now=TS + 300)  # the edge of the tolerance
    with pytest.raises(
        SignatureError, match=r"stale X-Mobilise-Timestamp 1767225600: signed 301 seconds ago"
    ):
        verify(KEY, b"{}", headers, now=TS + 301)
    with pytest.raises(SignatureError, match="tolerance of 60 seconds"):
        verify(KEY, b"{}", headers, now=TS + 61, tolerance=60)


def test_a_future_timestamp_is_refused() -> None:
    headers = sign(KEY, b"{}", TS + 3600)
    with pytest.raises(SignatureError, match=r"3600 seconds in the future.*clock") as raised:
        verify(KEY, b"{}", headers, now=TS)
    assert "tolerance of 300 seconds" in str(raised.value)


def test_missing_headers_are_named() -> None:
    with pytest.raises(SignatureError, match="missing header X-Mobilise-Timestamp and X-Mobilise-Signature"):
        verify(KEY, b"{}", {}, now=TS)
    with pytest.raises(SignatureError, match="missing header X-Mobilise-Signature: sign each request"):
        verify(KEY, b"{}", {TIMESTAMP_HEADER: str(TS)}, now=TS)
    with pytest.raises(SignatureError, match="missing header X-Mobilise-Timestamp:"):
        verify(KEY, b"{}", {SIGNATURE_HEADER: "v1=00"}, now=TS)


@pytest.mark.parametrize("timestamp", ["12.5", "1767225600000000000", "-5", "soon", "1e9"])
def test_a_malformed_timestamp_is_refused(timestamp: str) -> None:
    headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: "v1=00"}
    with pytest.raises(SignatureError, match=r"malformed X-Mobilise-Timestamp.*Unix seconds, as an integer"):
        verify(KEY, b"{}", headers, now=TS)


def test_a_signature_header_without_a_v1_value_is_refused() -> None:
    headers = {TIMESTAMP_HEADER: str(TS), SIGNATURE_HEADER: "v0=abcdef, sha256=abcdef"}
    with pytest.raises(SignatureError, match="malformed X-Mobilise-Signature: no 'v1=<hex>' value"):
        verify(KEY, b"{}", headers, now=TS)


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new = b"the-old-secret-0123456789", b"the-new-secret-0123456789"
    body = b'{"case_id":"bd-1"}'
    both = ", ".join(sign(key, body, TS)[SIGNATURE_HEADER] for key in (old, new))
    headers = {TIMESTAMP_HEADER: str(TS), SIGNATURE_HEADER: both + ",v2=future-scheme"}
    verify(old, body, headers, now=TS)
    verify(new, body, headers, now=TS)
    with pytest.raises(SignatureError, match="bad signature: no v1 value"):
        verify(b"neither-of-the-two-secrets", body, headers, now=TS)


def test_a_signature_error_is_skippable() -> None:
    assert issubclass(SignatureError, SkippableError)


@given(secret=st.binary(min_size=1, max_size=64), body=st.binary(max_size=512), flip=st.integers(0, 4095))
def test_any_change_of_the_body_breaks_the_signature(secret: bytes, body: bytes, flip: int) -> None:
    headers = sign(secret, body, TS)
    verify(secret, body, headers, now=TS)
    changed = bytearray(body + b"x")
    changed[flip % len(changed)] ^= 0x01
    with pytest.raises(SignatureError):
        verify(secret, bytes(changed), headers, now=TS)


# -- the sink, against a real receiver -----------------------------------------------------

Answer = tuple[int, dict[str, str], str]


class Receiver:
    """An aiohttp server on 127.0.0.1 that checks signatures with signing.verify and keeps requests.

    ``script[record_id]`` lists the answers to give that record's requests, in order; then
    it answers 200 with an X-Request-Id. Like a receiver should, it keeps one body per
    record id and counts the repeats it drops.
    """

    def __init__(self, *, hold_until: int = 0) -> None:
        self.script: dict[str, list[Answer]] = {}
        self.bodies: list[bytes] = []
        self.record_ids: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.stored: dict[str, bytes] = {}
        self.repeats = 0
        self.refused: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.hold_until = hold_until
        self.crowd = asyncio.Event()
        self.release = asyncio.Event()
        self.stall = False

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(KEY, body, request.headers, now=time.time())
        except SignatureError as exc:
            self.refused.append(str(exc))
            return web.json_response({"error": str(exc)}, status=401)
        record_id = request.headers[RECORD_ID_HEADER]
        self.bodies.append(body)
        number = len(self.bodies)
        self.record_ids.append(record_id)
        self.headers.append(dict(request.headers))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.in_flight >= self.hold_until:
                self.crowd.set()
            if self.hold_until:
                # Hold requests until as many as the sink may send at once are here (bounded).
                await asyncio.wait_for(self.crowd.wait(), 2.0)
            if self.stall:
                await asyncio.wait_for(self.release.wait(), WAIT)
        except TimeoutError:
            pass
        finally:
            self.in_flight -= 1
        answers = self.script.get(record_id)
        if answers:
            status, headers, text = answers.pop(0)
            return web.Response(status=status, headers=headers, text=text)
        if record_id in self.stored:
            self.repeats += 1
        self.stored.setdefault(record_id, body)
        return web.Response(status=200, headers={"X-Request-Id": f"req-{number}"}, text="ok")


def sink_config(url: str, **settings: Any) -> WebhookSinkConfig:
    return WebhookSinkConfig.model_validate({"url": url, "secret": SECRET, **settings})


@asynccontextmanager
async def open_sink(url: str, **settings: Any) -> AsyncIterator[WebhookSink]:
    sink = WebhookSink(sink_config(url, **settings))
    await sink.setup()
    try:
        yield sink
    finally:
        await sink.close()


def cases(count: int) -> list[CaseUpdate]:
    return [make_case(case_id=f"bd-{i}", title={"en": f"Case {i}"}) for i in range(count)]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_sink_posts_each_record_signed_as_its_json_with_its_record_id() -> None:
    records = cases(10)

    async def scenario() -> None:
        async with Receiver(hold_until=3) as receiver:
            headers = {"Authorization": "Bearer very-secret-token"}
            async with open_sink(receiver.url, concurrency=3, headers=headers) as sink:
                with capture_logs() as logs:
                    outcomes = await sink.deliver(records)
            check_sink_outcomes(sink, records, outcomes)
            assert all(o.accepted for o in outcomes) and len(outcomes) == 10
            assert {o.provider_message_id for o in outcomes} == {f"req-{i}" for i in range(1, 11)}
            assert receiver.refused == []  # every signature verified
            assert sorted(receiver.bodies) == sorted(r.model_dump_json().encode() for r in records)
            sent = dict(zip(receiver.record_ids, receiver.bodies, strict=True))
            assert sent == {sink.record_id(r): r.model_dump_json().encode() for r in records}
            assert {sink.record_id(r) for r in records} == {r.event_id for r in records}
            for request in receiver.headers:
                assert request["Content-Type"] == "application/json"
                assert request[RECORD_TYPE_HEADER] == "CaseUpdate"
                assert request["Authorization"] == "Bearer very-secret-token"
            assert receiver.max_in_flight == 3  # concurrent, and bounded by concurrency
            assert "very-secret-token" not in repr(logs) and SECRET not in repr(logs)
            assert "very-secret-token" not in repr(sink.config) and SECRET not in repr(sink.config)
            (summary,) = [e for e in logs if e["event"] == "webhook_sink.delivered"]
            assert summary["accepted"] == 10 and summary["url"] == receiver.url

    asyncio.run(scenario())


def test_503_with_retry_after_is_retryable_then_the_same_record_is_accepted() -> None:
    (record,) = cases(1)

    async def scenario() -> None:
        async with Receiver() as receiver, open_sink(receiver.url) as sink:
            receiver.script[record.event_id] = [(503, {"Retry-After": "2"}, "down for maintenance")]
            (first,) = await sink.deliver([record])
            assert (first.accepted, first.retryable, first.retry_after) == (False, True, 2.0)
            assert "503" in (first.error or "") and "down for maintenance" in (first.error or "")
            check_sink_outcomes(sink, [record], [first])
            (second,) = await sink.deliver([record])
            assert second.accepted and second.provider_message_id == "req-2"
            assert receiver.record_ids == [record.event_id, record.event_id]
            assert receiver.bodies[0] == receiver.bodies[1] == record.model_dump_json().encode()

    asyncio.run(scenario())


def test_400_is_permanent_with_the_body_in_the_error() -> None:
    good, bad = cases(2)

    async def scenario() -> None:
        async with Receiver() as receiver, open_sink(receiver.url) as sink:
            receiver.script[bad.event_id] = [(400, {}, "unknown field 'brands'\n" + "x" * 2000)]
            outcomes = {o.record_id: o for o in await sink.deliver([good, bad])}
            check_sink_outcomes(sink, [good, bad], list(outcomes.values()))
            refused = outcomes[bad.event_id]
            assert not refused.accepted and not refused.retryable
            assert (refused.error or "").startswith(
                "the receiver refused it (400): unknown field 'brands' xxx"
            )
            assert len(refused.error or "") < 600  # the first 500 characters of the body
            assert outcomes[good.event_id].accepted  # the others of the batch went on

    asyncio.run(scenario())


def test_a_closed_port_is_retryable() -> None:
    records = cases(2)

    async def scenario() -> None:
        async with open_sink(f"http://127.0.0.1:{closed_port()}/hook") as sink:
            outcomes = await sink.deliver(records)
            check_sink_outcomes(sink, records, outcomes)
            assert len(outcomes) == 2
            assert all(o.retryable and "no answer from http://127.0.0.1" in (o.error or "") for o in outcomes)

    asyncio.run(scenario())


def test_a_receiver_too_slow_to_answer_is_retryable() -> None:
    (record,) = cases(1)

    async def scenario() -> None:
        async with Receiver() as receiver, open_sink(receiver.url, timeout=0.2) as sink:
            receiver.stall = True
            (outcome,) = await sink.deliver([record])
            assert outcome.retryable and "timed out" in (outcome.error or "")

    asyncio.run(scenario())


def test_through_the_retry_loop_the_same_record_id_is_sent_until_accepted() -> None:
    retried, refused = cases(2)
    slept: list[float] = []

    async def no_wait(seconds: float) -> None:
        slept.append(seconds)

    async def scenario() -> None:
        async with Receiver() as receiver, open_sink(receiver.url) as sink:
            receiver.script[retried.event_id] = [
                (503, {"Retry-After": "1"}, "busy"),
                (429, {"Retry-After": "3"}, "slow down"),
            ]
            receiver.script[refused.event_id] = [(422, {}, "case_id: not known here")]
            settled = await deliver_with_retries(sink, [retried, refused], max_attempts=5, sleep=no_wait)
            final = {a.record.event_id: a for a in settled}
            assert final[retried.event_id].accepted and final[retried.event_id].attempts == 3
            assert not final[refused.event_id].accepted and final[refused.event_id].attempts == 1
            assert "(422): case_id: not known here" in (final[refused.event_id].error or "")
            assert Counter(receiver.record_ids) == {retried.event_id: 3, refused.event_id: 1}
            bodies = {
                b
                for rid, b in zip(receiver.record_ids, receiver.bodies, strict=True)
                if rid == retried.event_id
            }
            assert bodies == {retried.model_dump_json().encode()}  # the same request each time
            assert len(slept) == 2 and slept[0] >= 1.0 and slept[1] >= 3.0  # Retry-After honoured

    asyncio.run(scenario())


def test_a_batch_handed_again_after_a_crash_carries_the_same_ids_so_the_receiver_drops_it() -> None:
    records = cases(5)

    async def scenario() -> None:
        async with Receiver() as receiver:
            async with open_sink(receiver.url) as sink:
                first = await sink.deliver(records)
            # A new worker, after a crash before the outcomes were recorded: the same batch.
            async with open_sink(receiver.url) as sink:
                again = await sink.deliver([*records, records[0]])  # and a record twice in it
            check_sink_outcomes(sink, records, again)
            assert all(o.accepted for o in (*first, *again)) and len(again) == 5
            assert receiver.stored == {r.event_id: r.model_dump_json().encode() for r in records}
            assert receiver.repeats == 5  # every repeat recognised by its X-Mobilise-Record-Id

    asyncio.run(scenario())


def test_judging_answers() -> None:
    now = 1_800_000_000.0
    accepted = judge_response("r", 201, {"X-Request-Id": "abc"}, "", now=now)
    assert accepted.accepted and accepted.provider_message_id == "abc"
    for status in (408, 425, 500, 502, 504):
        verdict = judge_response("r", status, {"Retry-After": "9"}, "", now=now)
        assert verdict.retryable and verdict.retry_after is None, status
    assert judge_response("r", 429, {"Retry-After": "7"}, "", now=now).retry_after == 7.0
    dated = {"Retry-After": email.utils.formatdate(now + 30, usegmt=True)}
    assert judge_response("r", 503, dated, "", now=now).retry_after == 30.0
    assert judge_response("r", 503, {"Retry-After": "soon"}, "", now=now).retry_after is None
    for status in (400, 404, 410, 413, 422):
        verdict = judge_response("r", status, {}, "no", now=now)
        assert not verdict.retryable and f"({status}): no" in (verdict.error or ""), status
    assert "check that secret" in (judge_response("r", 401, {}, "", now=now).error or "")
    moved = judge_response("r", 301, {"Location": "https://elsewhere.example/"}, "", now=now)
    assert not moved.retryable and "https://elsewhere.example/" in (moved.error or "")


def test_sink_settings_are_checked_and_secrets_masked() -> None:
    with pytest.raises(ValidationError, match="secret") as raised:
        sink_config("https://example.org/hook", secret="short")
    assert "at least 16 characters, not 5" in str(raised.value) and "short" not in str(raised.value)
    with pytest.raises(ValidationError, match="url"):
        sink_config("ftp://example.org/hook")
    with pytest.raises(ValidationError, match="'X-Mobilise-Record-Id' is set by the sink itself"):
        sink_config("https://example.org/hook", headers={"X-Mobilise-Record-Id": "x"})
    with pytest.raises(ValidationError, match="not a valid HTTP header name"):
        sink_config("https://example.org/hook", headers={"Bad Header": "x"})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        sink_config("https://example.org/hook", retries=3)
    config = sink_config("https://example.org/hook", headers={"Authorization": "Bearer t0ken"})
    assert (config.timeout, config.concurrency) == (10.0, 8)
    assert SECRET not in repr(config) and "t0ken" not in repr(config)
    assert isinstance(config.secret, SecretStr)


def test_plain_http_to_another_host_is_warned_about() -> None:
    async def scenario() -> list[dict[str, Any]]:
        with capture_logs() as logs:
            async with open_sink("http://receiver.internal/hook?token=abc"):
                pass
        return logs

    logs = asyncio.run(scenario())
    (warning,) = [e for e in logs if e["event"] == "webhook_sink.plain_http"]
    assert warning["url"] == "http://receiver.internal/hook"  # without the query string
    assert "token=abc" not in repr(logs)


def test_the_connectors_are_found_through_their_entry_points() -> None:
    assert load_connector("webhook-sink") is WebhookSink
    assert load_connector("webhook-source") is WebhookSource


# -- the source, served to a real client ---------------------------------------------------


class BrokerDown(MemorySourceContext):
    """A context whose broker is unreachable for the first ``failures`` batches."""

    def __init__(self, failures: int) -> None:
        super().__init__("case-updates")
        self.failures = failures

    async def emit(self, records: Sequence[SourceRecord], checkpoint: Checkpoint | None = None) -> EmitReport:
        if self.failures > 0:
            self.failures -= 1
            raise RetryableError("cannot reach the broker at 127.0.0.1:9092")
        return await super().emit(records, checkpoint)


@asynccontextmanager
async def serving(
    context: MemorySourceContext | None = None, **settings: Any
) -> AsyncIterator[tuple[WebhookSource, MemorySourceContext, str]]:
    """A set-up source running in a task; stopped (within WAIT) and closed on the way out."""
    ctx = context if context is not None else MemorySourceContext("case-updates")
    config = WebhookSourceConfig.model_validate({"port": 0, "secret": SECRET, **settings})
    source = WebhookSource(config)
    await source.setup()
    assert source.port
    task = asyncio.create_task(source.run(ctx))
    try:
        yield source, ctx, f"http://127.0.0.1:{source.port}{config.path}"
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, WAIT)
        await source.close()


async def post(
    url: str,
    body: bytes,
    *,
    signed: bool = True,
    key: bytes = KEY,
    timestamp: int | None = None,
    content_type: str = "application/json",
) -> tuple[int, Any, Any]:
    headers = {"Content-Type": content_type}
    if signed:
        headers.update(sign(key, body, int(time.time()) if timestamp is None else timestamp))
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        return r.status, await r.json(), r.headers


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_a_signed_case_update_is_accepted_and_on_the_topic() -> None:
    case = make_case()

    async def scenario() -> None:
        async with serving() as (_, ctx, url):
            status, answer, headers = await post(url, as_json(case_fields()))
            assert status == 202 and answer == {"accepted": [case.event_id]}
            assert ctx.records == [case] and ctx.rejected == []
            assert ctx.checkpoints == []  # pushes are not replayed: nothing to resume from
            assert len(headers["X-Request-Id"]) == 16

    asyncio.run(scenario())


def test_unsigned_badly_signed_and_stale_requests_are_refused_with_the_reason() -> None:
    body = as_json(case_fields())

    async def scenario() -> None:
        async with serving() as (_, ctx, url):
            with capture_logs() as logs:
                status, answer, _ = await post(url, body, signed=False)
                assert status == 401 and "missing header X-Mobilise-Timestamp" in answer["error"]
                status, answer, _ = await post(url, body, key=b"not-the-shared-secret-at-all")
                assert status == 401 and answer["error"].startswith("bad signature")
                status, answer, _ = await post(url, body, timestamp=int(time.time()) - 3600)
                assert status == 401 and answer["error"].startswith("stale X-Mobilise-Timestamp")
                status, answer, _ = await post(url, body, timestamp=int(time.time()) + 3600)
                assert status == 401 and "in the future" in answer["error"]
            assert ctx.records == [] and ctx.rejected == []
            assert len([e for e in logs if e["event"] == "webhook_source.unauthorized"]) == 4
            assert SECRET not in repr(logs)

    asyncio.run(scenario())


def test_an_invalid_case_update_is_answered_422_naming_the_field_and_nothing_is_emitted() -> None:
    async def scenario() -> None:
        async with serving() as (_, ctx, url):
            status, answer, _ = await post(url, as_json(case_fields(country="XX")))
            assert status == 422 and answer["accepted"] == []
            (rejected,) = answer["rejected"]
            assert rejected["item"] == 0 and "country" in rejected["reason"]
            assert [e["loc"] for e in rejected["errors"]] == ["country"]
            assert ctx.records == []
            assert len(ctx.rejected) == 1  # dead-lettered by the framework, with the reason

    asyncio.run(scenario())


def test_a_partly_bad_batch_emits_the_good_items_and_lists_the_bad_ones() -> None:
    good = make_case(case_id="bd-good")
    batch = [case_fields(case_id="bd-good"), case_fields(case_id="bd-bad", issues=[]), 42]

    async def scenario() -> None:
        async with serving() as (_, ctx, url):
            status, answer, _ = await post(url, as_json(batch))
            assert status == 422
            assert answer["accepted"] == [good.event_id]
            assert [r["item"] for r in answer["rejected"]] == [1, 2]
            assert [e["loc"] for e in answer["rejected"][0]["errors"]] == ["issues"]
            assert "not a case update: a JSON int" in answer["rejected"][1]["reason"]
            assert "the other 1 were accepted" in answer["error"]
            assert ctx.records == [good]

    asyncio.run(scenario())


def test_bodies_that_are_not_case_updates_are_refused() -> None:
    async def scenario() -> None:
        async with serving(max_body_bytes=4096) as (_, ctx, url):
            status, answer, _ = await post(url, b'{"case_id": ')
            assert status == 400 and "not valid JSON" in answer["error"]
            status, answer, _ = await post(url, b"[]")
            assert status == 400 and "non-empty JSON array" in answer["error"]
            status, answer, _ = await post(url, b'"a string"')
            assert status == 400
            status, answer, _ = await post(url, as_json(case_fields()), content_type="text/plain")
            assert status == 415 and "send application/json" in answer["error"]
            status, answer, _ = await post(url, as_json([1] * 1001))
            assert status == 413 and "at most 1000" in answer["error"]
            status, answer, _ = await post(url, as_json(case_fields(summary={"en": "x" * 5000})))
            assert status == 413 and "larger than 4096 bytes" in answer["error"]
            assert ctx.records == [] and ctx.rejected == []

    asyncio.run(scenario())


def test_an_oversized_chunked_body_is_refused_while_being_read() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 1024

    async def scenario() -> None:
        async with serving(max_body_bytes=4096) as (_, ctx, url):
            async with aiohttp.ClientSession() as session:
                headers = {"Content-Type": "application/json"}
                async with session.post(url, data=chunks(), headers=headers) as response:
                    assert response.status == 413
                    assert "larger than 4096 bytes" in (await response.json())["error"]
            assert ctx.records == []

    asyncio.run(scenario())


def test_get_is_answered_405_allowing_post() -> None:
    async def scenario() -> None:
        async with serving(path="/hooks/tracker") as (_, _, url), aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                assert response.status == 405 and response.headers["Allow"] == "POST"
                assert "POST case updates to /hooks/tracker" in (await response.json())["error"]
            async with session.post(url.replace("/tracker", "/other")) as response:
                assert response.status == 404

    asyncio.run(scenario())


def test_when_the_broker_is_down_the_answer_is_503_and_nothing_is_accepted_until_a_retry() -> None:
    case = make_case()

    async def scenario() -> None:
        async with serving(BrokerDown(failures=1)) as (_, ctx, url):
            status, answer, headers = await post(url, as_json(case_fields()))
            assert status == 503 and headers["Retry-After"] == "5"
            assert "nothing of this request was accepted" in answer["error"]
            assert ctx.records == []
            status, answer, _ = await post(url, as_json(case_fields()))  # the sender tries again
            assert status == 202 and answer == {"accepted": [case.event_id]}
            assert ctx.records == [case]

    asyncio.run(scenario())


def test_a_repeated_push_and_a_restart_emit_nothing_new_and_keep_the_event_id() -> None:
    case = make_case()

    async def scenario() -> None:
        config = WebhookSourceConfig(port=0, secret=SecretStr(SECRET))
        source = WebhookSource(config)
        await source.setup()
        port = source.port
        first = MemorySourceContext("case-updates")
        task = asyncio.create_task(source.run(first))
        url = f"http://127.0.0.1:{port}/case-updates"
        for _ in range(2):  # the sender retries: the same event id, dropped downstream
            status, answer, _ = await post(url, as_json(case_fields()))
            assert status == 202 and answer == {"accepted": [case.event_id]}
        first.stopping.set()
        await asyncio.wait_for(task, WAIT)  # run() returns promptly once stopping is set
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(url, as_json(case_fields()))  # no longer listening

        # Run again: the same port; nothing is replayed (no checkpoint, nothing to resume).
        second = MemorySourceContext("case-updates", checkpoint=first.checkpoint)
        await source.setup()
        task = asyncio.create_task(source.run(second))
        status, answer, _ = await post(url, as_json(case_fields(status="remedy_won")))
        assert status == 202 and source.port == port
        second.stopping.set()
        await asyncio.wait_for(task, WAIT)
        await source.close()
        assert [r.event_id for r in first.records] == [case.event_id, case.event_id]
        assert [r.status.value for r in second.records] == ["remedy_won"]
        assert first.checkpoints == second.checkpoints == []

    asyncio.run(scenario())


def test_the_sink_delivers_to_the_source() -> None:
    records = cases(3)

    async def scenario() -> None:
        async with serving() as (_, ctx, url), open_sink(url) as sink:
            outcomes = await sink.deliver(records)
            assert all(o.accepted and o.provider_message_id for o in outcomes)
            assert sorted(ctx.records, key=lambda r: r.case_id) == records

    asyncio.run(scenario())


def test_a_port_in_use_fails_at_setup_naming_it() -> None:
    async def scenario() -> None:
        async with serving() as (source, _, _):
            other = WebhookSource(WebhookSourceConfig(port=source.port or 0, secret=SecretStr(SECRET)))
            with pytest.raises(RetryableError, match=f"127.0.0.1:{source.port}: the port is in use"):
                await other.setup()

    asyncio.run(scenario())


def test_source_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="port"):
        WebhookSourceConfig.model_validate({"secret": SECRET})
    with pytest.raises(ValidationError, match="secret"):
        WebhookSourceConfig.model_validate({"port": 8090, "secret": "short"})
    with pytest.raises(ValidationError, match="path"):
        WebhookSourceConfig.model_validate({"port": 8090, "secret": SECRET, "path": "no-slash"})
    config = WebhookSourceConfig.model_validate({"port": 8090, "secret": SECRET})
    assert (config.host, config.path, config.tolerance, config.max_body_bytes) == (
        "127.0.0.1",
        "/case-updates",
        300,
        1024 * 1024,
    )
    assert SECRET not in repr(config)
    assert WebhookSource.produces == ("case-updates",)
