"""The hub behind a real PgBouncer in transaction pooling mode (`HUB_DB__POOLER=transaction`).

The sending, delivery and quota concurrency tests also run through it (parametrized on
`hub_db`); here: that the hub's pool really shares PgBouncer's few server connections, that the
setting is what makes it work, and that migrations refuse to go through it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from hub import calendar, cli
from hub.db import PoolDatabase, create_pool, fetch_planned, pooled_options
from hub.settings import DbSettings, load_settings
from tests.conftest import HubDb
from tests.e2e.conftest import clean_env, key_from, run_hub
from tests.integration.delivery.conftest import eventually
from tests.peers.pgbouncer import POOL_SIZE, PgBouncerPeer

CLIENTS = 3 * POOL_SIZE


async def _pool(peer: PgBouncerPeer, database: str) -> dict[str, int]:
    (row,) = [p for p in await peer.admin("SHOW POOLS") if p["database"] == database]
    return {k: int(v or 0) for k, v in row.items() if k.startswith(("cl_", "sv_"))}


@pytest.mark.parametrize("hub_db", ["pgbouncer"], indirect=True)
async def test_the_hub_pool_shares_few_server_connections(
    hub_db: HubDb, caplog: pytest.LogCaptureFixture
) -> None:
    assert hub_db.peer is not None
    database = hub_db.dsn.rsplit("/", 1)[1]
    settings = DbSettings(dsn=hub_db.dsn, pooler="transaction", pool_min=CLIENTS, pool_max=CLIENTS)
    with caplog.at_level(logging.WARNING, logger="hub.db"):
        pool = PoolDatabase(await create_pool(settings, hub_db.dsn))
    # The database carries what could not be sent at login: the check found nothing amiss.
    assert [r.message for r in caplog.records if r.name == "hub.db"] == []
    go_on = asyncio.Event()

    async def transaction() -> tuple[int, list[int], str, str, timedelta]:
        async with pool.acquire() as conn, conn.transaction():
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            await go_on.wait()  # every client holds its transaction (or waits for a server)
            planned = [r["n"] for r in await fetch_planned(conn, "SELECT $1::int AS n", 7)]
            zone = await conn.fetchval("SHOW timezone")
            timeout = await conn.fetchval("SHOW statement_timeout")
            skew = await conn.fetchval("SELECT hub_now()") - calendar.now()
            return backend, planned, zone, timeout, abs(skew)

    try:
        running = [asyncio.create_task(transaction()) for _ in range(CLIENTS)]

        async def all_in_or_waiting() -> bool:
            counts = await _pool(hub_db.peer, database)  # type: ignore[arg-type]
            return counts["sv_active"] == POOL_SIZE and counts["cl_waiting"] == CLIENTS - POOL_SIZE

        # Thirty client connections, ten server connections: twenty clients queue at PgBouncer.
        await eventually(all_in_or_waiting, patience=60)
        go_on.set()
        done = await asyncio.gather(*running)
    finally:
        go_on.set()
        await pool.close()

    backends = {backend for backend, *_ in done}
    assert len(done) == CLIENTS
    assert len(backends) <= POOL_SIZE < CLIENTS
    assert {(tuple(planned), zone, timeout) for _, planned, zone, timeout, _ in done} == {
        ((7,), "UTC", "30s")
    }
    # hub_now() reads the hub's (pinned) clock: the database carries its shift.
    assert max(skew for *_, skew in done) < timedelta(minutes=5)
    (stats,) = [s for s in await hub_db.peer.admin("SHOW STATS") if s["database"] == database]
    assert int(stats["total_xact_count"] or 0) >= CLIENTS


async def test_without_the_pooler_setting_the_hub_fails_through_pgbouncer(
    fresh_db: str, pgbouncer_peer: PgBouncerPeer
) -> None:
    database = urlsplit(fresh_db).path.lstrip("/")
    dsn = pgbouncer_peer.dsn(database)
    # The settings the hub sends at login straight to PostgreSQL are refused by PgBouncer:
    # every connection fails (the hub would answer 503 to every request).
    pool = await create_pool(DbSettings(dsn=dsn, pool_min=1, pool_max=2), dsn)
    try:
        with pytest.raises(asyncpg.ProtocolViolationError, match="unsupported startup param"):
            async with pool.acquire():
                pass
    finally:
        await pool.close()

    # And even with nothing sent at login, asyncpg's statement cache breaks: a statement it
    # keeps prepared on one server connection is missing on the next.
    async def twice(options: dict[str, Any]) -> None:
        one = await asyncpg.connect(dsn, **options)
        other = await asyncpg.connect(dsn, **options)
        try:
            assert await one.fetchval("SELECT $1::int + 1", 1) == 2
            # `other` takes that server connection (PgBouncer reuses the last one freed) ...
            async with other.transaction():
                await other.fetchval("SELECT 1")
                # ... so `one` runs on another, where its cached statement does not exist.
                assert await one.fetchval("SELECT $1::int + 1", 2) == 3
        finally:
            await one.close()
            await other.close()

    with pytest.raises(asyncpg.InvalidSQLStatementNameError, match="__asyncpg_stmt_"):
        await twice({})
    await twice(pooled_options())


async def test_the_hub_warns_when_the_database_lacks_its_settings(
    fresh_db: str, pgbouncer_peer: PgBouncerPeer, caplog: pytest.LogCaptureFixture
) -> None:
    name = urlsplit(fresh_db).path.lstrip("/")
    # fresh_db carries no statement_timeout; give it a clock a day off the hub's.
    shift = calendar.CLOCK.offset + timedelta(days=1)
    conn = await asyncpg.connect(fresh_db)
    try:
        await conn.execute(
            f"ALTER DATABASE \"{name}\" SET hub.clock_offset = '{shift.total_seconds()} s'"
        )
    finally:
        await conn.close()
    dsn = pgbouncer_peer.dsn(name)
    settings = DbSettings(dsn=dsn, pooler="transaction", pool_min=1, pool_max=2)
    with caplog.at_level(logging.WARNING, logger="hub.db"):
        pool = await create_pool(settings, dsn)
    await pool.close()
    warned = [r.getMessage() for r in caplog.records if r.name == "hub.db"]
    assert len(warned) == 2, warned
    assert "statement_timeout is 0 ms" in warned[0]
    assert "ALTER ROLE" in warned[0]
    assert "hub.clock_offset is not the hub clock's shift" in warned[1]
    assert "ALTER DATABASE" in warned[1]


def test_migrations_refuse_to_go_through_the_pooler(capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(
        {"HUB_DB__DSN": "postgresql://hub@127.0.0.1:6432/hub", "HUB_DB__POOLER": "transaction"}
    )
    args = argparse.Namespace(revision="head", data_dir=None)
    assert cli.cmd_migrate(settings, args) == 2
    assert "straight to PostgreSQL" in capsys.readouterr().out


@pytest.mark.parametrize("hub_db", ["pgbouncer"], indirect=True)
async def test_hub_commands_work_through_the_pooler(hub_db: HubDb, fresh_db: str) -> None:
    """Two `hub` processes one after the other: each would name its first cached statement
    `__asyncpg_stmt_1__`, and the second would find the first's left on the server connection
    PgBouncer hands it ("already exists"). Through the pooler they cache nothing."""
    env = clean_env(HUB_DB__DSN=hub_db.dsn, HUB_DB__POOLER="transaction")
    for _ in range(2):
        done = await asyncio.to_thread(
            run_hub, "keys", "create", "--tenant", "000000", "--scope", "all", env=env
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert key_from(done.stdout).startswith("hub_")
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM api_keys") == 2
    finally:
        await conn.close()
