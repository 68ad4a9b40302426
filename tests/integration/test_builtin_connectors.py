"""Built-in connectors declared in a file, run by the runtime, the CLI and the worker, on the broker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from connectors.declarations import load_connectors
from connectors.runtime import ConnectorRuntime
from connectors.signing import sign
from mobilise.broker import EmbeddedBroker, free_port
from schemas import DeadLetter, Subscription

from ..fakes.osdi_server import TOKEN, FakeOsdi
from ..fakes.webhook_receiver import WebhookReceiver
from .harness import PipelineHarness, case_update, subscription

pytestmark = pytest.mark.integration

SECRET = "a-long-shared-secret-for-tests"


def _wait(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _dead_letters(pipeline: PipelineHarness, stage: str) -> list[DeadLetter]:
    letters = [
        DeadLetter.model_validate_json(r.value) for r in pipeline.read_topic(pipeline.names.dead_letters)
    ]
    return [d for d in letters if d.stage == stage]


def _declare(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "connectors.yaml"
    path.write_text("connectors:\n" + text)
    return path


async def _run_until(runtime: ConnectorRuntime, done: Callable[[], bool], timeout: float = 60) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(runtime.run(stopping))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done() and loop.time() < deadline and not task.done():
        await asyncio.sleep(0.2)
    stopping.set()
    await asyncio.wait_for(task, 30)


def test_the_webhook_sink_retries_dead_letters_and_resumes_without_resending(
    pipeline: PipelineHarness, tmp_path: Path
) -> None:
    receiver = WebhookReceiver(SECRET, script={"flaky": [503], "refused": [400, 400]})
    with receiver.in_thread():
        declared = _declare(
            tmp_path,
            "  - name: partner\n"
            "    type: webhook-sink\n"
            "    topic: case-updates\n"
            "    start_from: earliest\n"
            "    max_retry_delay: 0.5\n"
            f"    settings: {{url: '{receiver.url}', secret: {SECRET}}}\n",
        )
        updates = {c: case_update(c) for c in ("ok", "flaky", "refused")}
        pipeline.publish(*updates.values())

        def runtime() -> ConnectorRuntime:
            return ConnectorRuntime(
                load_connectors(declared), bootstrap=[pipeline.broker.bootstrap], names=pipeline.names
            )

        asyncio.run(
            _run_until(
                runtime(),
                lambda: len(receiver.accepted()) == 2 and bool(_dead_letters(pipeline, "connector:partner")),
            )
        )
        accepted = {r.body["case_id"]: r for r in receiver.accepted()}
        assert set(accepted) == {"ok", "flaky"}
        assert accepted["flaky"].record_id == updates["flaky"].event_id  # the idempotency key
        assert [r.status for r in receiver.received if r.body["case_id"] == "flaky"] == [503, 200]
        [letter] = _dead_letters(pipeline, "connector:partner")
        assert "400" in letter.reason and "not a case we follow" in letter.reason
        assert json.loads(letter.value or b"")["case_id"] == "refused"

        # Restarted, it starts after its committed offsets: only the new update is sent.
        pipeline.publish(case_update("later"))
        asyncio.run(_run_until(runtime(), lambda: len(receiver.accepted()) == 3))
        assert [r.body["case_id"] for r in receiver.accepted()][2:] == ["later"]
        assert receiver.unsigned == 0


def test_a_worker_runs_declared_connectors_a_pushed_update_reaches_the_subscriber_and_the_partner(
    pipeline: PipelineHarness, tmp_path: Path
) -> None:
    port = free_port()
    receiver = WebhookReceiver(SECRET)
    with receiver.in_thread():
        declared = _declare(
            tmp_path,
            "  - name: tracker\n"
            "    type: webhook-source\n"
            "    topic: case-updates\n"
            f"    settings: {{port: {port}, secret: '${{TRACKER_SECRET}}'}}\n"
            "  - name: partner\n"
            "    type: webhook-sink\n"
            "    topic: case-updates\n"
            "    start_from: earliest\n"
            f"    settings: {{url: '{receiver.url}', secret: {SECRET}}}\n",
        )
        pipeline.start_worker(MOBILISE_CONNECTORS_FILE=str(declared), TRACKER_SECRET=SECRET)
        person = subscription("ana@example.org", countries=["BD"], interests=["union_busting"])
        pipeline.subscribe(person)
        pipeline.wait_ready()
        pipeline.wait_indexed(person.subscriber_id)

        update = case_update("pushed-1")
        body = update.model_dump_json().encode()

        async def push() -> int:
            headers = {"Content-Type": "application/json", **sign(SECRET.encode(), body, int(time.time()))}
            async with aiohttp.ClientSession() as session:
                for _ in range(100):  # the source starts with the worker; a bounded wait for it
                    try:
                        async with session.post(
                            f"http://127.0.0.1:{port}/case-updates", data=body, headers=headers
                        ) as answer:
                            return answer.status
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.3)
            raise AssertionError("the webhook source never listened")

        assert asyncio.run(push()) == 202
        pipeline.wait_processed(update.event_id)
        _wait(lambda: bool(pipeline.emails_for(update.event_id)), "the alert email")
        [email] = pipeline.emails_for(update.event_id)
        assert email["To"].addresses[0].addr_spec == "ana@example.org"
        _wait(lambda: bool(receiver.accepted()), "the partner's copy")
        assert receiver.accepted()[0].record_id == update.event_id


def test_a_subscriber_import_run_from_the_cli_finishes_and_a_second_run_adds_nothing(
    pipeline: PipelineHarness, tmp_path: Path
) -> None:
    members = tmp_path / "members.csv"
    members.write_text(
        "email,name,countries,interests\n"
        "ana@example.org,Ana,BD;KH,wages\n"
        "not-an-address,Bo,BD,wages\n"
        "cy@example.org,Cy,KH,living_wage\n"
    )
    declared = _declare(
        tmp_path,
        "  - name: members\n"
        "    type: subscriber-file\n"
        "    topic: subscriptions\n"
        f"    settings: {{path: '{members}', confirmed: true}}\n",
    )

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mobilise", "connectors", "run", str(declared)],
            env=pipeline.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    first = run()
    assert first.returncode == 0, first.stderr
    assert "members: finished" in first.stderr
    stored = [
        Subscription.model_validate_json(r.value) for r in pipeline.read_topic(pipeline.names.subscriptions)
    ]
    assert sorted(s.email for s in stored) == ["ana@example.org", "cy@example.org"]
    assert all(s.confirmed for s in stored)
    [rejected] = _dead_letters(pipeline, "connector:members")
    assert "row 3" in rejected.reason and "email" in rejected.reason
    assert (tmp_path / "members.csv.rejected.csv").exists()

    second = run()
    assert second.returncode == 0, second.stderr
    assert len(pipeline.read_topic(pipeline.names.subscriptions)) == 2


def test_subscribers_move_out_to_an_osdi_server_and_back_into_another_deployment(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    leaving, arriving = PipelineHarness(broker, tmp_path / "a"), PipelineHarness(broker, tmp_path / "b")
    people = [
        subscription("ana@example.org", countries=["BD", "KH"], interests=["wages"]),
        subscription("bo@example.org", worldwide=True, brands=["Zara"], language="es"),
    ]
    leaving.subscribe(*people)
    (tmp_path / "a").mkdir(exist_ok=True)
    (tmp_path / "b").mkdir(exist_ok=True)

    async def move() -> None:
        async with FakeOsdi() as crm:
            export = _declare(
                tmp_path / "a",
                "  - name: crm-out\n"
                "    type: osdi-sink\n"
                "    topic: subscriptions\n"
                "    start_from: earliest\n"
                f"    settings: {{url: '{crm.people_url}', tags_url: '{crm.tags_url}',\n"
                f"                api_token: {TOKEN}}}\n",
            )
            out = ConnectorRuntime(load_connectors(export), bootstrap=[broker.bootstrap], names=leaving.names)
            await _run_until(out, lambda: len(crm.people) == 2)
            imported = _declare(
                tmp_path / "b",
                "  - name: crm-in\n"
                "    type: osdi-source\n"
                "    topic: subscriptions\n"
                f"    settings: {{url: '{crm.people_url}', api_token: {TOKEN},\n"
                "                confirmed: true, once: true}\n",
            )
            into = ConnectorRuntime(
                load_connectors(imported), bootstrap=[broker.bootstrap], names=arriving.names
            )
            await _run_until(into, lambda: into.statuses["crm-in"].state == "finished")
            assert into.statuses["crm-in"].state == "finished"

    asyncio.run(move())
    arrived = {
        s.email: s
        for s in (
            Subscription.model_validate_json(r.value)
            for r in arriving.read_topic(arriving.names.subscriptions)
        )
    }
    assert set(arrived) == {"ana@example.org", "bo@example.org"}
    for person in people:
        moved = arrived[person.email]
        assert moved.subscriber_id == person.subscriber_id
        assert (moved.countries, moved.worldwide, moved.interests, moved.brands, moved.language) == (
            person.countries,
            person.worldwide,
            person.interests,
            person.brands,
            person.language,
        )
