"""The subscription form: fields to a Subscription and back, per-field messages in three languages, CSRF."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime
from typing import get_args

import pytest
from multidict import MultiDict
from pydantic import SecretStr

from mobilise.web.forms import (
    MAX_BRANDS,
    CsrfGuard,
    ErrorCode,
    FormValues,
    check,
    error_message,
    form_texts,
    frequency_choices,
    interest_choices,
    read_form,
    region_choices,
    render_form,
    status_choices,
    time_zone_choices,
    time_zone_names,
    to_subscription,
    values_of,
)
from mobilise.web.pages import PAGE_LANGUAGES
from schemas import BASE_INTERESTS, CaseStatus, Region, Subscription, known_countries, subscriber_id_for
from schemas.subscription import Frequency

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
VALID = FormValues(email="Person@Example.org", countries=("BD",), interests=("union_busting",))


def posted(*pairs: tuple[str, str]) -> MultiDict[str]:
    return MultiDict(pairs)


def test_a_posted_form_is_read_with_every_value_of_a_repeated_field() -> None:
    values = read_form(
        posted(
            ("email", " a@example.org "),
            ("name", "Rahima"),
            ("language", "fr"),
            ("worldwide", "yes"),
            ("regions", "south-eastern-asia"),
            ("countries", "BD"),
            ("countries", "KH"),
            ("interests", "wages"),
            ("interests", "union_busting"),
            ("brands", "H&M, Zara"),
            ("statuses", "opened"),
            ("frequency", "immediate"),
            ("csrf_token", "ignored"),
        )
    )
    assert values == FormValues(
        email="a@example.org",
        name="Rahima",
        language="fr",
        worldwide=True,
        regions=("south-eastern-asia",),
        countries=("BD", "KH"),
        interests=("wages", "union_busting"),
        brands="H&M, Zara",
        statuses=("opened",),
        frequency="immediate",
    )
    empty = read_form(posted(), default_language="es")
    assert (empty.language, empty.statuses, empty.worldwide) == ("es", (), False)


def test_a_valid_form_makes_the_subscription_and_the_subscription_fills_the_form() -> None:
    assert check(VALID, with_email=True) == {}
    subscription = to_subscription(
        VALID, email=VALID.email, subscriber_id=None, confirmed=False, created_at=NOW
    )
    assert subscription.subscriber_id == subscriber_id_for("person@example.org")
    assert (subscription.countries, subscription.interests, subscription.confirmed) == (
        ("BD",),
        ("union_busting",),
        False,
    )
    assert subscription.statuses == tuple(CaseStatus)  # every status unless narrowed
    again = values_of(subscription)
    assert check(again, with_email=True) == {}
    same = to_subscription(again, email=again.email, subscriber_id=None, confirmed=False, created_at=NOW)
    assert same == subscription


def test_brands_are_split_at_commas_trimmed_and_deduplicated() -> None:
    values = FormValues(brands=" H&M ,, h&m, Zara  Home ,zara home,Inditex ")
    assert values.brand_list == ("H&M", "Zara Home", "Inditex")
    subscription = to_subscription(
        FormValues(worldwide=True, brands=values.brands),
        email="b@example.org",
        subscriber_id="ext:crm-1",
        confirmed=True,
        created_at=NOW,
    )
    assert subscription.brands == ("H&M", "Zara Home", "Inditex") and subscription.interests == ()
    assert subscription.subscriber_id == "ext:crm-1"


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"email": ""}, "email", "email_missing"),
        ({"email": "person@"}, "email", "email_invalid"),
        ({"name": "n" * 201}, "name", "name_too_long"),
        ({"language": "de"}, "language", "language_unknown"),
        ({"countries": ()}, "places", "places_missing"),
        ({"countries": ("XX",)}, "places", "places_unknown"),
        ({"regions": ("atlantis",)}, "places", "places_unknown"),
        ({"interests": ()}, "interests", "topics_missing"),
        ({"interests": ("knitting",)}, "interests", "interests_unknown"),
        ({"brands": "b" * 201}, "brands", "brands_too_long"),
        ({"brands": ",".join(f"brand {i}" for i in range(MAX_BRANDS + 1))}, "brands", "brands_too_many"),
        ({"statuses": ()}, "statuses", "statuses_missing"),
        ({"statuses": ("won",)}, "statuses", "statuses_unknown"),
        ({"frequency": "hourly"}, "frequency", "frequency_unknown"),
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone", "time_zone_unknown"),
        ({"time_zone": "localtime"}, "time_zone", "time_zone_unknown"),  # this machine's, not a place
    ],
)
def test_each_wrong_field_is_named_with_its_error(changes: dict[str, object], field: str, code: str) -> None:
    values = FormValues(**{**VALID.__dict__, **changes})
    assert check(values, with_email=True) == {field: code}


def test_the_preferences_form_has_no_address_and_a_brand_alone_is_enough() -> None:
    values = FormValues(worldwide=True, brands="H&M")
    assert check(values, with_email=False) == {}
    assert check(values, with_email=True) == {"email": "email_missing"}


def test_every_error_has_a_message_in_every_language() -> None:
    for language in PAGE_LANGUAGES:
        messages = [error_message(code, language) for code in get_args(ErrorCode)]
        assert all(m.endswith(".") for m in messages), language
        assert len(set(messages)) == len(messages)
    assert error_message("email_missing", "fr") == "Saisissez votre adresse e-mail."
    assert error_message("email_missing", "es") == "Escribe tu dirección de correo."
    assert error_message("email_missing", "km") == "Enter your email address."  # English otherwise
    assert form_texts("fr").keys() == form_texts("en").keys() == form_texts("es").keys()


def test_the_choices_come_from_the_vocabularies(monkeypatch: pytest.MonkeyPatch) -> None:
    regions = region_choices("es")
    assert {r.value for r in regions} == {r.value for r in Region}
    assert {code for r in regions for code, _ in r.countries} == known_countries()
    labels = [r.label for r in regions]
    assert labels.index("África austral") < labels.index("Asia central")  # accents sorted as letters
    assert ("BD", "Bangladesh") in next(r for r in regions if r.value == "southern-asia").countries
    assert {value for value, _ in interest_choices("en")} == set(BASE_INTERESTS)
    monkeypatch.setenv("MOBILISE_EXTRA_INTERESTS", "tea_pickers")
    assert ("tea_pickers", "Tea pickers") in interest_choices("fr")
    assert check(FormValues(**{**VALID.__dict__, "interests": ("tea_pickers",)}), with_email=True) == {}
    assert [value for value, _ in status_choices("fr")] == [s.value for s in CaseStatus]
    assert [value for value, _ in frequency_choices("es")] == ["immediate", "daily", "weekly"]


def test_the_rendered_form_puts_each_message_next_to_its_field() -> None:
    values = FormValues(email="nope", countries=("BD",), interests=(), brands="", language="es")
    errors = check(values, with_email=True)
    html = render_form(language="es", with_email=True, values=values, errors=errors, csrf="tok")
    assert '<html lang="es">' in html
    email_at = html.index('<input type="email" id="email"')
    error_at = html.index('id="email-error"')
    assert email_at - 200 < error_at < email_at  # just above the field, after its label and hint
    assert "Escribe una dirección de correo como nombre@ejemplo.org." in html[error_at:email_at]
    assert 'aria-describedby="email-hint email-error" aria-invalid="true"' in html[email_at : email_at + 300]
    assert 'id="name-error"' not in html
    assert (
        '<fieldset id="interests" aria-describedby="interests-hint interests-error" aria-invalid="true">'
        in html
    )
    assert 'value="BD" checked' in html and "<details open>" in html  # the chosen country's region is open
    assert 'name="csrf_token" value="tok"' in html
    assert html.count('href="#') == 2  # the summary links to the two wrong fields


def test_values_are_escaped_in_the_page() -> None:
    values = FormValues(email='"><script>x</script>', name="<b>", worldwide=True, interests=("wages",))
    html = render_form(language="en", with_email=True, values=values, errors={}, csrf="t")
    assert "<script>x" not in html and "&lt;b&gt;" in html and "&#34;&gt;&lt;script&gt;" in html


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_csrf_token_is_valid_for_its_cookie_until_it_expires() -> None:
    clock = Clock()
    guard = CsrfGuard(SecretStr("s" * 40), clock=clock)
    cookie = guard.new_cookie()
    token = guard.token_for(cookie)
    assert guard.check(cookie, token)
    assert not guard.check(guard.new_cookie(), token)  # another browser's cookie
    assert not guard.check(None, token) and not guard.check(cookie, None) and not guard.check(cookie, "")
    expires, mac = token.split(".")
    assert not guard.check(cookie, f"{int(expires) + 3600}.{mac}")  # a later expiry is not signed
    # Another first character (the last one may only carry unused bits of the base64).
    tampered = ("B" if mac[0] == "A" else "A") + mac[1:]
    assert not guard.check(cookie, f"{expires}.{tampered}")
    assert not CsrfGuard(SecretStr("t" * 40), clock=clock).check(cookie, token)  # another key
    clock.now += 4 * 3600 - 1
    assert guard.check(cookie, token)
    clock.now += 1
    assert not guard.check(cookie, token)


def test_a_subscription_from_the_form_is_a_valid_topic_record() -> None:
    subscription = to_subscription(
        VALID, email=VALID.email, subscriber_id=None, confirmed=False, created_at=NOW
    )
    assert Subscription.model_validate_json(subscription.model_dump_json()) == subscription


# -- time zone and digest frequency ----------------------------------------------------------

VALID_RECORD = {"email": "tz@example.org", "countries": ("BD",), "interests": ("wages",), "created_at": NOW}


def test_the_time_zone_is_read_stored_and_shown_again() -> None:
    values = read_form(posted(("time_zone", " Asia/Dhaka "), ("frequency", "daily")))
    assert (values.time_zone, values.frequency) == ("Asia/Dhaka", "daily")
    chosen = FormValues(**{**VALID.__dict__, "time_zone": "America/New_York", "frequency": "weekly"})
    assert check(chosen, with_email=True) == {}
    subscription = to_subscription(
        chosen, email=chosen.email, subscriber_id=None, confirmed=True, created_at=NOW
    )
    assert (subscription.time_zone, subscription.frequency) == ("America/New_York", "weekly")
    again = values_of(subscription)
    assert (again.time_zone, again.frequency) == ("America/New_York", "weekly")
    # Left empty: no zone of their own (the home country's is used, else UTC).
    unset = to_subscription(VALID, email=VALID.email, subscriber_id=None, confirmed=True, created_at=NOW)
    assert unset.time_zone is None and values_of(unset).time_zone == ""
    assert read_form(posted()).time_zone == ""


def test_every_offered_time_zone_is_one_the_schema_accepts_grouped_by_area() -> None:
    names = time_zone_names()
    assert names == zoneinfo.available_timezones() - {"localtime", "Factory"}
    assert {"Asia/Dhaka", "Europe/Amsterdam", "America/Argentina/Buenos_Aires", "UTC"} <= names
    groups = time_zone_choices("fr")
    offered = [name for group in groups for name, _ in group.zones]
    assert sorted(offered) == sorted(names) and len(offered) == len(set(offered))
    assert [g.label for g in groups[:-1]] == sorted(g.label for g in groups[:-1])
    assert (groups[-1].label, groups[-1].lang) == ("Autres", None)  # names without an area, last
    assert "UTC" in dict(groups[-1].zones)
    america = next(g for g in groups if g.label == "America")
    assert america.lang == "en"
    assert ("America/Argentina/Buenos_Aires", "Argentina/Buenos Aires") in america.zones
    for name in offered:
        Subscription.model_validate({**VALID_RECORD, "time_zone": name})


def test_the_time_zone_select_offers_the_home_country_first_and_keeps_the_choice() -> None:
    html = render_form(language="en", with_email=True, values=VALID, errors={}, csrf="t")
    select = html[
        html.index('<select id="time_zone"') : html.index("</select>", html.index('id="time_zone"'))
    ]
    assert '<label class="block" for="time_zone">Your time zone (optional)</label>' in html
    assert 'name="time_zone" aria-describedby="time_zone-hint"' in select
    first = select.index("<option")
    assert select[first:].startswith('<option value="" selected>From my home country</option>')
    assert (
        '<optgroup label="Asia" lang="en">' in select
        and '<option value="Asia/Dhaka">Dhaka</option>' in select
    )
    assert '<option value="UTC" lang="en">UTC</option>' in select  # in "Other", whose label is not English

    # The zone of where they live, when it has one, is named; a chosen zone is selected.
    spanish = render_form(
        language="es",
        with_email=False,
        values=FormValues(**{**VALID.__dict__, "home_country": "BD", "time_zone": "Asia/Kolkata"}),
        errors={},
        csrf="t",
    )
    assert '<option value="">La de mi país (Asia/Dhaka)</option>' in spanish
    assert '<option value="Asia/Kolkata" selected>Kolkata</option>' in spanish
    several = render_form(
        language="en", with_email=True, values=FormValues(home_country="US"), errors={}, csrf="t"
    )
    assert '<option value="" selected>From my home country</option>' in several  # many zones: UTC


def test_a_wrong_time_zone_gets_its_message_next_to_the_field_in_the_page_language() -> None:
    values = FormValues(**{**VALID.__dict__, "time_zone": "Europe/Atlantis"})
    errors = check(values, with_email=True)
    assert errors == {"time_zone": "time_zone_unknown"}
    for language, message in (
        ("en", "Choose your time zone from the list, or “From my home country”."),
        ("fr", "Choisissez votre fuseau horaire dans la liste, ou « Celui de mon pays »."),
        ("es", "Elige tu zona horaria de la lista, o «La de mi país»."),
    ):
        html = render_form(language=language, with_email=True, values=values, errors=errors, csrf="t")
        select_at = html.index('<select id="time_zone"')
        error_at = html.index('id="time_zone-error"')
        assert select_at - 300 < error_at < select_at and message in html[error_at:select_at]
        assert 'aria-describedby="time_zone-hint time_zone-error" aria-invalid="true"' in html[select_at:]
        assert f'<li><a href="#time_zone">{message}</a></li>' in html  # and in the summary


def test_every_frequency_has_a_label_in_every_language_and_the_form_offers_them() -> None:
    for language in PAGE_LANGUAGES:
        choices = frequency_choices(language)
        assert [value for value, _ in choices] == list(get_args(Frequency))
        labels = [label for _, label in choices]
        assert all(label not in get_args(Frequency) for label in labels) and len(set(labels)) == len(labels)
    assert dict(frequency_choices("en"))["daily"] == "One email a day (a digest, in your morning)"
    assert (
        dict(frequency_choices("fr"))["weekly"] == "Un e-mail par semaine (un récapitulatif, le lundi matin)"
    )
    assert dict(frequency_choices("es"))["daily"] == "Un correo al día (un resumen, por la mañana)"
    # The weekly digest's day is the deployment's (MOBILISE_DIGEST_WEEKDAY).
    assert dict(frequency_choices("fr", "friday"))["weekly"] == (
        "Un e-mail par semaine (un récapitulatif, le vendredi matin)"
    )
    assert "el miércoles por la mañana" in dict(frequency_choices("es", "wednesday"))["weekly"]
    weekly = FormValues(**{**VALID.__dict__, "frequency": "weekly"})
    html = render_form(language="en", with_email=True, values=weekly, errors={}, csrf="t")
    assert '<input type="radio" name="frequency" value="weekly" checked> One email a week' in html
    assert '<input type="radio" name="frequency" value="daily"> One email a day' in html
    assert '<fieldset id="frequency" aria-describedby="frequency-hint">' in html
    sunday = render_form(
        language="en", with_email=True, values=weekly, errors={}, csrf="t", digest_weekday="sunday"
    )
    assert "One email a week (a digest, on Sunday morning)" in sunday
    for value in get_args(Frequency):
        chosen = FormValues(**{**VALID.__dict__, "frequency": value})
        assert check(chosen, with_email=True) == {}
        made = to_subscription(chosen, email=chosen.email, subscriber_id=None, confirmed=True, created_at=NOW)
        assert made.frequency == value
