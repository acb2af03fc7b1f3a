"""A million-recipient send's CPU work gives the event loop turns, so one process keeps serving
other tenants' requests while it runs (docs/BENCHMARKS.md): counted in turns, not timed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from hub.db import in_turns
from hub.messages.numbers import Collected, normalize_all, normalize_all_in_turns


async def turns_of_others_during(work: Awaitable[object]) -> int:
    """How often another task ran while `work` ran."""
    turns = 0
    done = False

    async def other() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other())
    await asyncio.sleep(0)
    before = turns
    await work
    done = True
    await ticker
    return turns - before


async def test_normalising_in_turns_lets_other_requests_run_and_changes_nothing() -> None:
    raws: list[str | int] = [f"138{n:08d}" for n in range(5_000)]
    raws += ["13800000000", "12345"]
    result: list[object] = []

    async def work() -> None:
        result.append(await normalize_all_in_turns(raws, every=1000))

    assert await turns_of_others_during(work()) >= 5
    assert result[0] == normalize_all(raws)


async def test_copy_rows_come_in_turns() -> None:
    async def work() -> None:
        assert [row async for row in in_turns(range(5_000), every=500)] == list(range(5_000))

    assert await turns_of_others_during(work()) >= 10


async def _streamed(collected: Collected, raws: list[str | int]) -> None:
    rows = [r async for r in collected.stream_in_turns(raws, every=500)]
    assert len(rows) == len(collected.seen)


async def test_numbers_checked_as_they_stream_give_turns_even_when_none_is_new() -> None:
    """A large send's numbers are checked as its messages are written (a row per new recipient):
    one number repeated 5,000 times, or 5,000 bad ones, yield one row or none, and still give
    the event loop a turn every `every` numbers."""
    for raws in (["13800138000"] * 5_000, ["12345"] * 5_000):
        collected = Collected()
        assert await turns_of_others_during(_streamed(collected, list[str | int](raws))) >= 10
        assert collected.repeats + len(collected.rejected) + len(collected.seen) == 5_000
