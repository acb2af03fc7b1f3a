"""A send already queued when its subtree is suspended: the worker sends none of it, nothing of
it expires however long the suspension lasts, and all of it goes once it is lifted."""

from __future__ import annotations

import asyncpg
import httpx
from arq.connections import ArqRedis

from hub.db import PoolDatabase, create_pool
from hub.delivery import service
from hub.quota import service as quota
from hub.settings import Settings
from tests.factories import bearer, make_key
from tests.integration.delivery.conftest import RunWorker, audit_clean, statuses

PHONES = [f"1380013{n:04d}" for n in range(30)]


async def test_a_queued_send_waits_out_the_suspension_and_loses_nothing(
    client: httpx.AsyncClient,
    live_db: asyncpg.Connection,
    live_settings: Settings,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    resp = await client.post(
        "/v1/messages", json={"to": PHONES, "body": "防汛通知"}, headers=bearer(county_key)
    )
    assert resp.status_code == 202, resp.text
    send_id = resp.json()["id"]
    city = await make_key(live_db, "510000")
    suspended = await client.patch(
        "/v1/tenants/510100", json={"status": "suspended"}, headers=bearer(city)
    )
    assert suspended.status_code == 200

    await run_worker()  # its batch jobs were queued before the suspension
    assert await statuses(live_db, send_id) == {"accepted": 30}
    assert await live_db.fetchval("SELECT count(*) FROM outbox") == 0

    await redis.enqueue_job("hub.messages.release_due", _job_id="release-1")
    await run_worker()  # the minute's cron: the waiting send is parked
    assert await live_db.fetchval("SELECT parked_at IS NOT NULL FROM sends") is True
    # Two days pass (past the send's validity and its reservation's timeout): the sweeper and
    # the reservations' expiry leave it alone. (arq's results of the batch jobs, which keep
    # their ids from being enqueued again for a minute, are long gone by then.)
    await live_db.execute("UPDATE sends SET due_at = due_at - interval '2 days'")
    for done in await redis.keys("arq:result:*"):
        await redis.delete(done)
    assert live_settings.db.dsn
    db = PoolDatabase(await create_pool(live_settings.db, live_settings.db.dsn))
    try:
        report = await service.sweep(db, redis, live_settings.delivery)
        async with db.acquire() as conn:
            assert await quota.expire_due(conn) == 0
    finally:
        await db.close()
    assert (report["expired"], report["enqueued"]) == (0, 0)
    assert await statuses(live_db, send_id) == {"accepted": 30}
    assert await live_db.fetchval("SELECT status::text FROM quota_reservations") == "pending"

    resumed = await client.patch(
        "/v1/tenants/510100", json={"status": "active"}, headers=bearer(city)
    )
    assert resumed.status_code == 200
    await redis.enqueue_job("hub.messages.release_due", _job_id="release-2")
    await run_worker()  # the next minute: unparked and enqueued; then delivered
    await run_worker()
    assert await statuses(live_db, send_id) == {"delivered": 30}
    assert await live_db.fetchval("SELECT count(*) FROM outbox") == 30
    reservation = await live_db.fetchrow("SELECT status::text, used_part FROM quota_reservations")
    assert reservation is not None
    assert dict(reservation) == {"status": "posted", "used_part": 30}
    assert await audit_clean(live_db) == []
