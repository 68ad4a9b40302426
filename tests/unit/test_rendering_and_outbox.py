from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser, Parser
from pathlib import Path

import pytest

from connectors.base import INTERRUPTED, SinkOutcome
from connectors.outbox import OutboxConfig, OutboxSink
from connectors.registry import available_connectors, load_sink
from connectors.rendering import EmailIdentity, render_alert
from mobilise.errors import ConfigurationError, RetryableError
from schemas import Alert, CaseUpdate, MatchReason, alert_id_for

IDENTITY = EmailIdentity(from_email="Network <alerts@example.net>", unsubscribe_email="stop@example.net")


def make_alert(language: str = "en", **case_changes: object) -> Alert:
    case = CaseUpdate.model_validate_json(
        json.dumps(
            {
                "case_id": "bd-1",
                "status": "urgent_action",
                "title": {"en": "Fired for organising", "fr": "Licenciés pour s'être syndiqués"},
                "summary": {"en": "Twelve leaders <script>alert(1)</script> dismissed."},
                "country": "BD",
                "brands": ["H&M"],
                "factory": {"name": "Dhaka Knitwear", "city": "Gazipur"},
                "issues": ["union_busting"],
                "occurred_at": "2026-01-01T00:00:00Z",
                "published_by": "p",
                "internal": {"workers_at_risk": ["Hidden Person"]},
                "action_call": {
                    "kind": "email_brand",
                    "instructions": {"en": "Write to the CEO."},
                    "target": {"name": "H&M", "email": "ceo@example.com"},
                    "deadline": "2026-02-01T09:30:00+01:00",
                },
                **case_changes,
            }
        )
    )
    return Alert(
        alert_id=alert_id_for(case.event_id, "sub-1"),
        event_id=case.event_id,
        subscriber_id="sub-1",
        email="person@example.org",
        name="Rahima",
        language=language,
        case=case.public(),
        reason=MatchReason(country="BD", interests=("union_busting",)),
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
    )


def test_the_email_shows_the_case_the_action_and_why() -> None:
    email = render_alert(make_alert(), IDENTITY)
    assert email.subject == "URGENT ACTION: Fired for organising"
    for fragment in (
        "Hello Rahima",
        "Dhaka Knitwear, Gazipur, Bangladesh",
        "Brands: H&M",
        "Write to the CEO.",
        "Deadline: 2026-02-01 08:30 UTC",
        "you follow Bangladesh and union busting",
    ):
        assert fragment in email.text
    assert "&lt;script&gt;" in email.html and "<script>" not in email.html
    assert email.headers["List-Unsubscribe"] == "<mailto:stop@example.net?subject=unsubscribe%20sub-1>"


def test_the_subscribers_language_is_used_with_english_as_fallback() -> None:
    french = render_alert(make_alert("fr"), IDENTITY)
    assert french.language == "fr" and "Licenciés pour s'être syndiqués" in french.subject
    assert "Twelve leaders" in french.text  # no French summary: the English one is shown
    assert 'lang="fr"' in french.html
    assert render_alert(make_alert("km"), IDENTITY).language == "en"


def test_the_outbox_writes_each_alert_once(tmp_path: Path) -> None:
    sink = OutboxSink(OutboxConfig(outbox_dir=tmp_path / "out"))
    alert = make_alert()

    async def twice() -> tuple[object, object]:
        await sink.setup()
        first = await sink.deliver([alert])
        second = await sink.deliver([alert])
        return first[0], second[0]

    first, second = asyncio.run(twice())
    assert first.accepted and not first.duplicate  # type: ignore[attr-defined]
    assert second.accepted and second.duplicate  # type: ignore[attr-defined]
    files = list((tmp_path / "out").iterdir())
    assert [f.name for f in files] == [f"{alert.alert_id}.eml"]
    message = BytesParser(policy=policy.default).parsebytes(files[0].read_bytes())
    assert message["To"].addresses[0].addr_spec == "person@example.org"
    assert message["Message-ID"] == f"<{alert.alert_id}@example.org>"
    assert "Hidden Person" not in files[0].read_text()
    assert message.get_body(("html",)) is not None and message.get_body(("plain",)) is not None


def test_an_interrupted_outbox_writes_no_more_files(tmp_path: Path) -> None:
    sink = OutboxSink(OutboxConfig(outbox_dir=tmp_path / "out"))
    alert, french = make_alert(), make_alert("fr")
    other = french.model_copy(update={"alert_id": alert_id_for(french.event_id, "sub-2")})

    async def run() -> tuple[list[SinkOutcome], list[SinkOutcome]]:
        await sink.setup()
        try:
            before = list(await sink.deliver([alert]))
            await sink.interrupt()  # the file being written when it comes is finished; no other starts
            return before, list(await sink.deliver([other]))
        finally:
            await sink.close()

    before, after = asyncio.run(run())
    assert before[0].accepted and not after[0].accepted
    assert after[0].retryable and after[0].error == INTERRUPTED and after[0].record_id == other.alert_id
    assert [f.name for f in (tmp_path / "out").iterdir()] == [f"{alert.alert_id}.eml"]


def test_an_outbox_that_cannot_be_flushed_to_disk_tries_the_batch_again(tmp_path: Path) -> None:
    sink = OutboxSink(OutboxConfig(outbox_dir=tmp_path / "out"))
    alert = make_alert()

    async def run() -> SinkOutcome:
        await sink.setup()
        directory_fd = sink._directory_fd
        sink._directory_fd = -1  # the flush (syncfs of the outbox's file system) fails: EBADF
        try:
            with pytest.raises(RetryableError, match=r"could not be flushed to disk .*tried again"):
                await sink.deliver([alert])
            # Its file is there now, but not known to be on disk: not accepted until flushed.
            with pytest.raises(RetryableError, match=r"could not be flushed"):
                await sink.deliver([alert])
        finally:
            sink._directory_fd = directory_fd
        try:
            (again,) = await sink.deliver([alert])
            return again
        finally:
            await sink.close()

    again = asyncio.run(run())
    # The retry finds the file written before the failed flush: one file, reported as there.
    assert again.accepted and again.duplicate
    assert [f.name for f in (tmp_path / "out").iterdir()] == [f"{alert.alert_id}.eml"]


def test_sinks_are_found_through_the_entry_point_group() -> None:
    assert available_connectors()["outbox"] == "connectors.outbox:OutboxSink"
    assert load_sink("outbox") is OutboxSink
    with pytest.raises(ConfigurationError, match=r"no connector named 'carrier-pigeon'.*installed: .*outbox"):
        load_sink("carrier-pigeon")


@pytest.mark.parametrize("anonymous", [True, False], ids=["nameless-file", "named-temporary"])
def test_both_ways_of_writing_give_the_same_file_once_and_leave_nothing_else(
    tmp_path: Path, anonymous: bool
) -> None:
    sink = OutboxSink(OutboxConfig(outbox_dir=tmp_path / "out"))
    french = make_alert("fr")
    alerts = [make_alert(), french.model_copy(update={"alert_id": alert_id_for(french.event_id, "sub-2")})]

    async def run() -> tuple[list[object], list[object]]:
        await sink.setup()
        sink._anonymous = anonymous  # the fallback for file systems without O_TMPFILE
        try:
            return list(await sink.deliver(alerts)), list(await sink.deliver(alerts[:1]))
        finally:
            await sink.close()

    first, again = asyncio.run(run())
    assert [o.duplicate for o in first] == [False, False]  # type: ignore[attr-defined]
    assert [(o.accepted, o.duplicate) for o in again] == [(True, True)]  # type: ignore[attr-defined]
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == sorted(f"{a.alert_id}.eml" for a in alerts)
    reference = OutboxSink(OutboxConfig(outbox_dir=tmp_path / "reference"))

    async def write_reference() -> None:
        await reference.setup()
        reference._anonymous = not anonymous
        await reference.deliver(alerts[:1])
        await reference.close()

    asyncio.run(write_reference())
    name = f"{alerts[0].alert_id}.eml"
    assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "reference" / name).read_bytes()


def test_personal_substitutions_are_the_personal_parts_substitutions() -> None:
    from pydantic import SecretStr

    from connectors.rendering import personal_substitutions, render_personal
    from mobilise.links import PublicLinks

    linked = IDENTITY.model_copy(
        update={"links": PublicLinks(public_url="https://act.example.net", secret_key=SecretStr("s" * 32))}
    )
    for identity in (IDENTITY, linked):
        for alert in (make_alert(), make_alert("es"), make_alert().model_copy(update={"name": None})):
            expected = render_personal(alert, identity).substitutions()
            assert personal_substitutions(alert, identity) == expected


def test_internationalised_addresses_are_written_in_the_form_mail_systems_take(tmp_path: Path) -> None:
    # The schemas keep an address's Unicode form, even of a domain given in ASCII (IDNA).
    base = make_alert()
    domain = base.model_copy(update={"email": "ana@exämple.org"})
    local = base.model_copy(
        update={"email": "josé@exämple.org", "alert_id": alert_id_for(base.event_id, "sub-2"), "name": "José"}
    )
    sink = OutboxSink(OutboxConfig(outbox_dir=tmp_path / "out"))

    async def run() -> list[object]:
        await sink.setup()
        try:
            return list(await sink.deliver([domain, local]))
        finally:
            await sink.close()

    assert all(o.accepted for o in asyncio.run(run()))  # type: ignore[attr-defined]
    written = {a.alert_id: (tmp_path / "out" / f"{a.alert_id}.eml").read_bytes() for a in (domain, local)}
    to_lines = {
        key: next(line for line in data.split(b"\n") if line.startswith(b"To:"))
        for key, data in written.items()
    }
    # The domain in ASCII: the whole message stays 7-bit, as every server takes it.
    assert (
        to_lines[domain.alert_id] == b"To: Rahima <ana@xn--exmple-cua.org>"
        and written[domain.alert_id].isascii()
    )
    # A local part beyond ASCII has no other form: UTF-8 in the header (RFC 6532), nowhere else.
    # (The name is encoded, as names beyond ASCII always are.)
    assert to_lines[local.alert_id].startswith(b"To: =?utf-8?")
    assert to_lines[local.alert_id].endswith(" <josé@xn--exmple-cua.org>".encode())
    assert sum(not line.isascii() for line in written[local.alert_id].split(b"\n")) == 1
    message = Parser(policy=policy.default).parsestr(written[local.alert_id].decode("utf-8"))
    assert message["To"].addresses[0].addr_spec == "josé@xn--exmple-cua.org"
    assert message["To"].addresses[0].display_name == "José"
