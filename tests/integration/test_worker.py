"""The arq worker, run in-process in burst mode against the real servers."""

from __future__ import annotations

import asyncio
from datetime import date

import asyncpg
import msgspec
import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix

from hub.quota import service as quota
from hub.settings import Settings
from hub.worker import CRON_TRIES, build_worker, hold_in_progress
from tenants.service import ensure_root


async def test_worker_records_its_heartbeat(
    fresh_db: str, redis: ArqRedis, settings: Settings
) -> None:
    settings = msgspec.structs.replace(
        settings, db=msgspec.structs.replace(settings.db, dsn=fresh_db)
    )
    await redis.enqueue_job("hub.heartbeat", _job_id="beat-1")
    worker = build_worker(settings, burst=True, handle_signals=False, crons=False)
    try:
        await worker.main()
    finally:
        await worker.close()
    assert worker.jobs_complete == 1  # no crons: whatever the second, only the queued job
    assert worker.jobs_failed == 0
    conn = await asyncpg.connect(fresh_db)
    try:
        rows = await conn.fetch("SELECT worker, seen_at >= started_at AS ok FROM worker_heartbeats")
    finally:
        await conn.close()
    assert len(rows) == 1
    assert rows[0]["ok"]


async def test_worker_expires_overdue_reservations(
    fresh_db: str, redis: ArqRedis, settings: Settings
) -> None:
    period = date(2026, 11, 1)
    conn = await asyncpg.connect(fresh_db)
    try:
        root = await ensure_root(conn)
        await quota.set_limit(conn, root, period, "test", limit=100)
        kept = await quota.reserve(conn, root, 10, "t", "t", ttl_seconds=3600, period=period)
        due = await quota.reserve(conn, root, 20, "t", "t", ttl_seconds=3600, period=period)
        await conn.execute(
            "UPDATE quota_reservations SET expires_at = hub_now() - interval '1 minute'"
            " WHERE id = $1",
            due.id,
        )
    finally:
        await conn.close()

    settings = msgspec.structs.replace(
        settings, db=msgspec.structs.replace(settings.db, dsn=fresh_db)
    )
    await redis.enqueue_job("hub.quota.expire", _job_id="expire-1")
    worker = build_worker(settings, burst=True, handle_signals=False, crons=False)
    try:
        await worker.main()
    finally:
        await worker.close()
    assert worker.jobs_failed == 0

    conn = await asyncpg.connect(fresh_db)
    try:
        statuses = {
            r["id"]: r["status"]
            for r in await conn.fetch("SELECT id, status::text FROM quota_reservations")
        }
        reserved = await conn.fetchval("SELECT reserved FROM quota_accounts")
    finally:
        await conn.close()
    assert statuses == {kept.id: "pending", due.id: "expired"}
    assert reserved == 10


async def test_each_worker_gets_the_periodic_jobs_of_its_own(settings: Settings) -> None:
    live = msgspec.structs.replace(
        settings, db=msgspec.structs.replace(settings.db, dsn="postgresql://unused/db")
    )
    one, two = build_worker(live), build_worker(live)
    names = {job.name for job in one.cron_jobs}
    assert {"hub.delivery.sweep.cron", "hub.billing.roll_up.cron"} <= names
    assert not {id(job) for job in one.cron_jobs} & {id(job) for job in two.cron_jobs}
    assert build_worker(live, crons=False).cron_jobs == []


def test_a_worker_is_built_only_inside_the_loop_that_runs_it(settings: Settings) -> None:
    """Outside a running loop arq's Worker would make one of its own and never close it (its
    ResourceWarning then failed whichever test the garbage collector happened to run in)."""
    live = msgspec.structs.replace(
        settings, db=msgspec.structs.replace(settings.db, dsn="postgresql://unused/db")
    )
    with pytest.raises(RuntimeError, match="no running event loop"):
        build_worker(live)


async def test_a_killed_workers_job_is_free_again_once_its_lease_ran_out(
    settings: Settings,
) -> None:
    """arq would keep a started job from starting again for its longest job timeout (the
    retention run's six hours): a batch whose worker was killed would wait that long."""
    live = msgspec.structs.replace(
        settings, db=msgspec.structs.replace(settings.db, dsn="postgresql://unused/db")
    )
    worker = build_worker(live)
    assert worker.in_progress_timeout_s == live.delivery.lease_seconds + 10
    assert max(f.timeout_s or 0 for f in worker.functions.values()) == 6 * 3600
    # A cron its killed worker took but never claimed is tried again by another (hub.crons).
    assert {j.max_tries for j in worker.cron_jobs if j.unique} == {CRON_TRIES}


async def test_a_running_job_keeps_its_in_progress_mark_and_a_dead_ones_lapses(
    redis: ArqRedis,
) -> None:
    """The mark lasts a lease: a job still running renews it (so no worker starts it a second
    time beside itself, however slow its carrier), and once it stops being renewed it lapses."""
    key = in_progress_key_prefix + "hub.delivery.deliver:7:cm:1:500"
    await redis.set(key, b"1", px=600)
    held = asyncio.create_task(hold_in_progress(redis, "hub.delivery.deliver:7:cm:1:500", 0.6))
    try:
        await asyncio.sleep(1.5)  # over twice the mark's life
        assert await redis.exists(key)
    finally:
        held.cancel()
    await asyncio.sleep(1.0)  # the worker is "killed": nothing renews it
    assert not await redis.exists(key)
