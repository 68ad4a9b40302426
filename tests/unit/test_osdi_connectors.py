"""The OSDI source and sink against a fake OSDI server (aiohttp on 127.0.0.1; no broker), and the mapping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from structlog.testing import capture_logs

from connectors.attempts import deliver_with_retries
from connectors.base import SinkOutcome
from connectors.osdi_people import (
    Skipped,
    filter_time,
    person_to_subscription,
    signup_body,
    subscription_tags,
)
from connectors.osdi_sink import OsdiSink, OsdiSinkConfig
from connectors.osdi_source import OsdiSource, OsdiSourceConfig
from connectors.registry import load_connector
from connectors.source import Checkpoint, EmitReport, SourceRecord
from connectors.testing import MemorySourceContext, check_sink_outcomes, run_source
from mobilise.errors import ConfigurationError, RetryableError
from schemas import BASE_INTERESTS, CaseStatus, Region, Subscription, Suppression, SuppressionReason
from tests.fakes.osdi_server import TOKEN, FakeOsdi

T = TypeVar("T")
WRONG_TOKEN = "a-wrong-token-that-must-never-be-printed"


def make_subscription(**changes: Any) -> Subscription:
    fields: dict[str, Any] = {
        "email": "ana@example.org",
        "name": "Ana Rahman",
        "language": "bn",
        "countries": ["BD"],
        "interests": ["union_busting"],
        "brands": ["H&M"],
        "confirmed": True,
        "created_at": "2026-01-05T10:00:00Z",
        **changes,
    }
    return Subscription.model_validate_json(json.dumps(fields))


def choices(subscription: Subscription) -> dict[str, Any]:
    """Everything a subscription says, order aside."""
    fields = subscription.model_dump()
    for name in ("regions", "countries", "interests", "brands", "statuses"):
        fields[name] = frozenset(fields[name])
    return fields


def by_email(records: Sequence[BaseModel]) -> dict[str, Subscription]:
    subscriptions = [r for r in records if isinstance(r, Subscription)]
    assert len({str(s.email) for s in subscriptions}) == len(subscriptions), "a subscriber emitted twice"
    return {str(s.email): s for s in subscriptions}


def with_fake(test: Callable[[FakeOsdi], Awaitable[T]], **options: Any) -> T:
    async def run() -> T:
        async with FakeOsdi(**options) as fake:
            return await test(fake)

    return asyncio.run(run())


class BatchContext(MemorySourceContext):
    """Also keeps how many records each emit produced."""

    def __init__(self, checkpoint: Checkpoint | None = None) -> None:
        super().__init__("subscriptions", checkpoint)
        self.batches: list[int] = []

    async def emit(self, records: Sequence[SourceRecord], checkpoint: Checkpoint | None = None) -> EmitReport:
        report = await super().emit(records, checkpoint)
        self.batches.append(len(report.accepted))
        return report


def source_config(fake: FakeOsdi, **settings: Any) -> OsdiSourceConfig:
    return OsdiSourceConfig.model_validate(
        {"url": fake.people_url, "api_token": TOKEN, "confirmed": True, "once": True, **settings}
    )


async def read(fake: FakeOsdi, checkpoint: Checkpoint | None = None, **settings: Any) -> BatchContext:
    source = OsdiSource(source_config(fake, **settings))
    context = BatchContext(checkpoint)
    await run_source(source, context)
    return context


def sink_config(fake: FakeOsdi, **settings: Any) -> OsdiSinkConfig:
    return OsdiSinkConfig.model_validate({"url": fake.people_url, "api_token": TOKEN, **settings})


async def deliver(sink: OsdiSink, records: Sequence[BaseModel]) -> dict[str, SinkOutcome]:
    outcomes = await sink.deliver(records)
    check_sink_outcomes(sink, records, outcomes)
    assert len(outcomes) == len(records)
    return {o.record_id: o for o in outcomes}


# -- the mapping ------------------------------------------------------------------------------

_brand = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ&' .-0123456789", min_size=1, max_size=20).map(
    str.strip
)


@st.composite
def subscriptions(draw: st.DrawFn) -> Subscription:
    fields: dict[str, Any] = {
        "email": draw(st.from_regex(r"[a-z]{1,10}(\.[a-z]{1,5})?@[a-z]{2,8}\.(org|net)", fullmatch=True)),
        "name": draw(st.none() | st.from_regex(r"[A-Za-zÀ-ÿ][A-Za-zÀ-ÿ' -]{0,30}[a-z]", fullmatch=True)),
        "language": draw(st.sampled_from(["en", "fr", "bn", "km", "es"])),
        "countries": draw(st.lists(st.sampled_from(["BD", "KH", "IN", "VN", "TR"]), unique=True, max_size=3)),
        "regions": draw(st.lists(st.sampled_from([r.value for r in Region]), unique=True, max_size=2)),
        "worldwide": draw(st.booleans()),
        "interests": draw(st.lists(st.sampled_from(BASE_INTERESTS), unique=True, max_size=4)),
        "brands": draw(st.lists(_brand.filter(bool), unique=True, max_size=3)),
        "statuses": draw(st.lists(st.sampled_from([s.value for s in CaseStatus]), unique=True, min_size=1)),
        "confirmed": draw(st.booleans()),
        "created_at": draw(
            st.datetimes(
                min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
            )
        ).isoformat(),
    }
    if not (fields["worldwide"] or fields["regions"] or fields["countries"]):
        fields["worldwide"] = True
    if not (fields["interests"] or fields["brands"]):
        fields["interests"] = ["wages"]
    return Subscription.model_validate_json(json.dumps(fields))


def as_person(body: dict[str, Any]) -> dict[str, Any]:
    """The person a signup helper makes of ``body``: what it was given, subscribed, with its dates."""
    person: dict[str, Any] = json.loads(json.dumps(body["person"]))
    person["email_addresses"][0]["status"] = "subscribed"
    person["created_date"] = "2026-02-01T00:00:00Z"
    person["modified_date"] = "2026-02-01T00:00:00Z"
    return person


@settings(max_examples=150, deadline=None)
@given(subscriptions())
def test_a_subscription_survives_the_trip_through_a_person_and_tags(subscription: Subscription) -> None:
    body = signup_body(subscription)
    value = person_to_subscription(as_person(body), body["add_tags"], confirmed=subscription.confirmed)
    assert not isinstance(value, Skipped), value
    back = Subscription.model_validate_json(json.dumps(value))
    assert choices(back) == choices(subscription)


def test_tags_name_each_choice_and_statuses_only_when_narrowed() -> None:
    everything = make_subscription(regions=["south-eastern-asia"], worldwide=True)
    assert subscription_tags(everything) == [
        "mobilise:interest:union_busting",
        "mobilise:brand:H&M",
        "mobilise:country:BD",
        "mobilise:region:south-eastern-asia",
        "mobilise:worldwide",
        "mobilise:frequency:immediate",
    ]
    narrowed = make_subscription(statuses=["urgent_action", "remedy_won"])
    assert [t for t in subscription_tags(narrowed) if ":status:" in t] == [
        "mobilise:status:urgent_action",
        "mobilise:status:remedy_won",
    ]


def test_the_export_never_sets_a_subscription_status_nor_an_address() -> None:
    # A status would re-subscribe someone who unsubscribed there; the address is where they live.
    person = signup_body(make_subscription())["person"]
    assert person["email_addresses"] == [{"address": "ana@example.org", "primary": True}]
    assert "postal_addresses" not in person
    assert person["given_name"] == "Ana Rahman" and "family_name" not in person
    assert person["identifiers"] == [f"mobilise:{make_subscription().subscriber_id}"]


def test_people_who_are_not_subscribers_are_skipped_with_the_reason() -> None:
    person = as_person(signup_body(make_subscription()))
    person["email_addresses"][0]["status"] = "unsubscribed"
    skipped = person_to_subscription(
        person, ["mobilise:worldwide", "mobilise:interest:wages"], confirmed=True
    )
    assert isinstance(skipped, Skipped) and skipped.unsubscribed and "unsubscribed" in skipped.reason
    person["email_addresses"][0]["status"] = "subscribed"
    untagged = person_to_subscription(person, ["Volunteers", "Donor 2025"], confirmed=True)
    assert isinstance(untagged, Skipped) and not untagged.unsubscribed and "mobilise:" in untagged.reason


def test_a_person_of_another_system_gets_a_subscription_from_their_dates_names_and_mapped_tags() -> None:
    person = {
        "given_name": "Sokha",
        "family_name": "Chan",
        "email_addresses": [
            {"address": "old@example.org", "primary": False, "status": "unsubscribed"},
            {"address": "sokha@example.org", "primary": True, "status": "subscribed"},
        ],
        "languages_spoken": ["KM"],
        "created_date": "2025-11-02T08:00:00Z",
        "modified_date": "2026-01-01T00:00:00Z",
    }
    value = person_to_subscription(
        person,
        ["Garment workers", "mobilise:country:kh", "Volunteers"],
        confirmed=False,
        tag_map={"Garment workers": "mobilise:interest:wages"},
    )
    assert not isinstance(value, Skipped)
    subscription = Subscription.model_validate_json(json.dumps(value))
    assert (subscription.email, subscription.name, subscription.language) == (
        "sokha@example.org",
        "Sokha Chan",
        "km",
    )
    assert (subscription.interests, subscription.countries) == (("wages",), ("KH",))
    assert subscription.created_at == datetime(2025, 11, 2, 8, tzinfo=UTC)
    assert not subscription.confirmed


def test_a_family_name_left_over_from_before_the_export_is_not_repeated() -> None:
    person = as_person(signup_body(make_subscription(name="Jane Doe")))
    person["family_name"] = "Doe"  # the helper kept the family name the person already had
    value = person_to_subscription(person, ["mobilise:worldwide", "mobilise:interest:wages"], confirmed=True)
    assert not isinstance(value, Skipped) and value["name"] == "Jane Doe"


def test_a_tag_map_to_something_that_is_not_a_mobilise_tag_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match="Garment workers") as caught:
        OsdiSourceConfig.model_validate(
            {
                "url": "https://actionnetwork.org/api/v2/people",
                "api_token": "k",
                "confirmed": True,
                "tag_map": {"Garment workers": "wages"},
            }
        )
    assert "mobilise:interest:<interest>" in str(caught.value)


def test_confirmed_must_be_said_and_both_connectors_are_registered() -> None:
    with pytest.raises(ValidationError, match="confirmed"):
        OsdiSourceConfig.model_validate({"url": "https://actionnetwork.org/api/v2/people", "api_token": "k"})
    assert load_connector("osdi-source") is OsdiSource
    assert load_connector("osdi-sink") is OsdiSink


def test_the_filter_starts_a_second_before_the_last_change_cut_to_the_second() -> None:
    assert filter_time(datetime(2026, 3, 1, 12, 0, 5, 700_000, tzinfo=UTC)) == "2026-03-01T12:00:04Z"


# -- the source -------------------------------------------------------------------------------


def seed(fake: FakeOsdi) -> dict[str, str]:
    """Five subscribers, one unsubscribed, one not a subscriber of mobilise at all."""
    start = fake.now - timedelta(days=30)
    ids = {}
    for i, (email, tags) in enumerate(
        [
            ("a@example.org", ["mobilise:country:BD", "mobilise:interest:wages", "Volunteers"]),
            ("b@example.org", ["mobilise:worldwide", "mobilise:brand:Zara"]),
            ("c@example.org", ["mobilise:region:south-eastern-asia", "mobilise:interest:union_busting"]),
            ("d@example.org", ["Garment workers", "mobilise:country:KH"]),
            (
                "e@example.org",
                ["mobilise:country:IN", "mobilise:interest:wages", "mobilise:status:urgent_action"],
            ),
        ]
    ):
        ids[email] = fake.add_person(
            email, tags=tags, given_name=email[0].upper(), modified=start + timedelta(hours=i)
        )
    ids["gone@example.org"] = fake.add_person(
        "gone@example.org", tags=["mobilise:worldwide", "mobilise:interest:wages"], status="unsubscribed"
    )
    ids["donor@example.org"] = fake.add_person("donor@example.org", tags=["Donor 2025"])
    return ids


def test_the_source_reads_every_page_and_emits_the_subscribers() -> None:
    async def test(fake: FakeOsdi) -> None:
        ids = seed(fake)
        with capture_logs() as logs:
            context = await read(fake, page_size=2, tag_map={"Garment workers": "mobilise:interest:wages"})
        assert not context.rejected
        got = by_email(context.records)
        assert set(got) == {
            "a@example.org",
            "b@example.org",
            "c@example.org",
            "d@example.org",
            "e@example.org",
        }
        assert got["a@example.org"].countries == ("BD",) and got["a@example.org"].interests == ("wages",)
        assert got["b@example.org"].worldwide and got["b@example.org"].brands == ("Zara",)
        assert got["c@example.org"].regions == (Region.SOUTH_EASTERN_ASIA,)
        assert got["d@example.org"].interests == ("wages",)  # the foreign tag, mapped
        assert got["e@example.org"].statuses == (CaseStatus.URGENT_ACTION,)
        assert all(s.confirmed for s in got.values())
        # Seven people, two a page: four pages, each emitted with its checkpoint.
        assert len(fake.requested("GET", "/people")) == 4 == len(context.checkpoints)
        assert fake.requested("GET", "/people")[0].query == {"per_page": "2"}
        # Nobody's tags were asked for once their address was known to be unsubscribed.
        assert not fake.requested("GET", f"/people/{ids['gone@example.org']}/taggings")
        # Each tag was asked for once, however many people carry it.
        tag_requests = [r.path for r in fake.requested("GET", "/tags/[^/]+")]
        assert len(tag_requests) == len(set(tag_requests))
        done = next(e for e in logs if e["event"] == "osdi_source.walk_done")
        assert (done["emitted"], done["skipped_unsubscribed"], done["skipped_without_mobilise_tags"]) == (
            5,
            1,
            1,
        )
        assert "modified_since" in context.checkpoints[-1] and "walk" not in context.checkpoints[-1]

    with_fake(test)


def test_a_second_run_asks_only_for_people_modified_since_and_emits_only_what_changed() -> None:
    async def test(fake: FakeOsdi) -> None:
        ids = seed(fake)
        first = await read(fake, page_size=2)
        assert len(first.records) == 4
        fake.requests.clear()

        again = await read(fake, first.checkpoint, page_size=2)
        assert again.records == []  # restart without duplicates

        fake.advance(3600)
        fake.change(ids["b@example.org"], add_tags=["mobilise:interest:wages"])
        fake.add_person("new@example.org", tags=["mobilise:worldwide", "mobilise:interest:child_labour"])
        fake.requests.clear()
        second = await read(fake, again.checkpoint, page_size=2)
        assert set(by_email(second.records)) == {"b@example.org", "new@example.org"}
        assert by_email(second.records)["b@example.org"].interests == ("wages",)
        listing = fake.requested("GET", "/people")
        # The last change seen by the earlier runs: the two people added at the fake's start.
        assert listing[0].query["filter"] == "modified_date gt '2026-03-01T11:59:59Z'"
        new = fake.find("new@example.org")
        assert new is not None
        asked = {r.path for r in fake.requested("GET", "/people/[^/]+/taggings")}
        assert asked == {f"/people/{ids['b@example.org']}/taggings", f"/people/{new.id}/taggings"}

        third = await read(fake, second.checkpoint, page_size=2)
        assert third.records == []

    with_fake(test)


def test_a_run_stopped_after_a_page_resumes_with_the_next_page() -> None:
    async def test(fake: FakeOsdi) -> None:
        seed(fake)
        whole = await read(fake, page_size=2)
        after_first_page = whole.checkpoints[0]
        assert "walk" in after_first_page and whole.batches[0] > 0
        resumed = await read(fake, after_first_page, page_size=2)
        assert resumed.records == whole.records[whole.batches[0] :]
        assert resumed.checkpoint == whole.checkpoint

    with_fake(test)


def test_a_person_changed_while_the_walk_went_on_is_asked_for_again_next_time() -> None:
    async def test(fake: FakeOsdi) -> None:
        fake.add_person("late@example.org", tags=["mobilise:worldwide", "mobilise:interest:wages"])
        person = fake.find("late@example.org")
        assert person is not None
        person.modified = fake.now + timedelta(minutes=5)  # later than the server's Date for the walk
        first = await read(fake)
        assert first.checkpoint is not None
        assert first.checkpoint["modified_since"] == "2026-03-01T12:00:00Z"  # the walk's start, not 12:05
        second = await read(fake, first.checkpoint)
        assert (
            fake.requested("GET", "/people")[-1].query["filter"] == "modified_date gt '2026-03-01T11:59:59Z'"
        )
        assert second.records == []  # it came back, and was known

    with_fake(test)


def test_a_server_error_is_retryable_with_its_retry_after_and_the_retry_loses_nothing() -> None:
    async def test(fake: FakeOsdi) -> None:
        seed(fake)
        fake.fail_next(1, 503, retry_after=7, match=r"^/people\?(.*&)?page=2")
        context = BatchContext()
        mapped = {"Garment workers": "mobilise:interest:wages"}
        with pytest.raises(RetryableError) as caught:
            await run_source(OsdiSource(source_config(fake, page_size=2, tag_map=mapped)), context)
        assert caught.value.retry_after == 7.0 and "503" in str(caught.value)
        assert len(context.checkpoints) == 1
        retried = await read(fake, context.checkpoint, page_size=2, tag_map=mapped)
        assert set(by_email(context.records)).isdisjoint(by_email(retried.records))
        assert len(context.records) + len(retried.records) == 5

    with_fake(test)


def test_a_source_without_an_answer_is_retryable() -> None:
    async def test(fake: FakeOsdi) -> None:
        url = fake.people_url
        await fake.stop()
        source = OsdiSource(OsdiSourceConfig(url=url, api_token=TOKEN, confirmed=True, once=True, timeout=5))
        with pytest.raises(RetryableError, match="no answer"):
            await run_source(source, MemorySourceContext("subscriptions"))

    with_fake(test)


def test_a_refused_token_is_a_permanent_error_that_never_shows_the_token() -> None:
    async def test(fake: FakeOsdi) -> None:
        seed(fake)
        with capture_logs() as logs, pytest.raises(ConfigurationError) as caught:
            await read(fake, api_token=WRONG_TOKEN)
        message = str(caught.value)
        assert "401" in message and "api_token" in message
        assert WRONG_TOKEN not in message and WRONG_TOKEN not in repr(logs)
        assert fake.requests[0].status == 401  # the fake did quote it back

    with_fake(test)


def test_links_to_another_host_are_not_followed_with_the_token() -> None:
    async def test(fake: FakeOsdi) -> None:
        fake.add_person("x@example.org", tags=["mobilise:worldwide", "mobilise:interest:wages"])
        source = OsdiSource(source_config(fake))
        await source.setup()
        try:
            with pytest.raises(Exception, match="links on the server of its url setting only"):
                await source._get("http://127.0.0.2:1/people")
        finally:
            await source.close()

    with_fake(test)


# -- the sink ---------------------------------------------------------------------------------


def people_to_export() -> list[BaseModel]:
    return [
        make_subscription(),
        make_subscription(
            email="sokha@example.org",
            name="Sokha Chan",
            language="km",
            countries=[],
            regions=["south-eastern-asia"],
            interests=["wages", "factory_closure"],
            brands=[],
            statuses=["urgent_action"],
        ),
        make_subscription(
            email="w@example.net", name=None, countries=[], worldwide=True, brands=["Zara", "H&M"]
        ),
        make_subscription(email="unconfirmed@example.org", confirmed=False),
        Suppression(
            subscriber_id=make_subscription().subscriber_id,
            reason=SuppressionReason.BOUNCE,
            source="sendgrid",
            occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        ),
    ]


def with_sink(
    test: Callable[[OsdiSink, FakeOsdi], Awaitable[T]], fake_options: Any = None, **settings: Any
) -> T:
    async def run(fake: FakeOsdi) -> T:
        resolved = {name: value(fake) if callable(value) else value for name, value in settings.items()}
        sink = OsdiSink(sink_config(fake, **resolved))
        await sink.setup()
        try:
            return await test(sink, fake)
        finally:
            await sink.close()

    return with_fake(run, **(fake_options or {}))


def test_exported_subscribers_come_back_through_the_source_with_the_same_choices() -> None:
    async def test(sink: OsdiSink, fake: FakeOsdi) -> None:
        records = people_to_export()
        outcomes = await deliver(sink, records)
        assert all(o.accepted for o in outcomes.values())
        assert {p.email for p in fake.people.values()} == {
            "ana@example.org",
            "sokha@example.org",
            "w@example.net",
        }
        ana = fake.find("ana@example.org")
        assert ana is not None
        assert outcomes[sink.record_id(records[0])].provider_message_id == f"fake_osdi:{ana.id}"
        # Neither the unconfirmed subscription nor the suppression was sent.
        assert len(fake.requested("POST", "/people")) == 3
        assert outcomes[sink.record_id(records[3])].provider_message_id is None

        context = await read(fake)
        back = by_email(context.records)
        exported = [r for r in records[:3] if isinstance(r, Subscription)]
        assert {email: choices(s) for email, s in back.items()} == {
            str(s.email): choices(s) for s in exported
        }

    with_sink(test)


def test_exporting_again_changes_nothing_and_adds_no_one() -> None:
    async def test(sink: OsdiSink, fake: FakeOsdi) -> None:
        records = people_to_export()
        await deliver(sink, records)
        before = {p.id: (p.modified, list(p.tag_ids)) for p in fake.people.values()}
        fake.advance(600)
        outcomes = await deliver(sink, records)
        assert all(o.accepted for o in outcomes.values())
        assert {p.id: (p.modified, list(p.tag_ids)) for p in fake.people.values()} == before
        tags = {
            t for r in records if isinstance(r, Subscription) and r.confirmed for t in subscription_tags(r)
        }
        assert set(fake.tags.values()) == tags

    with_sink(test)


def test_an_existing_person_who_unsubscribed_there_stays_unsubscribed() -> None:
    async def test(sink: OsdiSink, fake: FakeOsdi) -> None:
        fake.add_person("ana@example.org", status="unsubscribed", given_name="Ana", family_name="Rahman")
        outcomes = await deliver(sink, [make_subscription()])
        assert all(o.accepted for o in outcomes.values())
        person = fake.find("ana@example.org")
        assert person is not None and person.status == "unsubscribed" and len(fake.people) == 1
        assert "mobilise:interest:union_busting" in fake.tag_names(person.id)

    with_sink(test)


def test_a_server_error_is_retried_by_the_framework_then_accepted_once() -> None:
    async def test(sink: OsdiSink, fake: FakeOsdi) -> None:
        subscription = make_subscription()
        fake.fail_next(1, 503, retry_after=3)
        first = await deliver(sink, [subscription])
        outcome = first[sink.record_id(subscription)]
        assert outcome.retryable and outcome.retry_after == 3.0 and "503" in (outcome.error or "")
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        fake.fail_next(1, 502)
        settled = await deliver_with_retries(sink, [subscription], max_attempts=3, sleep=sleep)
        assert [s.accepted for s in settled] == [True] and settled[0].attempts == 2
        assert len(fake.people) == 1 and len(waits) == 1

    with_sink(test)


def test_a_refused_person_is_a_permanent_failure_with_the_reason() -> None:
    async def test(sink: OsdiSink, fake: FakeOsdi) -> None:
        subscription = make_subscription()
        fake.fail_next(1, 400, error="Field email_addresses is invalid")
        outcome = (await deliver(sink, [subscription]))[sink.record_id(subscription)]
        assert not outcome.accepted and not outcome.retryable
        assert "400" in (outcome.error or "") and "email_addresses is invalid" in (outcome.error or "")
        assert fake.people == {}

    with_sink(test)


def test_a_refused_token_fails_every_record_permanently_without_showing_it() -> None:
    async def test(sink: OsdiSink, fake: FakeOsdi) -> None:
        records = people_to_export()[:2]
        with capture_logs() as logs:
            outcomes = await deliver(sink, records)
        assert all(not o.accepted and not o.retryable for o in outcomes.values())
        assert all(
            "api_token" in (o.error or "") and WRONG_TOKEN not in (o.error or "") for o in outcomes.values()
        )
        assert WRONG_TOKEN not in repr(logs) and any(e["event"] == "osdi_sink.unauthorized" for e in logs)

    with_sink(test, api_token=WRONG_TOKEN)


def test_a_sink_without_an_answer_is_retryable() -> None:
    async def test(sink: OsdiSink, fake: FakeOsdi) -> None:
        await fake.stop()
        outcome = (await deliver(sink, [make_subscription()]))[sink.record_id(make_subscription())]
        assert outcome.retryable and "no answer" in (outcome.error or "")

    with_sink(test, timeout=5)


def test_two_subscriptions_of_one_address_are_sent_in_order_and_the_later_wins() -> None:
    async def test(sink: OsdiSink, fake: FakeOsdi) -> None:
        older = make_subscription(name="Ana R.")
        newer = make_subscription(name="Ana Rahman", language="en")
        outcomes = await deliver(sink, [older, newer])
        assert all(o.accepted for o in outcomes.values())
        person = fake.find("ana@example.org")
        assert person is not None and (person.given_name, person.languages) == ("Ana Rahman", ["en"])

    with_sink(test, concurrency=8)


def test_where_unknown_tags_are_dropped_the_sink_creates_them_first() -> None:
    async def without_tags_url(sink: OsdiSink, fake: FakeOsdi) -> None:
        await deliver(sink, [make_subscription()])
        assert fake.tags == {}  # Action Network drops tag names it does not know…
        assert (await read(fake)).records == []  # …and with them the person's choices

    with_sink(without_tags_url, fake_options={"unknown_tags": "ignore"})

    async def with_tags_url(sink: OsdiSink, fake: FakeOsdi) -> None:
        fake.add_person("someone@example.org", tags=["MOBILISE:COUNTRY:BD"])  # one exists, in other case
        subscription = make_subscription()
        await deliver(sink, [subscription, make_subscription(email="z@example.org")])
        created = fake.requested("POST", "/tags")
        assert len(created) == len(subscription_tags(subscription)) - 1  # each missing tag, once
        back = by_email((await read(fake)).records)
        assert choices(back["ana@example.org"]) == choices(subscription)

    with_sink(with_tags_url, fake_options={"unknown_tags": "ignore"}, tags_url=lambda fake: fake.tags_url)


def test_a_record_of_another_topic_is_refused_permanently() -> None:
    async def test(sink: OsdiSink, fake: FakeOsdi) -> None:
        class Other(BaseModel):
            x: int = 1

        outcome = (await deliver(sink, [Other()]))[sink.record_id(Other())]
        assert (
            not outcome.accepted and not outcome.retryable and "subscriptions topic" in (outcome.error or "")
        )

    with_sink(test)
