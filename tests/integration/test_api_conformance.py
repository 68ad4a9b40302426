"""The running API against its own OpenAPI document, with schemathesis: every answer to generated
requests (valid and invalid) has a documented status, content type and body, and none is a 5xx."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from mobilise.broker import EmbeddedBroker
from mobilise.settings import load_settings
from mobilise.web import BackgroundWebServer
from mobilise.web.openapi import OPENAPI_PATH, openapi_document
from mobilise.web.tokens import IssuedToken, issue_token
from schemas import TokenRole
from streams.admin import publish

from .harness import PipelineHarness

pytestmark = [
    pytest.mark.integration,
    # schemathesis's strategies use `random` inside; that is its business, not a fault of the API.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 15

VALID_UPDATE = {
    "case_id": "bd-2026-1",
    "status": "urgent_action",
    "title": {"en": "Union leaders fired at Dhaka Knitwear"},
    "summary": {"en": "Twelve union leaders were dismissed after registering their union."},
    "country": "BD",
    "issues": ["union_busting"],
    "occurred_at": "2026-03-01T08:00:00Z",
}


class Served:
    def __init__(self, url: str, admin: IssuedToken) -> None:
        self.url = url
        self.admin = admin
        self.headers = {"Authorization": f"Bearer {admin.token}"}


@pytest.fixture
def served(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Served]:
    pipeline = PipelineHarness(broker, tmp_path)
    admin = issue_token("Admin Ada", TokenRole.ADMIN, now=datetime.now(UTC))
    publish(
        [broker.bootstrap],
        pipeline.names.api_tokens,
        [(admin.record.token_id, admin.record.model_dump_json().encode())],
    )
    settings = load_settings(
        kafka_bootstrap_servers=broker.bootstrap,
        topic_prefix=pipeline.names.prefix,
        partitions=pipeline.partitions,
    )
    with BackgroundWebServer(settings) as server:
        running = Served(server.url, admin)
        deadline = time.monotonic() + 60
        while True:
            request = urllib.request.Request(server.url + "/api/v1/cases", headers=running.headers)
            try:
                with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the API never read its topics"
            time.sleep(0.1)
        yield running


def test_the_api_answers_as_its_openapi_document_says(served: Served) -> None:
    schema = schemathesis.openapi.from_url(served.url + OPENAPI_PATH)
    assert schema.raw_schema == openapi_document()  # the served document is the one built in code
    seen: Counter[tuple[str, int]] = Counter()

    def call(case: Any) -> None:
        response = case.call_and_validate(base_url=served.url, headers=served.headers, checks=CHECKS)
        seen[(case.operation.label, response.status_code)] += 1

    operations = {result.ok().label: result.ok() for result in schema.get_all_operations()}
    # Known-good requests first, so that the answers with data (202, 200 with a case) are checked too.
    call(operations["POST /api/v1/case-updates"].Case(body=VALID_UPDATE, media_type="application/json"))
    call(operations["GET /api/v1/cases/{case_id}"].Case(path_parameters={"case_id": "bd-2026-1"}))
    call(operations["POST /api/v1/tokens"].Case(body={"name": "someone", "role": "coordinator"}))
    call(
        operations["POST /api/v1/waves/{wave_id}/cancel"].Case(
            path_parameters={"wave_id": "day-of-action"},
            body={"case_id": "bd-2026-1"},
            media_type="application/json",
        )
    )

    for operation in operations.values():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def generated(case: Any) -> None:
                call(case)

            generated()

    statuses = {label: {status for (op, status) in seen if op == label} for label in operations}
    assert 202 in statuses["POST /api/v1/case-updates"] and 422 in statuses["POST /api/v1/case-updates"]
    assert {200, 404} <= statuses["GET /api/v1/cases/{case_id}"]
    assert 200 in statuses["GET /api/v1/cases"] and 201 in statuses["POST /api/v1/tokens"]
    assert 404 in statuses["DELETE /api/v1/tokens/{token_id}"]
    assert {202, 422} <= statuses["POST /api/v1/waves/{wave_id}/cancel"]
