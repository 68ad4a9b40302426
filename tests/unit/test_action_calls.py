from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from mobilise.links import InvalidLink, LinkSigner
from schemas import ActionCall, action_id_for, taken_id_for

CALL = {
    "kind": "email_brand",
    "instructions": {"en": "Email the CEO.", "fr": "Écrivez au PDG."},
    "target": {"name": "H&M Group", "email": "ceo@example.com"},
    "suggested_message": {"en": "Reinstate the twelve union leaders now."},
    "goal": {"count": 5000, "label": {"en": "emails to H&M"}},
    "variants": [
        {
            "countries": ["NL"],
            "kind": "protest_at_store",
            "instructions": {"en": "Protest at the Amsterdam store on Saturday."},
            "target": {"name": "H&M Kalverstraat", "address": "Kalverstraat 125, Amsterdam"},
            "deadline": "2026-12-05T11:00:00+01:00",
        },
        {"regions": ["northern-america"], "instructions": {"en": "Call the US office."}, "kind": "call"},
    ],
}


def call(**changes: object) -> ActionCall:
    return ActionCall.model_validate_json(json.dumps({**CALL, **changes}))


def test_each_person_gets_the_variant_for_where_they_live() -> None:
    action = call()
    dutch = action.for_place("NL")
    assert (dutch.kind, dutch.target.name, dutch.variants) == ("protest_at_store", "H&M Kalverstraat", ())
    assert dutch.suggested_message == action.suggested_message  # not overridden: the call's own
    canadian = action.for_place("CA")  # in Northern America, by region
    assert (canadian.kind, canadian.instructions, canadian.target) == (
        "call",
        {"en": "Call the US office."},
        action.target,
    )
    for elsewhere in ("BD", None):
        assert action.for_place(elsewhere) == action.model_copy(update={"variants": ()})


def test_a_variant_must_name_a_place() -> None:
    with pytest.raises(ValidationError, match="give at least one"):
        call(variants=[{"instructions": {"en": "Anything."}}])


def test_the_action_id_is_the_coordinators_or_derived_from_what_is_asked_of_whom() -> None:
    assert action_id_for("bd-1", call(action_id="hm-ceo-letter")) == "hm-ceo-letter"
    derived = action_id_for("bd-1", call())
    assert derived == action_id_for("bd-1", call(instructions={"en": "Other words, same ask."}))
    assert derived != action_id_for("bd-2", call()) != action_id_for("bd-1", call(kind="sign"))
    assert taken_id_for(derived, "s-1") == taken_id_for(derived, "s-1") != taken_id_for(derived, "s-2")


def test_an_i_did_this_link_is_bound_to_its_action() -> None:
    signer = LinkSigner("k" * 40)
    token = signer.sign("acted", "s-1", scope="act-1")
    assert signer.verify(token, "acted", scope="act-1") == "s-1"
    with pytest.raises(InvalidLink):
        signer.verify(token, "acted", scope="act-2")
    with pytest.raises(InvalidLink):
        signer.verify(token, "acted")
    # Links signed without a scope are unchanged by its arrival.
    plain = signer.sign("unsubscribe", "s-1")
    assert signer.verify(plain, "unsubscribe") == "s-1"
