"""A province and one of its counties send the same notice to overlapping rosters at once.

Real parallel requests through the app on a pool of connections: every phone must get exactly
one message per notice, the others marked deduplicated, no request failing or deadlocking.
"""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from arq.connections import ArqRedis

from hub.app import create_app
from hub.calendar import current_period
from hub.db import PoolDatabase
from hub.messages import service as messages
from hub.messages.schemas import SendAccepted, SendRequest
from hub.quota import service as quota
from hub.settings import Settings
from tenants.service import get_by_code
from tests.factories import bearer, make_key, make_small_tree

pytestmark = [pytest.mark.concurrency, pytest.mark.slow]

NOTICES = 5
PHONES = [f"+86138{n:08d}" for n in range(900)]


async def _setup(dsn: str) -> tuple[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await make_small_tree(conn)
            for code, limit in (
                ("000000", 100_000),
                ("510000", 50_000),
                ("510100", 20_000),
                ("510104", 10_000),
            ):
                tenant = await get_by_code(conn, code)
                assert tenant is not None
                await quota.set_limit(
                    conn, tenant, current_period(), "t", limit=limit, policy="pooled"
                )
            return await make_key(conn, "510000"), await make_key(conn, "510104")
    finally:
        await conn.close()


async def test_overlapping_rosters_at_the_same_instant(
    fresh_db: str, redis: ArqRedis, settings: Settings
) -> None:
    province, county = await _setup(fresh_db)
    pool = await asyncpg.create_pool(fresh_db, min_size=10, max_size=20)
    app = create_app(settings, db=PoolDatabase(pool), redis=redis)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:

            async def send(key: str, phones: list[str], notice: int) -> httpx.Response:
                return await client.post(
                    "/v1/messages",
                    json={"to": phones, "body": f"第{notice}号通知：请按时参加学习"},
                    headers=bearer(key),
                )

            answers = await asyncio.gather(
                *(
                    request
                    for notice in range(NOTICES)
                    for request in (
                        send(province, PHONES[:600], notice),
                        send(county, PHONES[300:], notice),
                    )
                )
            )
        assert [a.status_code for a in answers] == [202] * (2 * NOTICES), [a.text for a in answers]
        conn = await asyncpg.connect(fresh_db)
        try:
            per_phone = await conn.fetch(
                "SELECT s.body, m.phone, count(*) FILTER (WHERE m.status = 'accepted') AS sent, "
                "count(*) FILTER (WHERE m.status = 'deduplicated') AS deduplicated "
                "FROM messages m JOIN sends s ON s.id = m.send_id GROUP BY s.body, m.phone"
            )
            reserved = await conn.fetchval("SELECT sum(amount) FROM quota_reservations")
            to_send = await conn.fetchval(
                "SELECT sum(segments) FROM messages WHERE status = 'accepted'"
            )
        finally:
            await conn.close()
    finally:
        await pool.close()

    assert len(per_phone) == NOTICES * len(PHONES)
    assert {r["sent"] for r in per_phone} == {1}
    overlap = [r for r in per_phone if r["deduplicated"]]
    assert len(overlap) == NOTICES * 300  # phones 300..599 were on both rosters
    assert to_send == NOTICES * len(PHONES)  # one segment per phone per notice, never two
    # Until its original is sent (nothing is, here) a duplicate stays reserved: should the
    # original fail, the duplicate goes out in its place.
    assert reserved == NOTICES * (len(PHONES) + 300)


async def test_a_large_claim_waiting_on_another_sends_keys_takes_them_by_the_rules(
    fresh_db: str, settings: Settings
) -> None:
    """A send's keys no message holds are claimed by a plain INSERT (hub.dedup.service._claim):
    one that waits on a key another send is inserting fails once that send commits, rolls back
    to its savepoint and claims by the rules: the phones the first send reached are its
    duplicates, and nothing errs."""
    await _setup(fresh_db)
    first, second, watcher = [await asyncpg.connect(fresh_db) for _ in range(3)]
    notice = SendRequest(to=list[str | int](PHONES[:600]), body="请按时参加学习")
    try:
        province, county = [await get_by_code(watcher, code) for code in ("510000", "510104")]
        assert province is not None
        assert county is not None
        started = first.transaction()
        await started.start()
        ahead = await messages.create_send(first, province, "t", notice, settings)
        later = SendRequest(to=list[str | int](PHONES[300:]), body=notice.body)

        async def behind() -> SendAccepted:
            async with second.transaction():
                return await messages.create_send(second, county, "t", later, settings)

        job = asyncio.create_task(behind())
        pid = first.get_server_pid()
        while not await watcher.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))",
            pid,
        ):
            assert not job.done(), "the second send did not wait for the first one's keys"
            await asyncio.sleep(0.02)
        await started.commit()
        sent = await job
    finally:
        for conn in (first, second, watcher):
            await conn.close()
    assert ahead.counts.accepted == 600
    assert (sent.counts.accepted, sent.counts.deduplicated) == (300, 300)
