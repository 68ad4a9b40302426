"""The operator's view of dead letters: ids, selection, references and how they are printed."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mobilise.dead_letters import (
    StoredDeadLetter,
    dead_letter_id,
    describe,
    load,
    render_bytes,
    resolve,
    select,
    short_reference,
    shorten,
    summary_line,
)
from mobilise.inputs import InvalidInput
from mobilise.snapshot import StoredRecord
from schemas import DeadLetter, FieldError

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def letter(
    *,
    topic: str = "p-case-updates",
    partition: int = 0,
    offset: int = 0,
    stage: str = "fanout",
    reason: str = "country: not a country",
    seconds: int = 0,
    key: bytes | None = b"bd-2026-1",
    value: bytes | None = b"{}",
    errors: tuple[FieldError, ...] = (),
) -> DeadLetter:
    return DeadLetter(
        stage=stage,
        reason=reason,
        errors=errors,
        topic=topic,
        partition=partition,
        offset=offset,
        key=base64.b64encode(key) if key is not None else None,
        value=base64.b64encode(value) if value is not None else None,
        at=T0 + timedelta(seconds=seconds),
    )


def stored(position: tuple[int, int], **fields: object) -> StoredDeadLetter:
    return StoredDeadLetter(position[0], position[1], letter(**fields))  # type: ignore[arg-type]


def record(partition: int, offset: int, value: bytes | None) -> StoredRecord:
    return StoredRecord("p-dead-letters", partition, offset, T0, None, value)


def test_the_id_names_the_original_record_whatever_else_changed() -> None:
    first = letter(offset=7, stage="fanout", seconds=0)
    again = letter(offset=7, stage="fanout", reason="the same record, read again after a crash", seconds=60)
    other = letter(offset=8)
    assert dead_letter_id(first) == dead_letter_id(again)
    assert dead_letter_id(first) != dead_letter_id(other)
    assert dead_letter_id(first) != dead_letter_id(letter(offset=7, topic="p-subscriptions"))
    assert dead_letter_id(first).startswith("dl-") and len(dead_letter_id(first)) == 15
    assert StoredDeadLetter(3, 9, first).position == "3:9"


def test_load_sorts_by_time_and_keeps_what_it_cannot_read_apart() -> None:
    late = letter(offset=1, seconds=30).model_dump_json().encode()
    early = letter(offset=2, seconds=10).model_dump_json().encode()
    log = load(
        [record(0, 0, late), record(1, 0, b"not a dead letter"), record(1, 1, early), record(2, 0, None)]
    )
    assert [(s.partition, s.offset) for s in log.letters] == [(1, 1), (0, 0)]
    assert [(u.partition, u.offset) for u in log.unreadable] == [(1, 0), (2, 0)]


def test_select_filters_by_topic_with_or_without_prefix_and_by_stage() -> None:
    letters = [
        stored((0, 0), topic="p-case-updates", stage="fanout", seconds=1),
        stored((0, 1), topic="p-alerts", stage="delivery:outbox", seconds=2),
        stored((0, 2), topic="p-alerts", stage="delivery:smtp", seconds=3),
        stored((0, 3), topic="p-subscriptions", stage="subscriptions", seconds=4),
        stored((0, 4), topic="p-alerts", stage="deliveryman", seconds=5),
    ]
    offsets = lambda chosen: [s.offset for s in chosen]  # noqa: E731
    assert offsets(select(letters, topic="case-updates", prefix="p-")) == [0]
    assert offsets(select(letters, topic="p-case-updates", prefix="p-")) == [0]
    assert offsets(select(letters, topic="case-updates")) == []  # the prefix is needed to match
    assert offsets(select(letters, stage="delivery")) == [1, 2]
    assert offsets(select(letters, stage="delivery:smtp")) == [2]
    assert offsets(select(letters, limit=2)) == [3, 4]  # the latest two, oldest first
    assert offsets(select(letters, limit=0)) == []
    assert offsets(select(letters, topic="alerts", stage="delivery", prefix="p-", limit=1)) == [2]


def test_resolve_takes_an_id_a_position_or_an_unambiguous_offset() -> None:
    a = stored((0, 5), offset=100)
    b = stored((1, 5), offset=101)
    c = stored((1, 6), offset=102)
    twice = stored((2, 0), offset=102, reason="dead-lettered again after a restart")
    letters = [a, b, c, twice]
    assert resolve(letters, a.id) == [a]
    assert resolve(letters, c.id) == [c, twice]
    assert resolve(letters, "1:5") == [b]
    assert resolve(letters, " 6 ") == [c]
    with pytest.raises(InvalidInput, match=r"several partitions .*\(0:5, 1:5\)"):
        resolve(letters, "5")
    with pytest.raises(InvalidInput, match="no dead letter 9:9"):
        resolve(letters, "9:9")
    with pytest.raises(InvalidInput, match="no dead letter dl-000000000000"):
        resolve(letters, "dl-000000000000")
    with pytest.raises(InvalidInput, match="PARTITION:OFFSET"):
        resolve(letters, "a:b")
    with pytest.raises(InvalidInput, match="neither"):
        resolve(letters, "latest")


def test_shorten_keeps_one_line_of_the_given_width() -> None:
    assert shorten("a  b\nc") == "a b c"
    cut = shorten("x" * 300, 40)
    assert len(cut) == 40 and cut.endswith("…")
    assert shorten("y" * 40, 40) == "y" * 40


def test_bytes_are_shown_as_json_text_or_base64() -> None:
    assert render_bytes(None) == "(none)"
    assert render_bytes(b'{"a":[1,"\xc3\xa9"]}') == '{\n  "a": [\n    1,\n    "é"\n  ]\n}'
    assert render_bytes(b"plain text\nwith lines") == "plain text\nwith lines"
    assert render_bytes(b"\xff\xfe") == "base64://4="
    assert render_bytes(b"bell\x07") == "base64:" + base64.b64encode(b"bell\x07").decode()


@given(st.binary(max_size=200))
def test_any_bytes_can_be_shown_and_binary_ones_come_back_exactly(data: bytes) -> None:
    shown = render_bytes(data)
    if shown.startswith("base64:"):
        assert base64.b64decode(shown.removeprefix("base64:")) == data
    else:
        text = data.decode("utf-8")
        try:
            assert json.loads(shown) == json.loads(text)
        except ValueError:
            assert shown == text


def test_a_summary_line_has_when_id_origin_stage_and_a_short_reason() -> None:
    s = stored(
        (2, 9), topic="p-alerts", partition=3, offset=41, stage="delivery:smtp", reason="550 " + "x" * 200
    )
    line = summary_line(s, prefix="p-", note="replayed")
    when, ident, origin, stage, rest = line.split("  ", 4)
    assert (when, ident, origin, stage) == ("2026-03-01 08:00:00Z", s.id, "alerts[3]@41", "delivery:smtp")
    assert rest.endswith("…  (replayed)") and len(rest) < 120
    assert short_reference(s, prefix="p-") == f"{s.id} (alerts[3]@41)"


def test_describe_shows_every_field_error_and_the_original_bytes() -> None:
    s = stored(
        (0, 3),
        value=b"\x00\x01",
        key=b"bd-1",
        errors=(
            FieldError(loc="country", msg="not a country", type="value_error"),
            FieldError(loc="", msg="Invalid JSON", type="json_invalid"),
        ),
    )
    text = describe(s, replay_notes=["replayed 2026-03-02 as p-case-updates[0]@9"])
    assert f"id            {s.id}" in text
    assert "stored at     dead-letters 0:3" in text
    assert "original      p-case-updates partition 0 offset 0" in text
    assert "  country: not a country [value_error]" in text
    assert "  (record): Invalid JSON [json_invalid]" in text
    assert "replay        replayed 2026-03-02 as p-case-updates[0]@9" in text
    assert "key           bd-1" in text
    assert text.endswith("value\n  base64:AAE=")
