"""Lanes: a county's urgent notice overtakes a province's 100,000-recipient bulk send."""

from __future__ import annotations

import asyncpg
from arq.connections import ArqRedis

from hub.settings import Settings
from tests.factories import bearer, grant, make_key
from tests.integration.delivery.conftest import (
    eventually,
    live_client,
    running_worker,
    wait_statuses,
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
