"""The first sends of a month never deadlock: forty counties whose accounts are not open yet,
under a pooled city and province, each send a few notices, all at once. Opening a county's
account locks its city's (to allocate from it); reserving locks the chain root first. Were a
county to open its account before locking the chain, it would hold the city's lock and wait
for the province's, while a county whose account is already open (its second notice) holds
the province's and waits for the city's: PostgreSQL breaks such a deadlock with an error, and
the API answered 500. Real parallel requests on a pool of connections."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from arq.connections import ArqRedis

from hub import calendar
from hub.app import create_app
from hub.db import PoolDatabase
from hub.quota import service as quota
from hub.settings import Settings
from tests.factories import bearer, grant, make_key, make_small_tree, make_tenant

pytestmark = [pytest.mark.concurrency, pytest.mark.slow]

COUNTIES = [f"5101{n:02d}" for n in range(40, 80)]
NOTICES = 3


async def _setup(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await make_small_tree(conn)
            await grant(conn, {"000000": 100_000})
            await grant(conn, {"510000": 50_000, "510100": 20_000}, policy="pooled")
            keys = []
            for code in COUNTIES:
                county = await make_tenant(conn, code, f"县{code}", parent="510100")
                # No account this month: the first send opens it with this.
                await quota.set_defaults(conn, county, 100, "strict", "test")
                keys.append(await make_key(conn, code))
            return keys
    finally:
        await conn.close()


async def test_forty_counties_open_their_month_at_once(
    fresh_db: str, redis: ArqRedis, settings: Settings
) -> None:
    keys = await _setup(fresh_db)
    pool = await asyncpg.create_pool(fresh_db, min_size=20, max_size=40)
    app = create_app(settings, db=PoolDatabase(pool), redis=redis)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:

            async def notices(i: int, key: str) -> list[httpx.Response]:
                return [
                    await client.post(
                        "/v1/messages",
                        json={"to": [f"+86139{i:08d}"], "body": f"{i}号县本月第{n}条通知"},
                        headers=bearer(key),
                    )
                    for n in range(1, NOTICES + 1)
                ]

            sent = await asyncio.gather(*(notices(i, key) for i, key in enumerate(keys)))
        answers = [a for county in sent for a in county]
        assert [a.status_code for a in answers] == [202] * (len(keys) * NOTICES), [
            a.text for a in answers if a.status_code != 202
        ]
        conn = await asyncpg.connect(fresh_db)
        try:
            opened = await conn.fetchval(
                "SELECT count(*) FROM quota_accounts a JOIN tenants t ON t.id = a.tenant_id"
                " WHERE t.code = ANY($1::text[]) AND a.period = $2",
                COUNTIES,
                calendar.current_period(),
            )
            allocated = await conn.fetchval(
                "SELECT a.allocated FROM quota_accounts a JOIN tenants t ON t.id = a.tenant_id"
                " WHERE t.code = '510100' AND a.period = $1",
                calendar.current_period(),
            )
            _, problems = await quota.audit(conn, calendar.current_period())
        finally:
            await conn.close()
    finally:
        await pool.close()
    assert opened == len(COUNTIES)
    assert allocated == 100 * len(COUNTIES)  # each opened once, allocated from its city once
    assert problems == []
