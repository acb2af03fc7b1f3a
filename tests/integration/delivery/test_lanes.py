"""Lanes: a county's urgent notice overtakes a province's bulk send already queued."""

from __future__ import annotations

import asyncpg
import msgspec
from arq.connections import ArqRedis

from hub.settings import Settings
from tests.factories import bearer, make_key
from tests.integration.delivery.conftest import RunWorker, live_client


async def test_an_urgent_message_goes_before_the_rest_of_a_bulk_send(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    settings = msgspec.structs.replace(
        live_settings, delivery=msgspec.structs.replace(live_settings.delivery, batch_size=20)
    )
    province_key = await make_key(live_db, "510000")
    bulk_phones = [f"138{n:08d}" for n in range(2_000)]  # 100 batches
    async for client in live_client(settings, redis):
        bulk = await client.post(
            "/v1/messages",
            json={"to": bulk_phones, "body": "全省普查通知", "priority": "bulk"},
            headers=bearer(province_key),
        )
        urgent = await client.post(
            "/v1/messages",
            json={"to": ["13900000001"], "body": "紧急：山洪预警", "priority": "urgent"},
            headers=bearer(county_key),
        )
    assert bulk.status_code == urgent.status_code == 202
    first = await redis.zrange("arq:queue", 0, 0)
    assert first[0].decode().startswith(f"deliver:{urgent.json()['id']}:")

    await run_worker(settings)
    urgent_at = await live_db.fetchval(
        "SELECT sent_at FROM messages WHERE send_id = $1", urgent.json()["id"]
    )
    later = await live_db.fetchval(
        "SELECT count(*) FROM messages WHERE send_id = $1 AND sent_at > $2",
        bulk.json()["id"],
        urgent_at,
    )
    # Only what the worker had already started beside it (≤ 20 jobs at once) may precede it.
    assert later >= 2_000 - 20 * 20
