"""The arq worker, run in-process in burst mode against the real servers."""

from __future__ import annotations

import asyncpg
import msgspec
from arq.connections import ArqRedis

from hub.settings import Settings
from hub.worker import build_worker


async def test_worker_records_its_heartbeat(
    fresh_db: str, redis: ArqRedis, settings: Settings
) -> None:
    settings = msgspec.structs.replace(
        settings, db=msgspec.structs.replace(settings.db, dsn=fresh_db)
    )
    await redis.enqueue_job("hub.heartbeat", _job_id="beat-1")
    worker = build_worker(settings, burst=True, handle_signals=False)
    try:
        await worker.main()
    finally:
        await worker.close()
    assert worker.jobs_complete == 1
    assert worker.jobs_failed == 0
    conn = await asyncpg.connect(fresh_db)
    try:
        rows = await conn.fetch("SELECT worker, seen_at >= started_at AS ok FROM worker_heartbeats")
    finally:
        await conn.close()
    assert len(rows) == 1
    assert rows[0]["ok"]
