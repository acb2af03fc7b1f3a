"""Each cron runs once per tick across workers: the row in cron_ticks decides, not Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from hub import calendar, crons
from hub.db import PoolDatabase, create_pool
from hub.dedup.jobs import purge_expired
from hub.settings import Settings

NAME = "hub.delivery.sweep.cron"
TICK_MS = 1_798_731_010_000  # a sweep's tick (second 10), as arq names it in the job id
STALE = 130.0  # the workers' in-progress mark: a lease (120 s) + 10 s


@pytest.fixture
async def pools(fresh_db: str, settings: Settings) -> AsyncIterator[list[PoolDatabase]]:
    """Two workers' own pools on one database."""
    dbs = [PoolDatabase(await create_pool(settings.db, fresh_db)) for _ in range(2)]
    try:
        yield dbs
    finally:
        for db in dbs:
            await db.close()


def _ctx(
    db: PoolDatabase, worker: str, job_try: int = 1, score: int | None = None
) -> dict[str, Any]:
    """What arq hands a unique cron's run (its job id names the tick; the score is when it
    was queued, which differs between workers)."""
    return {
        "db": db,
        "worker_name": worker,
        "job_id": f"{NAME}:{TICK_MS}",
        "score": score or TICK_MS + 137,
        "in_progress_seconds": STALE,
    }


def test_the_tick_is_the_scheduled_second_whoever_computes_it() -> None:
    tick = datetime.fromtimestamp(TICK_MS // 1000, UTC)
    assert crons.tick_of({"job_id": f"{NAME}:{TICK_MS}", "score": 1}) == tick
    # No tick in the id (a cron without arq's unique id): the due time, to the second.
    assert crons.tick_of({"job_id": "abc123", "score": TICK_MS + 999}) == tick


async def test_two_workers_racing_on_one_tick_run_it_once(
    pools: list[PoolDatabase], fresh_db: str
) -> None:
    runs: list[str] = []

    async def job(ctx: dict[str, Any]) -> str:
        runs.append(ctx["worker_name"])
        await asyncio.sleep(0.05)
        return "swept"

    wrapped = crons.once_per_tick(NAME, job)
    answers = await asyncio.gather(
        wrapped(_ctx(pools[0], "host-a:1", score=TICK_MS + 3)),
        wrapped(_ctx(pools[1], "host-b:2", score=TICK_MS + 250)),
    )
    assert len(runs) == 1
    assert sorted(answers, key=str) == sorted(["swept", None], key=str)
    conn = await asyncpg.connect(fresh_db)
    try:
        rows = await conn.fetch("SELECT name, tick, worker, finished_at FROM cron_ticks")
    finally:
        await conn.close()
    assert [(r["name"], r["worker"]) for r in rows] == [(NAME, runs[0])]
    assert rows[0]["tick"] == datetime.fromtimestamp(TICK_MS // 1000, UTC)
    assert rows[0]["finished_at"] is not None
    # Later, the same tick again (Redis flushed, arq's id forgotten): it does not run again.
    assert await wrapped(_ctx(pools[1], "host-b:2")) is None
    assert len(runs) == 1


async def test_the_purge_drops_ticks_started_past_a_week(
    pools: list[PoolDatabase], fresh_db: str, settings: Settings
) -> None:
    """A tick is arq's wall-clock instant; the hub's clock may have been started elsewhere (as
    here, and in a drill). So a tick's age is when the hub started it: this week's ticks stay,
    though arq's instants read months before the hub's now, and keep their ticks from running
    twice."""
    now = calendar.now()
    # What arq names a tick on this host: a whole second, months before the hub's clock.
    months_before = (now - timedelta(days=120)).replace(microsecond=0)
    conn = await asyncpg.connect(fresh_db)
    try:
        ages = (timedelta(days=8), timedelta(days=7, minutes=1), timedelta(days=6))
        for n, age in enumerate(ages):
            await conn.execute(
                "INSERT INTO cron_ticks (name, tick, worker, started_at) VALUES ($1, $2, 'w', $3)",
                NAME,
                months_before + timedelta(seconds=30 * n),
                now - age,
            )
        # The job started now: its row stays, though its tick reads 120 days ago.
        await conn.execute(
            "INSERT INTO cron_ticks (name, tick, worker) VALUES ($1, $2, 'w')",
            NAME,
            months_before + timedelta(seconds=90),
        )
        assert await crons.purge(conn, now, 1) == 1  # a batch at a time
        assert await crons.purge(conn, now, 10) == 1
        assert await crons.purge(conn, now, 10) == 0
        # The purge job, as a worker runs it, finds nothing more to drop.
        report = await purge_expired({"db": pools[0], "settings": settings})
        assert report["cron_ticks"] == 0
        left = await conn.fetchval("SELECT array_agg(tick ORDER BY tick) FROM cron_ticks")
    finally:
        await conn.close()
    assert left == [months_before + timedelta(seconds=60), months_before + timedelta(seconds=90)]
    # So the tick that started now is still run once only.
    ran: list[str] = []

    async def job(ctx: dict[str, Any]) -> str:
        ran.append(ctx["worker_name"])
        return "swept"

    tick_ms = int((months_before + timedelta(seconds=90)).timestamp() * 1000)
    ctx = {**_ctx(pools[1], "host-b:2"), "job_id": f"{NAME}:{tick_ms}"}
    assert await crons.once_per_tick(NAME, job)(ctx) is None
    assert ran == []


async def test_a_tick_whose_worker_died_mid_run_is_taken_over_by_the_next_try(
    pools: list[PoolDatabase], fresh_db: str
) -> None:
    """A worker claimed the tick and died (its row unfinished). arq tries the job again once the
    dead worker's in-progress mark lapsed; that try takes the tick over, while a try finding an
    unfinished row younger than the mark (its run is alive) leaves it alone."""
    runs: list[str] = []

    async def job(ctx: dict[str, Any]) -> str:
        runs.append(ctx["worker_name"])
        return "swept"

    wrapped = crons.once_per_tick(NAME, job)
    tick = datetime.fromtimestamp(TICK_MS // 1000, UTC)
    conn = await asyncpg.connect(fresh_db)
    try:
        await conn.execute(
            "INSERT INTO cron_ticks (name, tick, worker, started_at)"
            " VALUES ($1, $2, 'dead:1', hub_now() - make_interval(secs => $3))",
            NAME,
            tick,
            STALE / 2,
        )
        assert await wrapped(_ctx(pools[0], "host-a:1", job_try=2)) is None  # alive, maybe
        await conn.execute(
            "UPDATE cron_ticks SET started_at = hub_now() - make_interval(secs => $1)",
            STALE + 1,
        )
        assert await wrapped(_ctx(pools[0], "host-a:1", job_try=2)) == "swept"
        assert runs == ["host-a:1"]
        row = await conn.fetchrow("SELECT worker, finished_at FROM cron_ticks")
        assert row is not None
        assert row["worker"] == "host-a:1"
        assert row["finished_at"] is not None
        # Finished: never again, however old.
        await conn.execute(
            "UPDATE cron_ticks SET started_at = hub_now() - make_interval(secs => $1)",
            STALE * 10,
        )
        assert await wrapped(_ctx(pools[1], "host-b:2", job_try=3)) is None
        assert runs == ["host-a:1"]
    finally:
        await conn.close()


async def test_a_tick_whose_run_failed_is_run_by_the_next_try(
    pools: list[PoolDatabase], fresh_db: str
) -> None:
    """A run that fails (PostgreSQL gone mid-run: arq tries the job again a few seconds later)
    gives its tick back, so the next try runs it."""
    runs: list[str] = []

    async def job(ctx: dict[str, Any]) -> str:
        runs.append(ctx["worker_name"])
        if len(runs) == 1:
            raise ConnectionError("PostgreSQL went away")
        return "swept"

    wrapped = crons.once_per_tick(NAME, job)
    with pytest.raises(ConnectionError):
        await wrapped(_ctx(pools[0], "host-a:1"))
    assert await wrapped(_ctx(pools[1], "host-b:2", job_try=2)) == "swept"
    assert runs == ["host-a:1", "host-b:2"]
    conn = await asyncpg.connect(fresh_db)
    try:
        row = await conn.fetchrow("SELECT worker, finished_at FROM cron_ticks")
    finally:
        await conn.close()
    assert row is not None
    assert row["worker"] == "host-b:2"
    assert row["finished_at"] is not None
