from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import CaseStatus, CaseUpdate, Region, Subscription, region_of
from streams.matching import SubscriberIndex, matches_naively, reason_for

COUNTRIES = ["BD", "KH", "IN", "VN", "HN", "NL", "TR"]
INTERESTS = ["wages", "severance", "union_busting", "health_and_safety"]
BRANDS = ["H&M", "h&m", "Zara", "Nike", "Gap"]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def subscriptions() -> st.SearchStrategy[Subscription]:
    return st.builds(
        lambda n, worldwide, regions, countries, interests, brands, statuses, confirmed: Subscription(
            subscriber_id=f"s{n}",
            email=f"s{n}@example.org",
            worldwide=worldwide or not (regions or countries),
            regions=tuple(regions),
            countries=tuple(countries),
            interests=tuple(interests) if interests or brands else ("wages",),
            brands=tuple(brands),
            statuses=tuple(statuses) or tuple(CaseStatus),
            confirmed=confirmed,
            created_at=NOW,
        ),
        st.integers(0, 40),
        st.booleans(),
        st.lists(st.sampled_from([region_of(c) for c in COUNTRIES]), max_size=2),
        st.lists(st.sampled_from(COUNTRIES), max_size=3),
        st.lists(st.sampled_from(INTERESTS), max_size=3),
        st.lists(st.sampled_from(BRANDS), max_size=2),
        st.lists(st.sampled_from(list(CaseStatus)), max_size=3),
        st.booleans(),
    )


def updates() -> st.SearchStrategy[CaseUpdate]:
    return st.builds(
        lambda country, issues, brands, status: CaseUpdate(
            case_id="c1",
            status=status,
            title={"en": "t"},
            summary={"en": "s"},
            country=country,
            issues=tuple(issues),
            brands=tuple(brands),
            occurred_at=NOW,
            published_by="p",
        ),
        st.sampled_from(COUNTRIES),
        st.lists(st.sampled_from(INTERESTS), min_size=1, max_size=3),
        st.lists(st.sampled_from(BRANDS), max_size=3),
        st.sampled_from(list(CaseStatus)),
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(subscriptions(), max_size=40), st.lists(st.tuples(st.integers(0, 40), st.booleans())), updates()
)
def test_the_index_agrees_with_the_naive_matcher(
    subs: list[Subscription], churn: list[tuple[int, bool]], update: CaseUpdate
) -> None:
    index = SubscriberIndex()
    current: dict[str, Subscription] = {}
    for sub in subs:  # later ones replace earlier ones with the same id, as on the topic
        index.upsert(sub)
        current[sub.subscriber_id] = sub
    for n, erase in churn:
        if erase:
            index.remove(f"s{n}")
            current.pop(f"s{n}", None)
    case = update.public()
    matched = index.match(case)
    found = {s.subscriber_id for s, _ in matched}
    assert found == matches_naively(current.values(), case)
    for subscription, reason in matched:  # and the index explains each match as the rule does
        assert reason == reason_for(subscription, case)
        assert reason.model_dump_json() == reason_for(subscription, case).model_dump_json()  # type: ignore[union-attr]
    assert len(index) == len(current)


def test_the_reason_names_what_matched() -> None:
    sub = Subscription(
        subscriber_id="s1",
        email="s1@example.org",
        regions=(Region.SOUTHERN_ASIA,),
        interests=("wages", "severance"),
        brands=("h&m",),
        confirmed=True,
        created_at=NOW,
    )
    case = CaseUpdate(
        case_id="c",
        status=CaseStatus.OPENED,
        title={"en": "t"},
        summary={"en": "s"},
        country="BD",
        issues=("wages", "union_busting"),
        brands=("H&M", "Zara"),
        occurred_at=NOW,
        published_by="p",
    ).public()
    reason = reason_for(sub, case)
    assert reason is not None
    assert reason.region is Region.SOUTHERN_ASIA and reason.country is None and not reason.worldwide
    assert reason.interests == ("wages",)
    assert reason.brands == ("H&M",)
    unconfirmed = sub.model_copy(update={"confirmed": False})
    assert reason_for(unconfirmed, case) is None
