"""Copies of one notice due at different times, sent and cancelled at once by three tiers.

Real parallel requests on a pool: earlier copies take keys from later ones while originals are
cancelled and hand their phones on. No request may fail or deadlock, and afterwards no phone is
left relying on a copy that will never go out.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import httpx
import pytest
from arq.connections import ArqRedis

from hub import calendar
from hub.app import create_app
from hub.calendar import current_period, next_period
from hub.db import PoolDatabase
from hub.quota import service as quota
from hub.settings import Settings
from tenants.service import get_by_code
from tests.factories import bearer, make_key, make_small_tree

pytestmark = [pytest.mark.concurrency, pytest.mark.slow]

PHONES = [f"+86138{n:08d}" for n in range(300)]
BODY = "请于本周五前报送年度党员发展计划"


async def _setup(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await make_small_tree(conn)
            month = current_period()
            for _ in range(2):
                for code, limit in (
                    ("000000", 100_000),
                    ("510000", 50_000),
                    ("510100", 20_000),
                    ("510104", 10_000),
                ):
                    tenant = await get_by_code(conn, code)
                    assert tenant is not None
                    await quota.set_limit(conn, tenant, month, "t", limit=limit, policy="pooled")
                month = next_period(month)
            return {code: await make_key(conn, code) for code in ("510000", "510100", "510104")}
    finally:
        await conn.close()


async def test_sends_and_cancels_at_once_leave_no_phone_stranded(
    fresh_db: str, redis: ArqRedis, settings: Settings
) -> None:
    keys = await _setup(fresh_db)
    pool = await asyncpg.create_pool(fresh_db, min_size=10, max_size=20)
    app = create_app(settings, db=PoolDatabase(pool), redis=redis)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:

            async def send(code: str, phones: list[str], hours: float | None) -> httpx.Response:
                payload: dict[str, object] = {"to": phones, "body": BODY}
                if hours is not None:
                    payload["send_at"] = (calendar.now() + timedelta(hours=hours)).isoformat()
                return await client.post("/v1/messages", json=payload, headers=bearer(keys[code]))

            async def cancel(code: str, send_id: int) -> httpx.Response:
                return await client.delete(f"/v1/messages/{send_id}", headers=bearer(keys[code]))

            first = await send("510104", PHONES[:200], 2)
            second = await send("510100", PHONES[100:], 3)
            third = await send("510000", PHONES, 4)
            assert [a.status_code for a in (first, second, third)] == [202] * 3
            answers = await asyncio.gather(
                cancel("510104", first.json()["id"]),
                send("510100", PHONES[50:250], 1),
                cancel("510100", second.json()["id"]),
                send("510000", PHONES[:150], 2.5),
                send("510104", PHONES[200:], None),
            )
        assert [a.status_code for a in answers] == [204, 202, 204, 202, 202], [
            a.text for a in answers
        ]
        conn = await asyncpg.connect(fresh_db)
        try:
            stranded = await conn.fetch(
                "SELECT m.id, o.status::text AS original FROM messages m"
                " JOIN messages o ON o.id = m.duplicate_of"
                " WHERE m.status = 'deduplicated' AND m.done_at IS NULL"
                "   AND (o.status <> 'accepted' OR o.phone <> m.phone)"
            )
            uncovered = await conn.fetch(
                "SELECT m.phone FROM messages m JOIN sends s ON s.id = m.send_id"
                " WHERE s.state <> 'cancelled' GROUP BY m.phone"
                " HAVING count(*) FILTER (WHERE m.status = 'accepted') = 0"
            )
            keys_elsewhere = await conn.fetchval(
                "SELECT count(*) FROM dedup_keys d JOIN messages m ON m.id = d.message_id"
                " WHERE m.status <> 'accepted'"
            )
            _, problems = await quota.audit(conn, current_period())
        finally:
            await conn.close()
    finally:
        await pool.close()

    assert stranded == []  # every relying copy relies on one that is still to go out
    assert uncovered == []  # every phone a live send names has a copy to go out
    assert keys_elsewhere == 0  # every key is held by a copy still to go out
    assert problems == []
