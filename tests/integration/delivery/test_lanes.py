"""Lanes: a county's urgent notice overtakes a province's 100,000-recipient bulk send, and
keeps doing so when it is retried or swept."""

from __future__ import annotations

import asyncpg
from arq.connections import ArqRedis

from hub.db import PoolDatabase, create_pool
from hub.delivery import service
from hub.settings import GatewayConfig, Settings
from tests.factories import bearer, grant, make_key
from tests.integration.delivery.conftest import (
    eventually,
    free_port,
    live_client,
    running_worker,
    wait_statuses,
    with_gateways,
)

BULK = 100_000


async def test_an_urgent_message_goes_before_the_rest_of_a_bulk_send(
    live_settings: Settings, live_db: asyncpg.Connection, redis: ArqRedis, county_key: str
) -> None:
    await grant(live_db, {"000000": 1_000_000, "510000": 500_000})
    province_key = await make_key(live_db, "510000")
    bulk_phones = [f"138{n:08d}" for n in range(BULK)]  # 200 batches of 500
    async for client in live_client(live_settings, redis):
        bulk = await client.post(
            "/v1/messages",
            json={"to": bulk_phones, "body": "全省普查通知", "priority": "bulk"},
            headers=bearer(province_key),
        )
        assert bulk.status_code == 202, bulk.text
        urgent = await client.post(
            "/v1/messages",
            json={"to": ["13900000001"], "body": "紧急：山洪预警", "priority": "urgent"},
            headers=bearer(county_key),
        )
        assert urgent.status_code == 202, urgent.text
    # Enqueued after 200 bulk batches, it is first in line.
    first = await redis.zrange("arq:queue", 0, 0)
    assert first[0].decode().startswith(f"deliver:{urgent.json()['id']}:")

    async with running_worker(live_settings) as worker:
        await wait_statuses(live_db, urgent.json()["id"], {"delivered": 1})
        urgent_at = await live_db.fetchval(
            "SELECT sent_at FROM messages WHERE send_id = $1", urgent.json()["id"]
        )
        # The rest of the bulk send is not this test's business: take it off (its jobs then
        # find nothing to claim) and let the worker drain before it stops.
        await live_db.execute(
            "UPDATE sends SET state = 'cancelled' WHERE id = $1", bulk.json()["id"]
        )

        async def drained() -> bool:
            return not await redis.zcard("arq:queue") and not worker.tasks

        await eventually(drained, patience=120)
    sent_before = await live_db.fetchval(
        "SELECT count(*) FROM messages WHERE send_id = $1 AND sent_at <= $2",
        bulk.json()["id"],
        urgent_at,
    )
    # At most what the worker started beside it in its first poll (20 jobs) went before it.
    assert sent_before < 20 * 500


async def _queue(redis: ArqRedis) -> list[str]:
    return [j.decode() for j in await redis.zrange("arq:queue", 0, -1)]


async def _bulk_then_urgent(
    settings: Settings, redis: ArqRedis, live_db: asyncpg.Connection, county_key: str
) -> list[int]:
    """A province's bulk send (three batches) queued first, then a county's urgent notice."""
    province_key = await make_key(live_db, "510000")
    async for client in live_client(settings, redis):
        bulk = await client.post(
            "/v1/messages",
            json={"to": [f"138{n:08d}" for n in range(30)], "body": "全省普查", "priority": "bulk"},
            headers=bearer(province_key),
        )
        urgent = await client.post(
            "/v1/messages",
            json={"to": ["13900000001"], "body": "紧急：山洪预警", "priority": "urgent"},
            headers=bearer(county_key),
        )
    assert (bulk.status_code, urgent.status_code) == (202, 202), bulk.text + urgent.text
    return [bulk.json()["id"], urgent.json()["id"]]


async def test_a_retried_urgent_batch_goes_back_ahead_of_the_bulk_batches(
    live_settings: Settings, live_db: asyncpg.Connection, redis: ArqRedis, county_key: str
) -> None:
    unreachable = GatewayConfig(
        name="down",
        kind="kannel",
        url=f"http://127.0.0.1:{free_port()}",
        secret="s",
        options={"callback_url": "http://127.0.0.1:1"},
    )
    settings = with_gateways(live_settings, unreachable, batch_size=10, retry_base_seconds=0.4)
    bulk_id, urgent_id = await _bulk_then_urgent(settings, redis, live_db, county_key)
    first = (await _queue(redis))[0]
    assert first.startswith(f"deliver:{urgent_id}:")
    # A worker takes the urgent batch (off the queue, as arq does) and the gateway fails.
    await redis.zrem("arq:queue", first)
    _, _, carrier, low, high = first.split(":")
    assert settings.db.dsn
    db = PoolDatabase(await create_pool(settings.db, settings.db.dsn))
    delivery = service.Delivery(settings, db, redis)
    await delivery.start()
    try:
        await delivery.deliver_batch(urgent_id, carrier, int(low), int(high))
        waiting = await live_db.fetchrow(
            "SELECT status::text, retry_at FROM messages WHERE send_id = $1", urgent_id
        )
        assert waiting is not None
        assert waiting["status"] == "accepted"
        assert waiting["retry_at"] is not None
        [retry] = [j for j in await _queue(redis) if j.startswith(f"deliver:{urgent_id}:")]
        # Deferred to its time, it waits behind the bulk batches for now …
        assert (await _queue(redis))[0].startswith(f"deliver:{bulk_id}:")

        async def back_in_its_lane() -> bool:
            return (await _queue(redis))[0] == retry

        # … and once due it is first in line again, ahead of every bulk batch.
        await eventually(back_in_its_lane, patience=10)
        assert len(await _queue(redis)) == 4  # the three bulk batches are still queued
    finally:
        await delivery.close()
        await db.close()


async def test_a_sweep_enqueues_urgent_sends_first(
    live_settings: Settings, live_db: asyncpg.Connection, redis: ArqRedis, county_key: str
) -> None:
    settings = with_gateways(live_settings, *live_settings.delivery.gateways, batch_size=10)
    bulk_id, urgent_id = await _bulk_then_urgent(settings, redis, live_db, county_key)
    await redis.flushdb()  # Redis lost every queued batch
    assert settings.db.dsn
    db = PoolDatabase(await create_pool(settings.db, settings.db.dsn))
    try:
        # Read a send at a time: the urgent one first, then on to the older bulk one.
        report = await service.sweep(db, redis, settings.delivery, batch=1)
    finally:
        await db.close()
    assert (report["sends"], report["enqueued"]) == (2, 4)
    queue = [j.split(":")[1] for j in await _queue(redis)]
    assert queue == [str(urgent_id)] + [str(bulk_id)] * 3
    assert bulk_id < urgent_id
