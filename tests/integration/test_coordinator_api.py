"""The coordinators' JSON API over real HTTP, against the real broker: publishing with its audit
record, idempotency, validation, tokens (made by the CLI and by the API, revoked), cases and counts,
calling off a wave."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mobilise.broker import EmbeddedBroker
from mobilise.settings import Settings, load_settings
from mobilise.web import BackgroundWebServer, create_app
from mobilise.web.publisher import KafkaPublisher
from mobilise.web.tokens import issue_token
from schemas import AuditRecord, CaseUpdate, DeliveryEvent, TokenRole, WaveCancellation
from schemas._base import stable_id
from streams.admin import create_topics, publish
from streams.topics import TopicNames, topic_specs

from .coordinators import TIMEOUT, add_token, read_all, until, web_settings
from .harness import PipelineHarness, subscription
from .test_waves import _wait_held, _waved

pytestmark = pytest.mark.integration


def update_body(case_id: str = "bd-2026-1", **fields: Any) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "status": "urgent_action",
        "title": {"en": "Union leaders fired at Dhaka Knitwear", "fr": "Syndicalistes licenciés"},
        "summary": {"en": "Twelve union leaders were dismissed after registering their union."},
        "country": "BD",
        "brands": ["H&M"],
        "issues": ["union_busting"],
        "occurred_at": "2026-03-01T08:00:00Z",
        **fields,
    }


class Api:
    """The web app of one pipeline on a loopback port, with an admin and a coordinator token."""

    def __init__(self, pipeline: PipelineHarness) -> None:
        self.pipeline = pipeline
        self.admin = add_token(pipeline, "Admin Ada", TokenRole.ADMIN)
        self.coordinator = add_token(pipeline, "coordinator-asia", TokenRole.COORDINATOR)
        self.settings: Settings = web_settings(pipeline)
        self.server = BackgroundWebServer(self.settings)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.server.url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # loopback only
                status, answer, text = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, answer, text = error.code, dict(error.headers), error.read()
        assert answer.get("Content-Type", "").startswith("application/json"), (status, answer, text[:200])
        return status, answer, json.loads(text)

    def wait_ready(self) -> None:
        until(
            "the API to have read its topics",
            lambda: self.call("GET", "/api/v1/cases", token=self.coordinator.token)[0] == 200,
        )


@pytest.fixture
def pipeline(broker: EmbeddedBroker, tmp_path: Path) -> PipelineHarness:
    return PipelineHarness(broker, tmp_path)


@pytest.fixture
def api(pipeline: PipelineHarness) -> Iterator[Api]:
    running = Api(pipeline)
    running.server.start()
    try:
        running.wait_ready()
        yield running
    finally:
        running.server.stop()


def case_updates(pipeline: PipelineHarness) -> list[tuple[str, CaseUpdate]]:
    return [
        (r.key.decode(), CaseUpdate.model_validate_json(r.value))
        for r in read_all(pipeline, pipeline.names.case_updates)
    ]


def audit_records(pipeline: PipelineHarness) -> list[tuple[str, AuditRecord]]:
    return [
        (r.key.decode(), AuditRecord.model_validate_json(r.value))
        for r in read_all(pipeline, pipeline.names.audit)
    ]


def test_a_published_update_is_on_its_topic_with_an_audit_record_saying_who_when_and_what(
    api: Api, pipeline: PipelineHarness
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    status, headers, answer = api.call(
        "POST", "/api/v1/case-updates", update_body(), token=api.coordinator.token
    )
    assert status == 202, answer
    assert answer["case_id"] == "bd-2026-1" and answer["event_id"].startswith("evt-")
    assert headers["Location"] == "/api/v1/cases/bd-2026-1"

    [(key, update)] = case_updates(pipeline)
    assert key == "bd-2026-1"
    assert update.event_id == answer["event_id"]
    assert update.published_by == "coordinator-asia"  # the token's name, not given in the body
    [(audit_key, audit)] = audit_records(pipeline)
    assert audit_key == "bd-2026-1"
    assert audit.actor_token_id == api.coordinator.record.token_id and audit.actor_name == "coordinator-asia"
    assert audit.action == "case_update.published" and audit.via == "api"
    assert (audit.event_id, audit.case_id, audit.status.value) == (
        answer["event_id"],
        "bd-2026-1",
        "urgent_action",
    )
    assert before <= audit.at <= datetime.now(UTC) + timedelta(seconds=1)
    assert audit.remote_address == "127.0.0.1"
    assert audit.idempotency_key is None

    # Read your own write: the case is there at once.
    status, _, case = api.call("GET", "/api/v1/cases/bd-2026-1", token=api.coordinator.token)
    assert status == 200 and [e["event_id"] for e in case["timeline"]] == [answer["event_id"]]


def test_an_idempotency_key_publishes_once_and_refuses_another_body(
    api: Api, pipeline: PipelineHarness
) -> None:
    token = api.coordinator.token
    key = {"Idempotency-Key": "2f1e8c1a-retry-me"}
    first = api.call("POST", "/api/v1/case-updates", update_body(), token=token, headers=key)
    second = api.call("POST", "/api/v1/case-updates", update_body(), token=token, headers=key)
    assert first[0] == second[0] == 202
    expected = stable_id("api", api.coordinator.record.token_id, "2f1e8c1a-retry-me")
    assert first[2]["event_id"] == second[2]["event_id"] == expected

    status, _, answer = api.call(
        "POST", "/api/v1/case-updates", update_body(status="escalated"), token=token, headers=key
    )
    assert status == 422
    assert answer["error"] == "validation_failed"
    [problem] = answer["fields"]
    assert problem["loc"] == "Idempotency-Key" and expected in problem["msg"]

    status, _, other = api.call(
        "POST", "/api/v1/case-updates", update_body(), token=token, headers={"Idempotency-Key": "another"}
    )
    assert status == 202 and other["event_id"] != expected
    assert [u.event_id for _, u in case_updates(pipeline)] == [expected, other["event_id"]]
    audits = [a for _, a in audit_records(pipeline)]
    assert [(a.event_id, a.idempotency_key) for a in audits] == [
        (expected, "2f1e8c1a-retry-me"),
        (other["event_id"], "another"),
    ]

    status, _, answer = api.call(
        "POST", "/api/v1/case-updates", update_body(), token=token, headers={"Idempotency-Key": "a b"}
    )
    assert status == 422 and answer["fields"][0]["loc"] == "Idempotency-Key"

    # An event id of the caller's own: the same update again is fine, another one under it is not.
    mine = update_body("kh-2026-7", country="KH", event_id="kh-2026-7-escalated")
    assert api.call("POST", "/api/v1/case-updates", mine, token=token)[2]["event_id"] == "kh-2026-7-escalated"
    assert api.call("POST", "/api/v1/case-updates", mine, token=token)[0] == 202
    status, _, answer = api.call("POST", "/api/v1/case-updates", {**mine, "status": "closed"}, token=token)
    assert status == 422 and [p["loc"] for p in answer["fields"]] == ["event_id"]
    assert [u.event_id for _, u in case_updates(pipeline)].count("kh-2026-7-escalated") == 1


def test_invalid_requests_are_refused_with_the_fields_at_fault(api: Api, pipeline: PipelineHarness) -> None:
    token = api.coordinator.token
    body = update_body(
        country="Bangladesh",
        action_call={
            "kind": "sign",
            "instructions": {"en": "Sign"},
            "target": {"name": "CEO", "url": "ftp://x"},
        },
    )
    status, _, answer = api.call("POST", "/api/v1/case-updates", body, token=token)
    assert status == 422 and answer["error"] == "validation_failed"
    locs = {p["loc"]: p["msg"] for p in answer["fields"]}
    assert set(locs) == {"country", "action_call.target.url"}, locs
    assert "ISO 3166-1" in locs["country"] and "'BANGLADESH'" in locs["country"]
    assert "'ftp://x'" in locs["action_call.target.url"]

    status, _, answer = api.call(
        "POST", "/api/v1/case-updates", update_body(published_by="someone else"), token=token
    )
    assert status == 422 and [p["loc"] for p in answer["fields"]] == ["published_by"]

    status, _, answer = api.call("POST", "/api/v1/case-updates", [update_body()], token=token)
    assert status == 422 and answer["fields"][0]["loc"] == ""

    status, _, answer = api.call(
        "POST", "/api/v1/case-updates", token=token, raw=b"{", headers={"Content-Type": "application/json"}
    )
    assert (status, answer["error"]) == (400, "invalid_json")
    status, _, answer = api.call(
        "POST", "/api/v1/case-updates", token=token, raw=b"case_id=x", headers={"Content-Type": "text/plain"}
    )
    assert (status, answer["error"]) == (415, "unsupported_media_type")
    huge = update_body(
        summary={"en": "x" * 19_000, "fr": "y" * 19_000, "es": "z" * 19_000}, internal={"a": "b" * 300_000}
    )
    status, _, answer = api.call("POST", "/api/v1/case-updates", huge, token=token)
    assert (status, answer["error"]) == (413, "body_too_large")
    # Without a Content-Length (chunked), the body is cut off as soon as it is too large.
    connection = http.client.HTTPConnection("127.0.0.1", api.server.port, timeout=60)
    try:
        chunks = iter([b'{"internal": {"a": "'] + [b"x" * 65_536] * 8 + [b'"}}'])
        connection.request(
            "POST",
            "/api/v1/case-updates",
            body=chunks,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["error"]) == (413, "body_too_large")
    finally:
        connection.close()

    assert case_updates(pipeline) == [] and audit_records(pipeline) == []


def test_missing_invalid_and_revoked_tokens_get_401_and_roles_are_enforced(api: Api) -> None:
    status, headers, answer = api.call("GET", "/api/v1/cases")
    assert (
        status == 401
        and headers["WWW-Authenticate"].startswith("Bearer")
        and answer["error"] == "unauthorized"
    )
    forged = api.coordinator.token[:-4] + "AAAA"
    for bad in (forged, "mob_0123456789abcdef_" + "x" * 43, "not-a-token"):
        status, headers, _ = api.call("GET", "/api/v1/cases", token=bad)
        assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]

    for method, path, body in (
        ("GET", "/api/v1/tokens", None),
        ("POST", "/api/v1/tokens", {"name": "x"}),
        ("DELETE", f"/api/v1/tokens/{api.admin.record.token_id}", None),
    ):
        status, _, answer = api.call(method, path, body, token=api.coordinator.token)
        assert (status, answer["error"]) == (403, "forbidden"), (method, path)

    # An admin makes a token through the API; it works at once, and stops at once when revoked.
    status, _, made = api.call("POST", "/api/v1/tokens", {"name": "coordinator-latam"}, token=api.admin.token)
    assert (
        status == 201
        and made["role"] == "coordinator"
        and made["token"].startswith(f"mob_{made['token_id']}_")
    )
    assert api.call("GET", "/api/v1/cases", token=made["token"])[0] == 200
    status, _, listed = api.call("GET", "/api/v1/tokens", token=api.admin.token)
    assert status == 200 and made["token_id"] in {t["token_id"] for t in listed["tokens"]}
    assert all("token" not in t and "secret_sha256" not in t for t in listed["tokens"])
    status, _, revoked = api.call("DELETE", f"/api/v1/tokens/{made['token_id']}", token=api.admin.token)
    assert status == 200 and revoked["revoked_at"] is not None
    status, headers, answer = api.call("GET", "/api/v1/cases", token=made["token"])
    assert status == 401 and "revoked" in answer["detail"]
    status, _, answer = api.call("DELETE", "/api/v1/tokens/0000000000000000", token=api.admin.token)
    assert (status, answer["error"]) == (404, "not_found")


def run_cli(pipeline: PipelineHarness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mobilise", "tokens", *args],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tokens_made_by_the_cli_work_and_stop_once_their_revocation_is_read(
    api: Api, pipeline: PipelineHarness
) -> None:
    made = run_cli(pipeline, "create", "--name", "Coordinator Africa", "--role", "admin")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    token_id = token.split("_")[1]
    assert token.startswith("mob_") and "not shown again" in made.stderr and token not in made.stderr

    # The web process learns of it from the topic.
    until("the new token to be read", lambda: api.call("GET", "/api/v1/tokens", token=token)[0] == 200)
    status, _, answer = api.call(
        "POST", "/api/v1/case-updates", update_body("cm-2026-3", country="CM"), token=token
    )
    assert status == 202
    stored = [u for _, u in case_updates(pipeline) if u.event_id == answer["event_id"]]
    assert [u.published_by for u in stored] == ["Coordinator Africa"]
    # Only the hash is stored.
    [record] = [r for r in read_all(pipeline, pipeline.names.api_tokens) if r.key.decode() == token_id]
    assert token.split("_", 2)[2] not in record.value.decode()

    listed = run_cli(pipeline, "list")
    assert listed.returncode == 0, listed.stderr
    [line] = [line for line in listed.stdout.splitlines() if line.startswith(token_id)]
    assert line.split("\t")[1:3] == ["admin", "active"] and line.endswith("Coordinator Africa")

    revoked = run_cli(pipeline, "revoke", token_id)
    assert revoked.returncode == 0, revoked.stderr
    until("the revocation to be read", lambda: api.call("GET", "/api/v1/cases", token=token)[0] == 401)
    assert "\trevoked " in run_cli(pipeline, "list").stdout
    again = run_cli(pipeline, "revoke", token_id)
    assert again.returncode == 0 and "already revoked" in again.stdout
    unknown = run_cli(pipeline, "revoke", "ffffffffffffffff")
    assert unknown.returncode == 2 and "mobilise tokens list" in unknown.stderr


def delivery(case_id: str, event_id: str, alert: str, outcome: str, n: int = 0) -> DeliveryEvent:
    return DeliveryEvent.model_validate_json(
        json.dumps(
            {
                "alert_id": alert,
                "event_id": event_id,
                "case_id": case_id,
                "subscriber_id": f"sub-{alert}",
                "sink": "outbox",
                "outcome": outcome,
                "provider_event_id": f"pe-{alert}-{n}" if outcome in {"bounced", "delivered"} else None,
                "at": "2026-03-01T09:00:00Z",
            }
        )
    )


def test_cases_list_their_latest_status_and_count_matched_sent_failed_bounced(
    api: Api, pipeline: PipelineHarness
) -> None:
    token = api.coordinator.token
    published = {}
    for case_id, status, occurred in (
        ("bd-2026-1", "opened", "2026-03-01T08:00:00Z"),
        ("kh-2026-7", "escalated", "2026-03-02T08:00:00Z"),
        ("bd-2026-1", "urgent_action", "2026-03-03T08:00:00Z"),
    ):
        body = update_body(case_id, status=status, occurred_at=occurred, country=case_id[:2].upper())
        code, _, answer = api.call("POST", "/api/v1/case-updates", body, token=token)
        assert code == 202
        published[(case_id, status)] = answer["event_id"]
    urgent = published[("bd-2026-1", "urgent_action")]
    events = [
        delivery("bd-2026-1", urgent, "a1", "accepted"),
        delivery("bd-2026-1", urgent, "a1", "accepted"),  # the same alert again counts once
        delivery("bd-2026-1", urgent, "a2", "accepted"),
        delivery("bd-2026-1", urgent, "a2", "delivered"),
        delivery("bd-2026-1", urgent, "a3", "accepted"),
        delivery("bd-2026-1", urgent, "a3", "bounced"),
        delivery("bd-2026-1", urgent, "a4", "failed"),
        delivery("bd-2026-1", urgent, "a4", "dead_lettered"),
        delivery("bd-2026-1", urgent, "a5", "failed"),
        delivery("bd-2026-1", urgent, "a5", "duplicate"),
        delivery("kh-2026-7", published[("kh-2026-7", "escalated")], "b1", "dead_lettered"),
    ]
    publish(
        [pipeline.broker.bootstrap],
        pipeline.names.deliveries,
        [(e.subscriber_id, e.model_dump_json().encode()) for e in events],
    )
    expected = {"matched": 5, "sent": 4, "failed": 1, "bounced": 1, "opened": None, "acted": 0}

    def counted() -> bool:
        return api.call("GET", "/api/v1/cases/bd-2026-1", token=token)[2]["counts"] == expected

    until("the deliveries to be counted", counted)
    status, _, case = api.call("GET", "/api/v1/cases/bd-2026-1", token=token)
    assert status == 200 and case["status"] == "urgent_action" and case["updates"] == 2
    assert [(e["status"], e["event_id"]) for e in case["timeline"]] == [
        ("opened", published[("bd-2026-1", "opened")]),
        ("urgent_action", urgent),
    ]
    assert {e["published_by"] for e in case["timeline"]} == {"coordinator-asia"}

    status, _, listing = api.call("GET", "/api/v1/cases", token=token)
    assert status == 200
    assert [(c["case_id"], c["status"]) for c in listing["cases"]] == [
        ("bd-2026-1", "urgent_action"),
        ("kh-2026-7", "escalated"),
    ]
    assert listing["cases"][1]["counts"] == {
        "matched": 1,
        "sent": 0,
        "failed": 1,
        "bounced": 0,
        "opened": None,
        "acted": 0,
    }

    status, _, answer = api.call("GET", "/api/v1/cases/no-such-case", token=token)
    assert (status, answer["error"]) == (404, "not_found")
    status, _, answer = api.call("GET", "/api/v1/no-such-route", token=token)
    assert (status, answer["error"]) == (404, "not_found")


def wave_cancellations(pipeline: PipelineHarness) -> list[tuple[int, str, WaveCancellation]]:
    return [
        (r.partition, r.key.decode(), WaveCancellation.model_validate_json(r.value))
        for r in read_all(pipeline, pipeline.names.wave_cancellations)
    ]


def test_a_wave_is_called_off_on_every_partition_and_calling_it_off_again_is_harmless(
    api: Api, pipeline: PipelineHarness
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    status, _, answer = api.call(
        "POST", "/api/v1/waves/day-of-action/cancel", {"case_id": "bd-2026-1"}, token=api.coordinator.token
    )
    assert status == 202, answer
    assert answer == {"wave_id": "day-of-action", "case_id": "bd-2026-1", "partitions": pipeline.partitions}
    copies = wave_cancellations(pipeline)
    # One copy on each partition, as `mobilise waves cancel` writes: each worker learns it.
    assert sorted(partition for partition, _, _ in copies) == list(range(pipeline.partitions))
    assert {key for _, key, _ in copies} == {"day-of-action"}
    [cancellation] = {c for _, _, c in copies}
    assert (cancellation.wave_id, cancellation.case_id) == ("day-of-action", "bd-2026-1")
    assert cancellation.cancelled_by == "coordinator-asia"  # the token's name
    assert before <= cancellation.at <= datetime.now(UTC) + timedelta(seconds=1)
    # Audited like a publication: who, when, which wave of which case.
    [(audit_key, audit)] = audit_records(pipeline)
    assert audit_key == "bd-2026-1"
    assert (audit.action, audit.via, audit.wave_id, audit.case_id) == (
        "wave.cancelled",
        "api",
        "day-of-action",
        "bd-2026-1",
    )
    assert audit.actor_token_id == api.coordinator.record.token_id and audit.actor_name == "coordinator-asia"
    assert audit.event_id is None and audit.request_sha256 is None

    # Again, and by an admin: harmless (the workers keep one copy per wave and partition).
    for token in (api.coordinator.token, api.admin.token):
        status, _, again = api.call(
            "POST", "/api/v1/waves/day-of-action/cancel", {"case_id": "bd-2026-1"}, token=token
        )
        assert status == 202 and again["partitions"] == pipeline.partitions
    assert len(wave_cancellations(pipeline)) == 3 * pipeline.partitions
    audits = [a for _, a in audit_records(pipeline)]
    assert [a.actor_name for a in audits] == ["coordinator-asia", "coordinator-asia", "Admin Ada"]
    assert len({a.audit_id for a in audits}) == 2  # a retry by the same token is the same record


def test_a_wave_called_off_through_the_api_is_never_sent_by_the_worker_holding_it(
    api: Api, pipeline: PipelineHarness
) -> None:
    people = [
        subscription("dhaka@example.org", countries=["BD"], interests=["union_busting"]),
        subscription(
            "lima@example.org", countries=["BD"], interests=["union_busting"], time_zone="America/Lima"
        ),
    ]
    try:
        pipeline.start_worker()
        pipeline.wait_ready()
        for person in people:  # one at a time: see test_follow_ups
            pipeline.subscribe(person)
            pipeline.wait_indexed(person.subscriber_id)
        # Hours away: still held however slow the machine is.
        called_off = _waved("bd-wave-api", datetime.now(UTC) + timedelta(hours=2), wave_id="api-called-off")
        pipeline.publish(called_off)
        _wait_held(pipeline, called_off, len(people))

        status, _, answer = api.call(
            "POST",
            "/api/v1/waves/api-called-off/cancel",
            {"case_id": "bd-wave-api"},
            token=api.coordinator.token,
        )
        assert status == 202, answer
        pipeline.wait_until(
            "the wave's held alerts to be cancelled",
            lambda: (
                {d.subscriber_id for d in pipeline.deliveries() if d.outcome == "cancelled"}
                == {p.subscriber_id for p in people}
            ),
        )
        assert pipeline.emails_for(called_off.event_id) == []
        outcomes = Counter(d.outcome for d in pipeline.deliveries() if d.event_id == called_off.event_id)
        assert outcomes == {"cancelled": len(people)}
    finally:
        pipeline.stop()


def test_a_wave_cancellation_that_is_not_valid_is_refused_with_the_fields_at_fault(
    api: Api, pipeline: PipelineHarness
) -> None:
    token = api.coordinator.token
    path = "/api/v1/waves/day-of-action/cancel"
    for body, loc in (
        ({}, "case_id"),
        ({"case_id": 7}, "case_id"),
        ({"case_id": "bd-2026-1", "wave": "x"}, "wave"),
        ([{"case_id": "bd-2026-1"}], ""),
    ):
        status, _, answer = api.call("POST", path, body, token=token)
        assert (status, answer["error"]) == (422, "validation_failed"), body
        assert [p["loc"] for p in answer["fields"]] == [loc], answer
    status, _, answer = api.call("POST", path, {"case_id": "no spaces"}, token=token)
    assert status == 422 and [p["loc"] for p in answer["fields"]] == ["case_id"]
    assert "letters, digits" in answer["fields"][0]["msg"] and "'no spaces'" in answer["fields"][0]["msg"]
    status, _, answer = api.call(
        "POST", "/api/v1/waves/not%20a%20wave/cancel", {"case_id": "bd-1"}, token=token
    )
    assert status == 422 and [p["loc"] for p in answer["fields"]] == ["wave_id"]
    assert "mobilise publish" in answer["fields"][0]["msg"]

    status, headers, answer = api.call("POST", path, {"case_id": "bd-2026-1"})
    assert (status, answer["error"]) == (401, "unauthorized") and "WWW-Authenticate" in headers
    status, _, answer = api.call(
        "POST", path, token=token, raw=b"case_id=bd-1", headers={"Content-Type": "text/plain"}
    )
    assert (status, answer["error"]) == (415, "unsupported_media_type")
    status, _, answer = api.call("GET", path, token=token)
    assert (status, answer["error"]) == (405, "method_not_allowed")
    assert wave_cancellations(pipeline) == []


def test_kafka_down_answers_503_with_retry_after_and_confirms_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        with EmbeddedBroker() as private:
            names = TopicNames(prefix="down-")
            create_topics([private.bootstrap], topic_specs(names, 1), 1)
            issued = issue_token("coordinator-asia", TokenRole.COORDINATOR, now=datetime.now(UTC))
            publish(
                [private.bootstrap],
                names.api_tokens,
                [(issued.record.token_id, issued.record.model_dump_json().encode())],
            )
            settings = load_settings(
                kafka_bootstrap_servers=private.bootstrap, topic_prefix="down-", partitions=1
            )
            app = create_app(settings, publisher=KafkaPublisher(settings.bootstrap_servers, timeout=3))
            async with TestClient(TestServer(app, host="127.0.0.1")) as client:
                auth = {"Authorization": f"Bearer {issued.token}"}
                deadline = asyncio.get_running_loop().time() + TIMEOUT
                while (await client.get("/api/v1/cases", headers=auth)).status != 200:
                    assert asyncio.get_running_loop().time() < deadline, "the API never became ready"
                    await asyncio.sleep(0.1)
                private.stop()
                for path, body in (
                    ("/api/v1/case-updates", update_body()),
                    ("/api/v1/waves/day-of-action/cancel", {"case_id": "bd-2026-1"}),
                ):
                    response = await client.post(path, json=body, headers=auth)
                    assert response.status == 503, path
                    assert response.headers["Retry-After"].isdigit()
                    assert (await response.json())["error"] == "kafka_unavailable"

    asyncio.run(scenario())
