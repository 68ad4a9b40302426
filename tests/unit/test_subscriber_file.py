"""The subscriber-file source on real files in a temporary directory (no broker).

Each test writes a CSV or JSON Lines file, runs the source with a MemorySourceContext (the
runtime's own validation) and looks at what was emitted, rejected and checkpointed, and at
the report of rejected rows written next to the file.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from connectors.source import Checkpoint, EmitReport, SourceRecord
from connectors.subscriber_file import SubscriberFileConfig, SubscriberFileError, SubscriberFileSource
from connectors.testing import MemorySourceContext, run_source
from mobilise.errors import RetryableError, SkippableError
from mobilise.inputs import InvalidInput
from schemas import CaseStatus, Region, Subscription, subscriber_id_for

UNDATED = datetime(1970, 1, 1, tzinfo=UTC)

PEOPLE_CSV = """\
email,name,language,countries,regions,worldwide,interests,brands,statuses,frequency,confirmed,created_at
Ana@Example.org ,Ana Rahman,bn,BD;KH,,,wages;union_busting,,,,,
bo@example.org,Bo,,,,yes,,"Nike, Inc.; H&M",urgent_action;remedy_won,immediate,no,2024-03-01T09:00:00Z
chea@example.org,,km,,south-eastern-asia,false,"wages,severance",Uniqlo,,,yes,
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def source(path: Path, **settings: Any) -> SubscriberFileSource:
    settings.setdefault("confirmed", True)
    settings.setdefault("progress", False)
    return SubscriberFileSource(SubscriberFileConfig(path=path, **settings))


def run(
    src: SubscriberFileSource,
    checkpoint: Checkpoint | None = None,
    context: MemorySourceContext | None = None,
) -> MemorySourceContext:
    ctx = context or MemorySourceContext(topic="subscriptions", checkpoint=checkpoint)
    return asyncio.run(run_source(src, ctx))


def subscriptions(ctx: MemorySourceContext) -> list[Subscription]:
    records = [r for r in ctx.records if isinstance(r, Subscription)]
    assert len(records) == len(ctx.records)
    return records


def report_lines(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def people_csv(path: Path, rows: int) -> Path:
    lines = ["email,countries,interests"] + [f"person{n}@example.org,BD,wages" for n in range(rows)]
    return write(path, "\n".join(lines) + "\n")


# -- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("confirmed", [True, False])
def test_csv_rows_become_subscriptions(tmp_path: Path, confirmed: bool) -> None:
    path = write(tmp_path / "people.csv", PEOPLE_CSV)

    ctx = run(source(path, confirmed=confirmed, default_language="fr"))

    ana, bo, chea = subscriptions(ctx)
    assert ana.email == "Ana@example.org"  # EmailStr lower-cases the domain
    assert ana.subscriber_id == subscriber_id_for("ana@example.org")
    assert ana.name == "Ana Rahman"
    assert ana.language == "bn"
    assert ana.countries == ("BD", "KH")
    assert ana.worldwide is False
    assert ana.interests == ("wages", "union_busting")
    assert ana.statuses == tuple(CaseStatus)
    assert ana.confirmed is confirmed  # blank cell: the setting
    assert ana.created_at == UNDATED  # no created_at: never outranks an unsubscribe

    assert bo.language == "fr"  # blank: default_language
    assert bo.worldwide is True
    assert bo.brands == ("Nike, Inc.", "H&M")  # ";" separates, so the comma stays in the name
    assert bo.statuses == (CaseStatus.URGENT_ACTION, CaseStatus.REMEDY_WON)
    assert bo.confirmed is False  # the row's own "no" wins over the setting
    assert bo.created_at == datetime(2024, 3, 1, 9, tzinfo=UTC)

    assert chea.regions == (Region.SOUTH_EASTERN_ASIA,)
    assert chea.worldwide is False
    assert chea.interests == ("wages", "severance")
    assert chea.brands == ("Uniqlo",)
    assert chea.confirmed is True  # the row's own "yes"

    assert ctx.rejected == []
    assert [c["rows"] for c in ctx.checkpoints] == [3]
    assert not (tmp_path / "people.csv.rejected.csv").exists()


def test_jsonl_rows_become_subscriptions_and_a_bad_line_is_rejected_with_its_number(tmp_path: Path) -> None:
    path = write(
        tmp_path / "people.ndjson",
        '{"email": "ana@example.org", "countries": ["BD", "KH"], "interests": ["wages"], "language": "bn"}\n'
        "\n"
        '{"email": "bo@example.org", "worldwide": true, "brands": ["H&M"], "confirmed": false,'
        ' "created_at": "2024-03-01T09:00:00Z"}\n'
        '{"email": "chea@example.org", "countries": ["KH"\n'
        '["not", "an", "object"]\n'
        '{"email": "dara@example.org", "regions": ["south-eastern-asia"], "interests": ["severance"]}\n',
    )

    ctx = run(source(path, default_language="km"))

    ana, bo, dara = subscriptions(ctx)
    assert (ana.email, ana.countries, ana.interests, ana.language) == (
        "ana@example.org",
        ("BD", "KH"),
        ("wages",),
        "bn",
    )
    assert (ana.confirmed, ana.created_at) == (True, UNDATED)
    assert (bo.worldwide, bo.brands, bo.confirmed, bo.language) == (True, ("H&M",), False, "km")
    assert bo.created_at == datetime(2024, 3, 1, 9, tzinfo=UTC)
    assert dara.regions == (Region.SOUTH_EASTERN_ASIA,)
    assert ctx.rejected == []  # the bad lines never reach the framework
    lines = report_lines(tmp_path / "people.ndjson.rejected.csv")
    assert [(line["row"], line["email"]) for line in lines] == [("4", ""), ("5", "")]
    assert lines[0]["reason"].startswith("not JSON: ")
    assert lines[1]["reason"] == "expected a JSON object with the subscription's fields, not list"


def test_rejected_rows_name_the_field_and_the_good_rows_go_on(tmp_path: Path) -> None:
    path = write(
        tmp_path / "people.csv",
        "email,countries,worldwide,interests,brands\n"
        "good1@example.org,BD,,wages,\n"
        "not-an-email,BD,,wages,\n"
        "unknown-country@example.org,XX,,wages,\n"
        "nothing@example.org,BD,,,\n"
        "bad-worldwide@example.org,,maybe,wages,\n"
        "good2@example.org,,yes,,Zara\n",
    )

    with capture_logs() as logs:
        ctx = run(source(path))

    assert [s.email for s in subscriptions(ctx)] == ["good1@example.org", "good2@example.org"]
    assert [r.origin for r in ctx.rejected] == ["row 3", "row 4", "row 5"]  # the framework's
    lines = report_lines(tmp_path / "people.csv.rejected.csv")
    assert [(line["row"], line["email"]) for line in lines] == [
        ("3", "not-an-email"),
        ("4", "unknown-country@example.org"),
        ("5", "nothing@example.org"),
        ("6", "bad-worldwide@example.org"),
    ]
    reasons = [line["reason"] for line in lines]
    assert reasons[0].startswith("email: ")
    assert reasons[1].startswith("countries.0: ") and "'XX'" in reasons[1]
    assert "interest or brand" in reasons[2]
    assert reasons[3] == "worldwide: 'maybe' is not one of true, false, yes, no, 1, 0"
    assert reasons[:3] == [r.reason for r in ctx.rejected]  # the framework's reasons, verbatim
    [summary] = [e for e in logs if e["event"] == "subscribers.imported"]
    assert (summary["accepted"], summary["rejected"], summary["path"]) == (2, 4, str(path))


def test_a_second_row_of_an_address_in_another_case_is_a_duplicate(tmp_path: Path) -> None:
    path = write(
        tmp_path / "people.csv",
        "email,countries,interests\n"
        "ana@example.org,BD,wages\n"
        "bo@example.org,KH,wages\n"
        " ANA@Example.ORG ,KH,severance\n",
    )

    ctx = run(source(path))

    ana, bo = subscriptions(ctx)
    assert (ana.email, ana.countries) == ("ana@example.org", ("BD",))  # the first row wins
    assert bo.email == "bo@example.org"
    assert report_lines(tmp_path / "people.csv.rejected.csv") == [
        {"row": "4", "email": "ANA@Example.ORG", "reason": "duplicate of row 2"}
    ]


def test_an_unknown_column_stops_the_import_before_anything_is_emitted(tmp_path: Path) -> None:
    path = write(tmp_path / "people.csv", "email,countrys,interests\nana@example.org,BD,wages\n")
    ctx = MemorySourceContext(topic="subscriptions")

    with pytest.raises(SubscriberFileError) as caught:
        run(source(path), context=ctx)

    assert isinstance(caught.value, InvalidInput) and isinstance(caught.value, SkippableError)
    assert "'countrys'" in str(caught.value) and str(path) in str(caught.value)
    assert "countries" in str(caught.value)  # the fix: the known columns
    assert ctx.records == [] and ctx.rejected == [] and ctx.checkpoints == []


def test_a_header_without_email_or_with_a_repeated_column_is_refused(tmp_path: Path) -> None:
    no_email = write(tmp_path / "a.csv", "mail,countries,interests\nana@example.org,BD,wages\n")
    repeated = write(tmp_path / "b.csv", "email,countries,Countries,interests\nana@example.org,BD,KH,wages\n")

    with pytest.raises(SubscriberFileError, match="no 'email' column"):
        run(source(no_email))
    with pytest.raises(SubscriberFileError, match="'countries' appear more than once"):
        run(source(repeated))


def test_a_missing_file_is_a_typed_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SubscriberFileError, match=r"cannot read the subscriber file .*missing\.csv"):
        run(source(tmp_path / "missing.csv"))


# -- settings --------------------------------------------------------------------------------


def test_confirmed_must_be_said_and_the_format_known(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="confirmed"):
        SubscriberFileConfig(path=tmp_path / "people.csv")  # type: ignore[call-arg]  # on purpose
    with pytest.raises(ValidationError, match="format"):
        SubscriberFileConfig(path=tmp_path / "people.txt", confirmed=True)
    explicit = SubscriberFileConfig(path=tmp_path / "p.txt", confirmed=True, format="jsonl")
    assert explicit.file_format == "jsonl"
    assert SubscriberFileConfig(path=tmp_path / "p.JSONL", confirmed=True).file_format == "jsonl"
    config = SubscriberFileConfig(path=tmp_path / "p.csv", confirmed=False)
    assert config.rejected_report == tmp_path / "p.csv.rejected.csv"
    assert (config.batch_size, config.default_language, config.progress) == (500, "en", None)
    with pytest.raises(ValidationError, match="batch_size"):
        SubscriberFileConfig(path=tmp_path / "p.csv", confirmed=False, batch_size=0)


def test_the_report_goes_where_report_path_says_and_a_stale_one_is_removed(tmp_path: Path) -> None:
    path = write(tmp_path / "people.csv", "email,countries,interests\nana@example.org,XX,wages\n")
    report = tmp_path / "reports" / "rejected.csv"
    report.parent.mkdir()

    run(source(path, report_path=report))
    assert [line["row"] for line in report_lines(report)] == ["2"]

    write(path, "email,countries,interests\nana@example.org,BD,wages\n")  # fixed
    ctx = run(source(path, report_path=report))
    assert [s.countries for s in subscriptions(ctx)] == [("BD",)]
    assert not report.exists()


# -- restarts --------------------------------------------------------------------------------


class _FailingContext(MemorySourceContext):
    """A context whose broker goes away at the ``fail_at``-th emit (nothing of that batch is kept)."""

    def __init__(self, fail_at: int, checkpoint: Checkpoint | None = None) -> None:
        super().__init__(topic="subscriptions", checkpoint=checkpoint)
        self._fail_at = fail_at
        self.emits = 0

    async def emit(self, records: Sequence[SourceRecord], checkpoint: Checkpoint | None = None) -> EmitReport:
        self.emits += 1
        if self.emits == self._fail_at:
            raise RetryableError("the broker cannot be reached")
        return await super().emit(records, checkpoint)


def test_a_second_run_of_the_same_file_emits_nothing(tmp_path: Path) -> None:
    path = people_csv(tmp_path / "people.csv", 5)
    first = run(source(path, batch_size=2))
    assert len(first.records) == 5
    assert [c["rows"] for c in first.checkpoints] == [2, 4, 5]

    second = run(source(path, batch_size=2), checkpoint=first.checkpoint)

    assert second.records == [] and second.checkpoints == []


def test_an_interrupted_import_resumes_after_the_last_emitted_batch(tmp_path: Path) -> None:
    path = people_csv(tmp_path / "people.csv", 5)
    # The bad row is in batch 1: the report of the resumed run must still list it.
    text = path.read_text().replace("person1@example.org,BD", "person1@example.org,XX")
    path = write(path, text)

    interrupted = _FailingContext(fail_at=2)
    with pytest.raises(RetryableError):
        run(source(path, batch_size=2), context=interrupted)
    assert [s.email for s in subscriptions(interrupted)] == ["person0@example.org"]
    assert interrupted.checkpoint is not None and interrupted.checkpoint["rows"] == 2

    resumed = run(source(path, batch_size=2), checkpoint=interrupted.checkpoint)

    assert [s.email for s in subscriptions(resumed)] == [f"person{n}@example.org" for n in (2, 3, 4)]
    assert [c["rows"] for c in resumed.checkpoints] == [4, 5]
    assert [line["row"] for line in report_lines(tmp_path / "people.csv.rejected.csv")] == ["3"]


def test_a_stopped_import_emits_nothing_more_and_leaves_the_report(tmp_path: Path) -> None:
    path = write(tmp_path / "people.csv", "email,countries,interests\nana@example.org,XX,wages\n")
    run(source(path))
    report = tmp_path / "people.csv.rejected.csv"
    before = report.read_text()
    ctx = MemorySourceContext(topic="subscriptions")
    ctx.stopping.set()

    with capture_logs() as logs:
        run(source(path, confirmed=False), context=ctx)

    assert ctx.records == [] and ctx.checkpoints == []
    assert report.read_text() == before
    [summary] = [e for e in logs if e["event"] == "subscribers.imported"]
    assert (summary["finished"], summary["rows"], summary["total"]) == (False, 0, 1)


def test_a_changed_file_is_imported_again_whole(tmp_path: Path) -> None:
    path = people_csv(tmp_path / "people.csv", 3)
    first = run(source(path))
    assert first.checkpoint is not None

    path = write(path, path.read_text() + "person3@example.org,KH,wages\n")
    second = run(source(path), checkpoint=first.checkpoint)

    assert [s.email for s in subscriptions(second)] == [f"person{n}@example.org" for n in range(4)]
    assert second.checkpoint is not None and second.checkpoint["sha256"] != first.checkpoint["sha256"]


def test_two_runs_of_the_same_file_give_byte_identical_records(tmp_path: Path) -> None:
    path = write(tmp_path / "people.csv", PEOPLE_CSV)

    first, second = run(source(path)), run(source(path))

    assert [r.model_dump_json() for r in first.records] == [r.model_dump_json() for r in second.records]
    assert len(first.records) == 3
    assert first.checkpoints == second.checkpoints


# -- progress --------------------------------------------------------------------------------


def test_progress_false_or_unset_without_a_terminal_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = people_csv(tmp_path / "people.csv", 3)

    run(source(path, progress=False))
    run(source(path, progress=None))  # capsys's stderr is no terminal

    assert capsys.readouterr().err == ""


def test_progress_true_counts_rows_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = people_csv(tmp_path / "people.csv", 3)

    run(source(path, progress=True, batch_size=2))

    counts = ["\rsubscribers: 0/3 rows", "\rsubscribers: 2/3 rows", "\rsubscribers: 3/3 rows"]
    assert capsys.readouterr().err == "".join(counts) + "\n"
