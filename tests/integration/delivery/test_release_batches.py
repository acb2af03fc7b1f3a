"""The release cron commits a batch at a time: due scheduled sends go on in several short
transactions, not one that holds every send (and its reservation) until the last is done."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest
from arq.connections import ArqRedis

from hub import calendar
from hub.db import PoolDatabase, create_pool
from hub.messages import jobs
from hub.messages import service as messages
from hub.messages.schemas import SendRequest
from hub.settings import Settings
from tenants.service import get_by_code
from tests.factories import grant

SENDS = 25


async def test_due_sends_are_released_a_committed_batch_at_a_time(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    county = await get_by_code(live_db, "510104")
    assert county is not None
    later = calendar.now() + timedelta(hours=1)
    # An hour after 23:30 on a month's last day is the next month, whose quota they use: the
    # same limits there as `county_key` set for this one.
    await grant(
        live_db,
        {"000000": 100_000, "510000": 50_000, "510100": 30_000, "510104": 10_000},
        calendar.period_of(later),
    )
    async with live_db.transaction():
        for n in range(SENDS):
            request = SendRequest(to=[f"1380013{n:04d}"], body=f"第{n}号通知", send_at=later)
            await messages.create_send(live_db, county, "test", request, live_settings)
    # Their hour has come (the clock is the hub's; moving the sends is simpler than the clock).
    await live_db.execute("UPDATE sends SET due_at = hub_now() - interval '1 minute'")

    monkeypatch.setattr(jobs, "BATCH", 10, raising=False)
    assert live_settings.db.dsn
    db = PoolDatabase(await create_pool(live_settings.db, live_settings.db.dsn))
    try:
        released = await jobs.release_due_sends(
            {"db": db, "redis": redis, "settings": live_settings}
        )
    finally:
        await db.close()

    assert released == SENDS
    # Which transaction last wrote each send: batches of 10 are three transactions.
    per_transaction = [
        r["n"]
        for r in await live_db.fetch(
            "SELECT count(*) AS n FROM sends WHERE state = 'queued' GROUP BY xmin::text"
        )
    ]
    assert sorted(per_transaction) == [5, 10, 10]
    assert await redis.zcard("arq:queue") == SENDS  # each batch enqueued once committed
