"""Lookahead: the work prepared for the next batch is used once, by that batch only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from connectors.lookahead import Lookahead


class _Work:
    """Counts how often it ran, and for which batch."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.fail = False

    def of(self, name: str) -> Callable[[], Awaitable[str]]:
        async def work() -> str:
            self.runs.append(name)
            await asyncio.sleep(0)
            if self.fail:
                raise ValueError(f"{name} cannot be rendered")
            return f"rendered {name}"

        return work


def test_the_prepared_batch_is_taken_without_doing_the_work_again() -> None:
    work = _Work()

    async def run() -> tuple[str, str]:
        ahead: Lookahead[str] = Lookahead()
        ahead.start(("a", "b"), work.of("first"))
        taken = await ahead.take(("a", "b"), work.of("again"))
        # Taken once: the same batch again is worked out afresh.
        again = await ahead.take(("a", "b"), work.of("again"))
        return taken, again

    assert asyncio.run(run()) == ("rendered first", "rendered again")
    assert work.runs == ["first", "again"]


def test_another_batch_is_worked_out_afresh_and_the_prepared_one_waits_for_its_turn() -> None:
    work = _Work()

    async def run() -> tuple[str, str]:
        ahead: Lookahead[str] = Lookahead()
        ahead.start(("a",), work.of("prepared"))
        taken = await ahead.take(("b",), work.of("fresh"))
        later = await ahead.take(("a",), work.of("again"))
        return taken, later

    assert asyncio.run(run()) == ("rendered fresh", "rendered prepared")
    assert sorted(work.runs) == ["fresh", "prepared"]


def test_the_next_two_batches_are_kept_and_taking_one_drops_those_before_it() -> None:
    work = _Work()

    async def run() -> list[str]:
        ahead: Lookahead[str] = Lookahead(depth=2)
        ahead.start(("a",), work.of("a"))
        ahead.start(("b",), work.of("b"))
        ahead.start(("b",), work.of("b twice"))  # already being prepared: not again
        taken = [await ahead.take(("a",), work.of("a afresh")), await ahead.take(("b",), work.of("b afresh"))]
        ahead.start(("c",), work.of("c"))
        ahead.start(("d",), work.of("d"))
        ahead.start(("e",), work.of("e"))  # deeper than 2: c is dropped
        taken.append(await ahead.take(("c",), work.of("c afresh")))
        ahead.start(("f",), work.of("f"))
        taken.append(await ahead.take(("e",), work.of("e afresh")))  # d, before e, is dropped
        taken.append(await ahead.take(("d",), work.of("d afresh")))
        taken.append(await ahead.take(("f",), work.of("f afresh")))
        return taken

    assert asyncio.run(run()) == [
        "rendered a",
        "rendered b",
        "rendered c afresh",
        "rendered e",
        "rendered d afresh",
        "rendered f",
    ]
    assert "b twice" not in work.runs


def test_a_failure_of_the_prepared_work_is_raised_by_take() -> None:
    work = _Work()
    work.fail = True

    async def run() -> None:
        ahead: Lookahead[str] = Lookahead()
        ahead.start(("a",), work.of("broken"))
        await asyncio.sleep(0.01)  # it has failed by now
        await ahead.take(("a",), work.of("unused"))

    with pytest.raises(ValueError, match="broken cannot be rendered"):
        asyncio.run(run())
    assert work.runs == ["broken"]


def test_a_prepared_batch_nobody_takes_reports_nothing(caplog: pytest.LogCaptureFixture) -> None:
    work = _Work()
    work.fail = True

    async def run() -> None:
        ahead: Lookahead[str] = Lookahead()
        ahead.start(("a",), work.of("dropped"))
        await asyncio.sleep(0.01)
        ahead.discard()

    asyncio.run(run())
    assert "exception was never retrieved" not in caplog.text
