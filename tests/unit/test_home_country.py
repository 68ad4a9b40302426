"""The "Where do you live?" field of the subscription form, and the counters and texts of actions taken."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from multidict import MultiDict

from mobilise.snapshot import StoredRecord
from mobilise.web.acted import progress_text
from mobilise.web.cases_view import CasesView
from mobilise.web.forms import (
    FormValues,
    check,
    error_message,
    form_texts,
    read_form,
    render_form,
    to_subscription,
    values_of,
)
from mobilise.web.pages import PAGE_LANGUAGES
from schemas import ActionCall, ActionTaken, CaseUpdate, DeliveryEvent, taken_id_for

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
VALID = FormValues(email="person@example.org", countries=("BD",), interests=("union_busting",))


def test_home_country_goes_from_the_form_to_the_subscription_and_back() -> None:
    values = read_form(
        MultiDict(
            [
                ("email", "person@example.org"),
                ("countries", "BD"),
                ("interests", "wages"),
                ("statuses", "urgent_action"),
                ("home_country", "nl"),
            ]
        )
    )
    assert values.home_country == "nl" and check(values, with_email=True) == {}
    subscription = to_subscription(
        values, email=values.email, subscriber_id=None, confirmed=False, created_at=NOW
    )
    assert subscription.home_country == "NL"
    assert values_of(subscription).home_country == "NL"
    unsaid = to_subscription(VALID, email=VALID.email, subscriber_id=None, confirmed=False, created_at=NOW)
    assert unsaid.home_country is None and values_of(unsaid).home_country == ""


def test_an_unknown_home_country_is_named_next_to_the_field_in_each_language() -> None:
    wrong = FormValues(**{**VALID.__dict__, "home_country": "XX"})
    assert check(wrong, with_email=True) == {"home_country": "home_country_unknown"}
    for language in PAGE_LANGUAGES:
        assert error_message("home_country_unknown", language)
        assert form_texts(language)["home_country"] and form_texts(language)["home_country_hint"]
    html = render_form(
        language="en",
        with_email=True,
        values=wrong,
        errors={"home_country": "home_country_unknown"},
        csrf="t",
    )
    assert 'id="home_country-error"' in html
    assert 'aria-describedby="home_country-hint home_country-error" aria-invalid="true"' in html
    assert "a protest at a store in your city" in html


def test_the_form_preselects_the_stored_home_country() -> None:
    values = FormValues(**{**VALID.__dict__, "home_country": "FR"})
    html = render_form(language="fr", with_email=False, values=values, errors={}, csrf="t")
    assert '<option value="FR" lang="en" selected>France</option>' in html
    assert "Où habitez-vous ? (facultatif)" in html


def _update(**fields: object) -> CaseUpdate:
    data = {
        "case_id": "bd-2026-1",
        "status": "urgent_action",
        "title": {"en": "Fired"},
        "summary": {"en": "Union leaders fired."},
        "country": "BD",
        "issues": ["union_busting"],
        "occurred_at": "2026-03-01T08:00:00Z",
        "published_by": "coordinator",
        **fields,
    }
    return CaseUpdate.model_validate_json(json.dumps(data))


def _record(topic: str, value: str) -> StoredRecord:
    return StoredRecord(topic=topic, partition=0, offset=0, timestamp=NOW, key=b"k", value=value.encode())


CALL = {"kind": "sign", "instructions": {"en": "Sign."}, "target": {"name": "Brand"}, "goal": {"count": 10}}


def test_actions_are_counted_once_per_taken_id_and_records_read_twice_count_once() -> None:
    view = CasesView(case_updates="u", deliveries="d", actions_taken="a")
    update = _update(action_call=CALL)
    view.fold(_record("u", update.model_dump_json()))
    assert update.action_call is not None
    (action,) = view.actions("bd-2026-1")
    assert (action.acted, action.sent, action.opened, action.progress) == (0, 0, None, 0.0)
    taken = ActionTaken(
        taken_id=taken_id_for(action.action_id, "sub-1"),
        action_id=action.action_id,
        case_id="bd-2026-1",
        event_id=update.event_id,
        subscriber_id="sub-1",
        at=NOW,
    )
    for _ in range(2):
        view.fold(_record("a", taken.model_dump_json()))
    delivery = DeliveryEvent.model_validate_json(
        json.dumps(
            {
                "alert_id": "a1",
                "event_id": update.event_id,
                "case_id": "bd-2026-1",
                "subscriber_id": "sub-1",
                "sink": "outbox",
                "outcome": "accepted",
                "at": "2026-03-01T09:00:00Z",
            }
        )
    )
    view.fold(_record("d", delivery.model_dump_json()))
    (action,) = view.actions("bd-2026-1")
    assert (action.acted, action.sent, action.progress, action.by_region) == (1, 1, 0.1, {"unknown": 1})
    assert view.counts("bd-2026-1").acted == 1


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", "1,234 of 5,000 emails to H&M so far."),
        ("fr", "1\u202f234 sur 5\u202f000 e-mails à H&M pour l'instant."),
        ("es", "1.234 de 5.000 emails to H&M por ahora."),
    ],
)
def test_progress_is_said_in_the_page_language(language: str, expected: str) -> None:
    call = ActionCall.model_validate_json(
        json.dumps({**CALL, "goal": {"count": 5000, "label": {"en": "emails to H&M", "fr": "e-mails à H&M"}}})
    )
    assert progress_text(1234, call, language) == expected
    assert (
        progress_text(1, ActionCall.model_validate_json(json.dumps({**CALL, "goal": None})), language) is None
    )
