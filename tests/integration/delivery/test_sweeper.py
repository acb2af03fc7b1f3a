"""The sweeper sees every queued send, not a window of the first few hundred, and reads them
through an index of their own."""

from __future__ import annotations

import json

import asyncpg
from arq.connections import ArqRedis

from hub.db import PoolDatabase, create_pool
from hub.delivery import repository as delivery_sql
from hub.delivery import service
from hub.messages import service as messages
from hub.messages.schemas import SendRequest
from hub.settings import Settings
from tenants.service import get_by_code

SENDS = 300


async def test_a_sweep_reaches_every_queued_send(
    live_settings: Settings, live_db: asyncpg.Connection, redis: ArqRedis, county_key: str
) -> None:
    county = await get_by_code(live_db, "510104")
    assert county is not None
    async with live_db.transaction():
        send_ids = [
            (
                await messages.create_send(
                    live_db,
                    county,
                    "test",
                    SendRequest(to=[f"1380013{n:04d}"], body=f"第{n}号通知"),
                    live_settings,
                )
            ).id
            for n in range(SENDS)
        ]
    # Committed and queued, none on the queue: what Redis losing everything leaves.
    assert await redis.zcard("arq:queue") == 0

    assert live_settings.db.dsn
    db = PoolDatabase(await create_pool(live_settings.db, live_settings.db.dsn))
    try:
        report = await service.sweep(db, redis, live_settings.delivery)
    finally:
        await db.close()

    assert report["sends"] == SENDS
    assert report["enqueued"] == SENDS
    queued = {j.decode().split(":")[1] for j in await redis.zrange("arq:queue", 0, -1)}
    assert {str(i) for i in send_ids[249:]} <= queued  # the 250th to the 300th
    assert queued == {str(i) for i in send_ids}


async def test_the_sweepers_page_is_read_through_its_partial_index(
    conn: asyncpg.Connection,
) -> None:
    definition = await conn.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'sends_queued'"
    )
    assert definition is not None, "no index for the sweeper"
    await conn.execute("SET LOCAL enable_seqscan = off")
    plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {delivery_sql.OPEN_SENDS}", "urgent", 0, 200)
    assert '"Index Name": "sends_queued"' in json.dumps(json.loads(plan))
