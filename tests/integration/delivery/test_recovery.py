"""PostgreSQL is the source of truth: Redis flushed mid-send, a worker gone mid-batch."""

from __future__ import annotations

import asyncpg
import httpx
from arq.connections import ArqRedis

from hub.delivery import repository as delivery_sql
from hub.settings import Settings
from tests.factories import bearer
from tests.integration.delivery.conftest import RunWorker, audit_clean, statuses, sweep_once

PHONES = [f"1380013{n:04d}" for n in range(50)]


async def test_redis_flushed_after_the_send_loses_nothing(
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
    send_id = resp.json()["id"]
    await redis.flushdb()  # every queued batch job is gone
    await run_worker()
    assert await statuses(live_db, send_id) == {"accepted": 50}

    report = await sweep_once(live_settings, redis)
    assert report["enqueued"] >= 1
    await run_worker()
    assert await statuses(live_db, send_id) == {"delivered": 50}
    # The next round finds nothing open and closes the send.
    assert (await sweep_once(live_settings, redis))["done"] == 1
    assert await live_db.fetchval("SELECT state::text FROM sends WHERE id = $1", send_id) == "done"
    assert await live_db.fetchval("SELECT count(*) FROM outbox") == 50
    assert await audit_clean(live_db) == []


async def test_a_dead_workers_leases_are_recovered_at_most_once(
    client: httpx.AsyncClient,
    live_db: asyncpg.Connection,
    live_settings: Settings,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    resp = await client.post(
        "/v1/messages", json={"to": PHONES[:10], "body": "防汛通知"}, headers=bearer(county_key)
    )
    send_id = resp.json()["id"]
    await redis.flushdb()
    # A worker claimed all ten, marked six handed over, the outbox took four of them, and the
    # worker died (SIGKILL leaves just this).
    await live_db.execute(
        "UPDATE messages SET status = 'sending', gateway = 'outbox', attempts = 1,"
        " lease_until = hub_now() - interval '1 second' WHERE send_id = $1",
        send_id,
    )
    await live_db.execute(
        "UPDATE messages SET submitted_at = hub_now() WHERE id IN"
        " (SELECT id FROM messages WHERE send_id = $1 ORDER BY id LIMIT 6)",
        send_id,
    )
    await live_db.execute(
        "INSERT INTO outbox (message_id, gateway, phone, sender, text, segments)"
        " SELECT id, 'outbox', phone, '10690000', '防汛通知', segments FROM messages"
        " WHERE send_id = $1 ORDER BY id LIMIT 4",
        send_id,
    )
    report = await sweep_once(live_settings, redis)
    # The outbox can be asked: the two it never took go again with the four never handed over.
    assert (report["requeued"], report["unknown"]) == (6, 4)
    await run_worker()
    # The four maybe-delivered ones are never sent again; the six are delivered.
    assert await statuses(live_db, send_id) == {"sent": 4, "delivered": 6}
    assert await live_db.fetchval("SELECT count(*) FROM outbox") == 10
    unknown = await live_db.fetch("SELECT error FROM messages WHERE status = 'sent'")
    assert all("outcome unknown" in r["error"] for r in unknown)
    assert await audit_clean(live_db) == []
    used = await live_db.fetchval("SELECT used_part FROM quota_reservations")
    assert used == 10


async def test_an_outbox_claim_marks_its_chunk_and_a_dead_workers_chunk_goes_again(
    client: httpx.AsyncClient,
    live_db: asyncpg.Connection,
    live_settings: Settings,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    """The outbox can be asked what it took, so its claim marks the chunk handed over itself
    (one statement and one row version fewer per message): a worker that dies between the claim
    and the outbox's insert leaves messages that go again, never "outcome unknown". Any other
    gateway's claim leaves them unmarked (MARK_SUBMITTED marks them just before the call)."""
    resp = await client.post(
        "/v1/messages", json={"to": PHONES[:10], "body": "防汛通知"}, headers=bearer(county_key)
    )
    send_id = resp.json()["id"]
    await redis.flushdb()
    chunk = await live_db.fetchrow(
        "SELECT min(carrier), min(id), max(id) FROM messages WHERE send_id = $1", send_id
    )
    assert chunk is not None
    args = (send_id, *chunk)
    other = await live_db.fetch(delivery_sql.CLAIM, *args, "smsc", 30.0, 4, False)
    marked = (
        "SELECT count(*) FROM messages WHERE id = ANY($1::bigint[]) AND submitted_at IS NOT NULL"
    )
    assert await live_db.fetchval(marked, [r["id"] for r in other]) == 0
    await live_db.execute(
        "UPDATE messages SET status = 'accepted', lease_until = NULL, gateway = NULL"
        " WHERE send_id = $1",
        send_id,
    )
    claimed = await live_db.fetch(delivery_sql.CLAIM, *args, "outbox", 30.0, 100, True)
    assert len(claimed) == 10
    assert await live_db.fetchval(marked, [r["id"] for r in claimed]) == 10
    # The worker died before the outbox's insert: its lease runs out.
    await live_db.execute(
        "UPDATE messages SET lease_until = hub_now() - interval '1 second' WHERE send_id = $1",
        send_id,
    )
    report = await sweep_once(live_settings, redis)
    assert (report["requeued"], report["unknown"]) == (10, 0)
    await run_worker()
    assert await statuses(live_db, send_id) == {"delivered": 10}
    assert await live_db.fetchval("SELECT count(*) FROM outbox") == 10
    assert await audit_clean(live_db) == []


async def test_messages_past_their_validity_expire_and_release_their_quota(
    client: httpx.AsyncClient,
    live_db: asyncpg.Connection,
    live_settings: Settings,
    redis: ArqRedis,
    county_key: str,
) -> None:
    resp = await client.post(
        "/v1/messages", json={"to": PHONES[:5], "body": "防汛通知"}, headers=bearer(county_key)
    )
    send_id = resp.json()["id"]
    await redis.flushdb()
    await live_db.execute(
        "UPDATE sends SET due_at = hub_now() - interval '7 hours' WHERE id = $1", send_id
    )
    report = await sweep_once(live_settings, redis)
    assert report["expired"] == 5
    assert await statuses(live_db, send_id) == {"expired": 5}
    reservation = await live_db.fetchrow(
        "SELECT status::text, released_part FROM quota_reservations"
    )
    assert reservation is not None
    assert dict(reservation) == {"status": "voided", "released_part": 5}
    assert await audit_clean(live_db) == []


async def test_the_sweeper_can_enqueue_a_batch_whose_job_has_run(
    client: httpx.AsyncClient,
    live_db: asyncpg.Connection,
    live_settings: Settings,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    """A batch's job id names the batch. Had arq kept the job's result, the id would stay taken
    for that long and the sweeper could not enqueue the batch again for messages its job left
    behind (a retry that found nothing due yet): they waited a minute, or for good."""
    resp = await client.post(
        "/v1/messages", json={"to": PHONES[:3], "body": "防汛通知"}, headers=bearer(county_key)
    )
    send_id = resp.json()["id"]
    await live_db.execute("UPDATE messages SET retry_at = 'infinity' WHERE send_id = $1", send_id)
    await run_worker()  # the batch's job runs and finds nothing due
    assert await statuses(live_db, send_id) == {"accepted": 3}
    await live_db.execute("UPDATE messages SET retry_at = NULL WHERE send_id = $1", send_id)
    assert (await sweep_once(live_settings, redis))["enqueued"] == 1
    await run_worker()
    assert await statuses(live_db, send_id) == {"delivered": 3}
