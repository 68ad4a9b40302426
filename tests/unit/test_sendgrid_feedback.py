"""SendGrid's event webhook, no network: signatures, timestamps, parsing, the records events make."""

from __future__ import annotations

import json

import pytest

from connectors.sendgrid_feedback import WebhookRejected, WebhookVerifier, parse_events, translate
from mobilise.web.pages import negotiate_language
from schemas import DeliveryOutcome, Subscription, SuppressionReason, subscriber_id_for
from tests.fakes.signed_webhook import SIGNATURE, TIMESTAMP, WebhookSigner, body, event

NOW = 1_800_000_000
SIGNER = WebhookSigner()


def verifier(now: float = NOW, max_age: float = 600) -> WebhookVerifier:
    return WebhookVerifier(SIGNER.public_key, max_age=max_age, clock=lambda: now)


def rejection(payload: bytes, headers: dict[str, str | None], **options: float) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as refused:
        verifier(**options).verify(payload, headers.get(SIGNATURE), headers.get(TIMESTAMP))
    return refused.value


def test_a_request_signed_by_the_key_is_accepted_and_any_change_is_not() -> None:
    payload = body(event("delivered", "a@example.org"))
    headers: dict[str, str | None] = {**SIGNER.sign(payload, NOW - 5)}
    verifier().verify(payload, headers[SIGNATURE], headers[TIMESTAMP])
    assert rejection(payload + b" ", headers).code == "bad_signature"
    assert rejection(payload, {**headers, TIMESTAMP: str(NOW - 4)}).code == "bad_signature"
    assert rejection(payload, {**headers, SIGNATURE: "bm90IGEgc2lnbmF0dXJl"}).code == "bad_signature"
    assert rejection(payload, {**headers, SIGNATURE: "%%%"}).code == "bad_signature"
    other = WebhookSigner().sign(payload, NOW - 5)
    assert rejection(payload, {**other}).code == "bad_signature"
    assert rejection(payload, {TIMESTAMP: str(NOW)}).code == "missing_signature"
    assert rejection(payload, {SIGNATURE: headers[SIGNATURE]}).status == 401


def test_old_and_future_timestamps_are_refused_even_when_signed() -> None:
    payload = body(event("bounce", "a@example.org"))
    stale = rejection(payload, {**SIGNER.sign(payload, NOW - 601)})
    assert (stale.status, stale.code) == (401, "stale_timestamp")
    assert "601 s old" in str(stale) and "MOBILISE_SENDGRID_WEBHOOK_MAX_AGE" in str(stale)
    verifier().verify(payload, *SIGNER.sign(payload, NOW - 599).values())
    ahead = rejection(payload, {**SIGNER.sign(payload, NOW + 3600)})
    assert ahead.code == "future_timestamp" and "in the future" in str(ahead)
    assert rejection(payload, {**SIGNER.sign(payload, NOW - 100)}, max_age=60).code == "stale_timestamp"


def test_the_body_must_be_an_array_of_events_but_one_bad_event_is_skipped() -> None:
    for bad in (b"not json", b'{"event": "bounce"}', b'["bounce"]', b"\xff\xfe"):
        with pytest.raises(WebhookRejected) as refused:
            parse_events(bad)
        assert (refused.value.status, refused.value.code) == (400, "not_an_event_array")
    events, problems = parse_events(
        body(event("open", "a@example.org"), {"event": "bounce", "email": "secret@example.org"})
    )
    assert [e.event for e in events] == ["open"]
    assert problems == ["event 1: invalid sg_event_id, timestamp"]  # fields named, the address not


def test_a_bounce_suppresses_the_address_and_the_subscriber_it_was_sent_to() -> None:
    (bounce,), _ = parse_events(
        body(
            event(
                "bounce",
                "Amina@Example.org",
                sg_event_id="sg-1",
                timestamp=NOW,
                type="bounce",
                status="5.1.1",
                reason="550 5.1.1 <amina@example.org>: Recipient address rejected",
                alert_id="alr-1",
                event_id="evt-1",
                case_id="bd-1",
                subscriber_id="crm:42",
            )
        )
    )
    feedback = translate(bounce)
    assert [s.subscriber_id for s in feedback.suppressions] == [
        "crm:42",
        subscriber_id_for("amina@example.org"),
    ]
    assert {s.reason for s in feedback.suppressions} == {SuppressionReason.BOUNCE}
    assert all(
        s.occurred_at.timestamp() == NOW and s.provider_event_id == "sg-1" for s in feedback.suppressions
    )
    (delivery,) = feedback.deliveries
    assert (delivery.alert_id, delivery.event_id, delivery.case_id, delivery.subscriber_id) == (
        "alr-1",
        "evt-1",
        "bd-1",
        "crm:42",
    )
    assert delivery.outcome is DeliveryOutcome.BOUNCED and delivery.provider_event_id == "sg-1"
    assert delivery.detail is not None and "5.1.1" in delivery.detail and "example.org" not in delivery.detail
    assert translate(bounce) == feedback  # the same event, the same records: a retry is harmless
    published = json.dumps(
        [r.model_dump(mode="json") for r in [*feedback.suppressions, *feedback.deliveries]]
    )
    assert "amina" not in published.lower()


def test_what_each_event_type_yields() -> None:
    args = {"alert_id": "alr-1", "event_id": "evt-1", "subscriber_id": "sub-1", "category": ["case:bd-9"]}
    expected = {
        "delivered": (DeliveryOutcome.DELIVERED, None),
        "deferred": (DeliveryOutcome.DEFERRED, None),
        "open": (DeliveryOutcome.OPENED, None),
        "click": (DeliveryOutcome.CLICKED, None),
        "dropped": (DeliveryOutcome.DROPPED, SuppressionReason.DROPPED),
        "spamreport": (DeliveryOutcome.SPAM_REPORTED, SuppressionReason.SPAM_REPORT),
        "unsubscribe": (DeliveryOutcome.UNSUBSCRIBED, SuppressionReason.UNSUBSCRIBE),
        "group_unsubscribe": (DeliveryOutcome.UNSUBSCRIBED, SuppressionReason.GROUP_UNSUBSCRIBE),
    }
    for kind, (outcome, reason) in expected.items():
        (parsed,), _ = parse_events(body(event(kind, "a@example.org", **args)))
        feedback = translate(parsed)
        assert [d.outcome for d in feedback.deliveries] == [outcome], kind
        assert feedback.deliveries[0].case_id == "bd-9"  # from the category when case_id is absent
        assert [s.reason for s in feedback.suppressions] == ([reason, reason] if reason else []), kind
    (blocked,), _ = parse_events(body(event("bounce", "a@example.org", type="blocked", **args)))
    assert translate(blocked).suppressions == []  # the message was refused, not the address
    assert translate(blocked).deliveries[0].outcome is DeliveryOutcome.BLOCKED
    for ignored in ("processed", "group_resubscribe", "something_new"):
        (parsed,), _ = parse_events(body(event(ignored, "a@example.org", **args)))
        assert translate(parsed).suppressions == translate(parsed).deliveries == []


def test_an_event_without_our_custom_args_still_suppresses_by_address() -> None:
    (spam,), _ = parse_events(body(event("spamreport", "b@example.org")))
    feedback = translate(spam)
    assert [s.subscriber_id for s in feedback.suppressions] == [subscriber_id_for("b@example.org")]
    assert feedback.deliveries == []


def test_an_event_for_an_internationalised_domain_suppresses_the_subscription_it_was_sent_to() -> None:
    # The sinks send the domain in ASCII; the subscription keeps it in Unicode.
    (spam,), _ = parse_events(body(event("spamreport", "ana@xn--exmple-cua.org")))
    person = Subscription.model_validate_json(
        '{"email": "ana@exämple.org", "worldwide": true, "interests": ["wages"],'
        ' "created_at": "2026-01-01T00:00:00Z"}'
    )
    assert [s.subscriber_id for s in translate(spam).suppressions] == [person.subscriber_id]


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "en"),
        ("", "en"),
        ("fr-CH, fr;q=0.9, en;q=0.8", "fr"),
        ("de-DE, es;q=0.5, en;q=0.4", "es"),
        ("en;q=0.2, es-MX;q=0.9", "es"),
        ("fr;q=0, es;q=0.1", "es"),
        ("de, it", "en"),
        ("es, fr", "es"),
        ("fr;q=bogus, es;q=0.3", "es"),
    ],
)
def test_pages_speak_the_browsers_language_with_english_as_fallback(
    header: str | None, language: str
) -> None:
    assert negotiate_language(header) == language
