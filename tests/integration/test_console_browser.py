"""A coordinator in chromium: signs in with a token, publishes through the console, follows the case."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mobilise.broker import EmbeddedBroker, free_port
from mobilise.settings import load_settings
from mobilise.web import BackgroundWebServer
from mobilise.web.tokens import issue_token
from schemas import CaseUpdate, TokenRole
from streams.admin import publish

from .harness import PipelineHarness

pytestmark = pytest.mark.integration


def test_a_coordinator_publishes_an_urgent_action_through_the_console_in_a_browser(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Screenshots go to ``MOBILISE_SCREENSHOTS`` when set (``docs/screenshots``), else to tmp_path."""
    from playwright.sync_api import Page, expect, sync_playwright

    pipeline = PipelineHarness(broker, tmp_path)
    shots = Path(os.environ.get("MOBILISE_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)

    def shot(page: Page, name: str) -> None:
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    issued = issue_token("coordinator-asia", TokenRole.COORDINATOR, now=datetime.now(UTC))
    publish(
        [broker.bootstrap],
        pipeline.names.api_tokens,
        [(issued.record.token_id, issued.record.model_dump_json().encode())],
    )
    port = free_port()
    settings = load_settings(
        kafka_bootstrap_servers=broker.bootstrap,
        topic_prefix=pipeline.names.prefix,
        partitions=pipeline.partitions,
        public_url=f"http://127.0.0.1:{port}",
        secret_key="a-secret-key-for-the-console-browser-test-0123456789",
    )
    with BackgroundWebServer(settings, port=port) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(f"{server.url}/console")
            expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
            shot(page, "console-sign-in")
            page.get_by_label("API token").fill(issued.token)
            page.get_by_role("button", name="Sign in").click()
            # The console answers "starting" until it has read its topics: a bounded wait.
            for _ in range(60):
                if page.get_by_role("heading", level=1).inner_text() == "Cases":
                    break
                page.wait_for_timeout(500)
                page.goto(f"{server.url}/console/cases")
            expect(page.get_by_role("heading", level=1)).to_have_text("Cases")

            page.get_by_role("link", name="Publish an update").first.click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Publish an update")
            page.get_by_label("Case id").fill("bd-2026-dhaka-knit")
            page.get_by_label("New status").select_option("urgent_action")
            page.get_by_label("Title in English").fill("Union leaders fired at Dhaka Knitwear")
            page.get_by_label("Summary in English").fill("Twelve union leaders were dismissed.")
            page.get_by_role("button", name="Publish").click()
            # No country and no issue yet: nothing is published, and each field says why.
            expect(page.get_by_role("alert")).to_contain_text("Nothing was published")
            shot(page, "console-publish-errors")

            page.get_by_label("Country of the factory").select_option("BD")
            page.get_by_label("Union busting").check()
            page.get_by_label("What people should do").select_option("email_brand")
            page.get_by_label("Instructions in English").fill("Email the CEO and demand reinstatement.")
            page.get_by_label("Target: name").fill("H&M Group")
            page.get_by_label("Target: email address").fill("ceo-office@example.com")
            page.get_by_role("button", name="Publish").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Case bd-2026-dhaka-knit")
            expect(page.get_by_text("Union leaders fired at Dhaka Knitwear").first).to_be_visible()
            shot(page, "console-case")
            page.get_by_role("link", name="Cases").first.click()
            expect(page.get_by_role("link", name="bd-2026-dhaka-knit")).to_be_visible()
            shot(page, "console-cases")
        finally:
            browser.close()

    [record] = pipeline.read_topic(pipeline.names.case_updates)
    published = CaseUpdate.model_validate_json(record.value)
    assert (published.case_id, published.status, published.country) == (
        "bd-2026-dhaka-knit",
        "urgent_action",
        "BD",
    )
    assert published.published_by == "coordinator-asia"
    assert (
        published.action_call is not None and published.action_call.target.email == "ceo-office@example.com"
    )
