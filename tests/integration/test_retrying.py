"""A deadlock PostgreSQL breaks is done again, not a 500: `hub.db.retrying` redoes the loser's
work from a savepoint; one that persists answers 503 `busy` with Retry-After. Real deadlocks,
between two real connections."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
from litestar import Litestar, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from hub.db import TRANSIENT, PoolDatabase, provide_connection, retrying
from hub.errors import exception_handlers

Conn = NamedDependency[asyncpg.Connection]


async def _two_rows(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE pair (id int PRIMARY KEY, n int NOT NULL DEFAULT 0)")
        await conn.execute("INSERT INTO pair (id) VALUES (1), (2)")
    finally:
        await conn.close()


async def _cross(a: asyncpg.Connection, b: asyncpg.Connection, retry: bool) -> list[object]:
    """`a` locks row 1 then 2, `b` row 2 then 1, each after the other holds its first: one of
    them is a deadlock's victim unless it retries."""
    both_hold = asyncio.Barrier(2)

    async def run(conn: asyncpg.Connection, first: int, second: int) -> object:
        tries = 0

        async def work() -> int:
            nonlocal tries
            tries += 1
            await conn.execute("UPDATE pair SET n = n + 1 WHERE id = $1", first)
            if tries == 1:  # the crossing; a retry just waits for the other to commit
                await both_hold.wait()
            await conn.execute("UPDATE pair SET n = n + 1 WHERE id = $1", second)
            return second

        async with conn.transaction():
            return await (retrying(conn, work) if retry else work())

    return list(await asyncio.gather(run(a, 1, 2), run(b, 2, 1), return_exceptions=True))


async def test_a_deadlocks_victim_is_done_again(fresh_db: str) -> None:
    await _two_rows(fresh_db)
    a, b = await asyncpg.connect(fresh_db), await asyncpg.connect(fresh_db)
    try:
        await a.execute("SET deadlock_timeout = '50ms'")
        await b.execute("SET deadlock_timeout = '50ms'")
        without = await _cross(a, b, retry=False)
        assert sum(isinstance(r, TRANSIENT) for r in without) == 1, without
        with_retry = await _cross(a, b, retry=True)
        assert with_retry == [2, 1]
        # Each row: +1 from the first round's survivor, +1 from each side of the second.
        assert sorted(r["n"] for r in await a.fetch("SELECT n FROM pair")) == [3, 3]
    finally:
        await a.close()
        await b.close()


@post("/deadlock")
async def always_deadlocked(conn: Conn) -> None:
    raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")


async def test_a_persisting_deadlock_answers_503_busy(fresh_db: str) -> None:
    pool = await asyncpg.create_pool(fresh_db, min_size=1, max_size=1)
    app = Litestar(
        route_handlers=[always_deadlocked],
        dependencies={"conn": Provide(provide_connection)},
        exception_handlers=exception_handlers(),
        state=State({"db": PoolDatabase(pool)}),
    )
    try:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
            resp = await client.post("/deadlock")
    finally:
        await pool.close()
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "1"
    assert resp.json()["error"] == "busy"
