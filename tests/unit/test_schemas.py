from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import CaseUpdate, Region, Subscription, alert_id_for, subscriber_id_for

UPDATE = {
    "case_id": "bd-1",
    "status": "opened",
    "title": {"en": "Title"},
    "summary": {"en": "Summary"},
    "country": "bd",
    "issues": ["wages"],
    "occurred_at": "2026-01-01T00:00:00Z",
    "published_by": "coordinator",
}


def update(**changes: object) -> CaseUpdate:
    return CaseUpdate.model_validate_json(json.dumps({**UPDATE, **changes}))


def errors_of(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, str]:
    return {".".join(map(str, e["loc"])): e["msg"] for e in exc.value.errors()}


def test_region_is_derived_from_the_country_and_the_code_normalised() -> None:
    parsed = update()
    assert parsed.country == "BD"
    assert parsed.region is Region.SOUTHERN_ASIA
    assert update(country="hn").region is Region.CENTRAL_AMERICA


def test_a_region_that_contradicts_the_country_is_refused() -> None:
    with pytest.raises(ValidationError, match="does not match country"):
        update(region="caribbean")
    assert update(region="southern-asia").region is Region.SOUTHERN_ASIA


def test_event_id_is_derived_from_the_content_when_left_out() -> None:
    assert update().event_id == update().event_id
    assert update().event_id != update(status="closed").event_id
    assert update(event_id="given-1").event_id == "given-1"


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"country": "XX"}, "country", "ISO 3166-1"),
        ({"status": "paused"}, "status", "opened"),
        ({"issues": ["gardening"]}, "issues.0", "unknown interest"),
        ({"title": {}}, "title", "at least 1"),
        ({"occurred_at": "2026-01-01T00:00:00"}, "occurred_at", "timezone"),
        ({"schema_version": 2}, "schema_version", "1"),
        ({"colour": "red"}, "colour", "Extra inputs"),
        ({"issues": "wages"}, "issues", "valid"),
    ],
)
def test_invalid_updates_name_the_field(changes: dict[str, object], field: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as exc:
        update(**changes)
    assert fragment in errors_of(exc)[field]


def test_extra_interests_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        update(issues=["water_pollution"])
    monkeypatch.setenv("MOBILISE_EXTRA_INTERESTS", "water_pollution, land_rights")
    assert update(issues=["water_pollution"]).issues == ("water_pollution",)


def test_the_public_projection_has_no_internal_fields() -> None:
    secret = update(internal={"workers_at_risk": ["A. Name"]})
    public = secret.public()
    assert "internal" not in public.model_dump()
    assert "A. Name" not in public.model_dump_json()
    assert public.region is Region.SOUTHERN_ASIA


SUBSCRIPTION = {"email": "a@example.org", "created_at": "2026-01-01T00:00:00Z"}


def test_a_subscription_must_say_where_and_what() -> None:
    with pytest.raises(ValidationError, match="must say where"):
        Subscription.model_validate_json(json.dumps({**SUBSCRIPTION, "interests": ["wages"]}))
    with pytest.raises(ValidationError, match="must say what"):
        Subscription.model_validate_json(json.dumps({**SUBSCRIPTION, "worldwide": True}))
    ok = Subscription.model_validate_json(
        json.dumps({**SUBSCRIPTION, "countries": ["kh"], "brands": ["Nike"]})
    )
    assert ok.countries == ("KH",)
    assert ok.confirmed is False
    assert len(ok.statuses) == 7


def test_ids_are_deterministic_and_do_not_reveal_the_address() -> None:
    assert subscriber_id_for("A@Example.org ") == subscriber_id_for("a@example.org")
    # An internationalised domain in either form: what a subscription keeps, what mail
    # systems report back (SendGrid's events), what someone types into `mobilise unsubscribe`.
    kept = Subscription.model_validate_json(
        '{"email": "Ana@xn--exmple-cua.org", "worldwide": true, "interests": ["wages"],'
        ' "created_at": "2026-01-01T00:00:00Z"}'
    )
    assert kept.email == "Ana@exämple.org"
    assert (
        kept.subscriber_id
        == subscriber_id_for("ana@exämple.org")
        == subscriber_id_for("ana@XN--exmple-cua.org")
    )
    assert subscriber_id_for("josé@exämple.org") == subscriber_id_for("José@xn--exmple-cua.org")
    assert subscriber_id_for("ana@exämple.org") != subscriber_id_for("ana@example.org")
    assert "example" not in subscriber_id_for("a@example.org")
    assert alert_id_for("e1", "s1") == alert_id_for("e1", "s1") != alert_id_for("e1", "s2")


def test_schema_export_writes_one_file_per_contract(tmp_path: object) -> None:
    from pathlib import Path

    from schemas.export import export_json_schemas

    paths = export_json_schemas(Path(str(tmp_path)))
    names = sorted(p.name for p in paths)
    assert names == [
        "action-taken.v1.schema.json",
        "alert-batch.v1.schema.json",
        "alert.v1.schema.json",
        "api-token.v1.schema.json",
        "audit-record.v1.schema.json",
        "case-update.v1.schema.json",
        "dead-letter.v1.schema.json",
        "delivery-event.v3.schema.json",
        "subscription.v1.schema.json",
        "suppression.v1.schema.json",
        "wave-cancellation.v1.schema.json",
    ]
    case = json.loads(Path(str(tmp_path), "case-update.v1.schema.json").read_text())
    assert case["additionalProperties"] is False
    assert {"case_id", "status", "country", "issues"} <= set(case["required"])
    suppression = json.loads(Path(str(tmp_path), "suppression.v1.schema.json").read_text())
    # Without "record" a record of the subscriptions topic is read as a Subscription.
    assert suppression["required"][0] == "record"
    assert suppression["properties"]["record"]["const"] == "suppression"
    assert set(suppression["$defs"]["SuppressionReason"]["enum"]) >= {"bounce", "link_unsubscribe"}


def test_ids_stay_what_they_were_so_records_written_before_an_upgrade_still_match() -> None:
    import hashlib

    from schemas import alert_id_for

    # The canonical form ids have always hashed: JSON with sorted keys and no spaces.
    canonical = json.dumps(["evt-1", "sub-é"], sort_keys=True, separators=(",", ":"))
    assert alert_id_for("evt-1", "sub-é") == "alr-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


@settings(max_examples=300)
@given(
    event_id=st.text(),
    subscriber_ids=st.lists(st.text(), max_size=5),
    fixed=st.lists(st.integers() | st.text()),
)
def test_ids_made_many_at_a_time_are_the_ids_made_one_at_a_time(
    event_id: str, subscriber_ids: list[str], fixed: list[int | str]
) -> None:
    from schemas import alert_id_for, alert_ids_for
    from schemas._base import stable_id, stable_ids

    alert_id_of = alert_ids_for(event_id)
    assert [alert_id_of(s) for s in subscriber_ids] == [alert_id_for(event_id, s) for s in subscriber_ids]
    ids = stable_ids(*fixed, length=24)
    assert [ids(s) for s in subscriber_ids] == [stable_id(*fixed, s, length=24) for s in subscriber_ids]
