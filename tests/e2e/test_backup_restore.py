"""Backup and restore, as docs/OPERATIONS.md ("Backup and restore") tells an operator to do it.

A PostgreSQL of the test's own archives its WAL (`archive_command`); a base backup is taken
with `pg_basebackup` once the hub's schema is in; then the hub does real work on it (tenants,
keys, quota, sends through the API, a worker delivering them through the outbox gateway, the
ledger's reservations and postings). The last WAL segment is switched out and archived, and
what every table holds is recorded. The server is then crashed and its data folder deleted,
the base backup copied back with a `restore_command` and `recovery.signal`, and the restored
server must hold exactly what was recorded — and nothing written after the last archived
segment — with the quota audit (`hub audit quota`'s function) clean.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from arq.connections import ArqRedis

from hub import calendar
from hub.app import create_app
from hub.db import PoolDatabase, create_pool
from hub.quota import service as quota
from hub.settings import Settings, load_settings
from tests.factories import bearer, grant, make_key, make_small_tree
from tests.integration.delivery.conftest import running_worker
from tests.peers.pg_cluster import (
    PgCluster,
    archive_command,
    hub_database,
    restore_command,
    run_as_server,
    server_owned,
    tool,
)

pytestmark = pytest.mark.e2e

# A liveness bound for each wait below, not a speed claim.
PATIENCE = 90
OUTBOX = '[{"name":"outbox","kind":"outbox","rate":1000000,"options":{"receipt_delay":0}}]'


def _settings(dsn: str, redis_dsn: str) -> Settings:
    return load_settings(
        {
            "HUB_DB__DSN": dsn,
            "HUB_REDIS__DSN": redis_dsn,
            "HUB_MESSAGES__QUIET_HOURS": "false",
            "HUB_DELIVERY__GATEWAYS": OUTBOX,
        }
    )


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check()` until it holds, within PATIENCE seconds (a server offers nothing else to
    wait on)."""
    async with asyncio.timeout(PATIENCE):
        while True:
            if await check():
                return
            await asyncio.sleep(0.1)


async def table_digests(dsn: str) -> dict[str, tuple[int, str]]:
    """Every table of the hub's schema (partitioned ones whole, and each partition): (rows,
    md5 of all its rows in order). Equal digests
    mean equal contents, row by row and column by column."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1"
        )
        digests = {}
        for (table,) in tables:
            row = await conn.fetchrow(
                f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, chr(10)"
                f" ORDER BY t::text), '')) AS digest FROM \"{table}\" t"
            )
            assert row is not None
            digests[table] = (row["n"], row["digest"])
        return digests
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _hub(settings: Settings, redis: ArqRedis) -> AsyncIterator[httpx.AsyncClient]:
    """The API on a real pool to the test's server, and a worker delivering beside it."""
    assert settings.db.dsn
    pool = PoolDatabase(await create_pool(settings.db, settings.db.dsn))
    transport = httpx.ASGITransport(app=create_app(settings, db=pool, redis=redis))  # type: ignore[arg-type]
    try:
        async with (
            running_worker(settings, crons=False),
            httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client,
        ):
            yield client
    finally:
        await pool.close()


async def _send(client: httpx.AsyncClient, key: str, phones: list[str], body: str) -> int:
    resp = await client.post(
        "/v1/messages",
        json={"to": phones, "body": body},
        headers={**bearer(key), "Idempotency-Key": f"backup-{len(phones)}-{body.encode().hex()}"},
    )
    assert resp.status_code == 202, resp.text
    send_id: int = resp.json()["id"]
    return send_id


async def _hub_work(dsn: str, settings: Settings, redis: ArqRedis) -> list[int]:
    """Tenants, keys, quota, four sends delivered; the send ids."""
    conn = await asyncpg.connect(dsn)
    try:
        await make_small_tree(conn)
        await grant(conn, {"000000": 10_000, "510000": 5_000, "510100": 3_000, "510104": 1_000})
        await grant(conn, {"510105": 1_000})
        county, other = await make_key(conn, "510104"), await make_key(conn, "510105")
    finally:
        await conn.close()
    async with _hub(settings, redis) as client:
        sends = [
            await _send(client, county, [f"1380013{n:04d}" for n in range(30)], "备份演练一"),
            await _send(client, county, [f"1390013{n:04d}" for n in range(20)], "备份演练二"),
            # The same body to the same phones from another county: deduplicated (voided).
            await _send(client, other, [f"1380013{n:04d}" for n in range(10)], "备份演练一"),
            await _send(client, other, [f"1370013{n:04d}" for n in range(15)], "备份演练三"),
        ]

        async def all_final() -> bool:
            done = 0
            for send_id in sends:
                resp = await client.get(f"/v1/messages/{send_id}", headers=bearer(county))
                if resp.status_code == 404:  # the other county's
                    resp = await client.get(f"/v1/messages/{send_id}", headers=bearer(other))
                statuses: dict[str, int] = resp.json()["statuses"]
                done += set(statuses) <= {"delivered", "deduplicated"}
            return done == len(sends)

        await _until(all_final)
    return sends


async def _archive_all(dsn: str) -> str:
    """Switch to a new WAL segment and wait until the finished one is archived; its name."""
    conn = await asyncpg.connect(dsn)
    try:
        segment: str = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")

        async def archived() -> bool:
            row = await conn.fetchrow(
                "SELECT last_archived_wal, failed_count FROM pg_stat_archiver"
            )
            assert row is not None
            assert row["failed_count"] == 0, "archive_command failed"
            return row["last_archived_wal"] is not None and row["last_archived_wal"] >= segment

        await _until(archived)
        return segment
    finally:
        await conn.close()


async def test_a_destroyed_hub_comes_back_from_its_base_backup_and_wal_archive(
    tmp_path: Path, redis_dsn: str, redis: ArqRedis
) -> None:
    archive = server_owned(tmp_path / "archive")
    base = server_owned(tmp_path / "base")
    primary = PgCluster(tmp_path / "main")
    primary.init()
    primary.conf("archive_mode = on", f"archive_command = '{archive_command(archive)}'")
    primary.start()
    restored: PgCluster | None = None
    try:
        dsn = await hub_database(primary)
        settings = _settings(dsn, redis_dsn)
        # The base backup, taken before any of the hub's work: all of that must come back
        # from the archive.
        run_as_server(
            tool("pg_basebackup"), "-h", str(primary.socket_dir), "-U", "postgres",
            "-D", str(base), "-X", "stream", "-c", "fast",
        )  # fmt: skip
        run_as_server(tool("pg_verifybackup"), str(base))

        sends = await _hub_work(dsn, settings, redis)
        period = calendar.current_period()
        conn = await asyncpg.connect(dsn)
        try:
            checked, problems = await quota.audit(conn, period)
        finally:
            await conn.close()
        assert checked > 0
        assert problems == []
        await _archive_all(dsn)
        expected = await table_digests(dsn)
        assert expected["messages"][0] == 75
        assert expected["outbox"][0] == 65  # 75 less the 10 deduplicated
        assert all(expected[t][0] > 0 for t in ("tenants", "api_keys", "quota_entries", "sends"))

        # Written after the last archived segment: lost with the server (the RPO the runbook
        # names, bounded in production by archive_timeout).
        async with _hub(settings, redis) as client:
            conn = await asyncpg.connect(dsn)
            try:
                late_key = await make_key(conn, "510104")
            finally:
                await conn.close()
            late = await _send(client, late_key, ["13600130000"], "备份之后")

        # The disaster: the server crashes and its data folder is gone.
        primary.stop("immediate")
        primary.remove()

        # The restore, as the runbook: the base backup back in place, WAL from the archive.
        restored = PgCluster(primary.pgdata, socket_dir=primary.socket_dir)
        server_owned(restored.pgdata)
        run_as_server("cp", "-a", f"{base}/.", str(restored.pgdata))
        restored.conf(f"restore_command = '{restore_command(archive)}'")
        run_as_server("touch", str(restored.pgdata / "recovery.signal"))
        restored.start()
        admin = await asyncpg.connect(restored.dsn())
        try:

            async def promoted() -> bool:
                return not await admin.fetchval("SELECT pg_is_in_recovery()")

            await _until(promoted)
        finally:
            await admin.close()
        assert not (restored.pgdata / "recovery.signal").exists()

        assert await table_digests(dsn) == expected
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM sends WHERE id = $1", late) == 0
            back = await conn.fetchval("SELECT count(*) FROM sends WHERE id = ANY($1)", sends)
            assert back == len(sends)
        finally:
            await conn.close()
        # `hub audit quota`'s own check, on the restored ledger.
        conn = await asyncpg.connect(dsn)
        try:
            checked_after, problems_after = await quota.audit(conn, period)
        finally:
            await conn.close()
        assert checked_after == checked
        assert problems_after == []
        # The restored hub takes new work.
        async with _hub(settings, redis) as client:
            conn = await asyncpg.connect(dsn)
            try:
                new_key = await make_key(conn, "510104")
            finally:
                await conn.close()
            await _send(client, new_key, ["13600130001"], "恢复之后")
    finally:
        for cluster in (restored, primary):
            if cluster is not None:
                cluster.cleanup()
