"""The anniversary job works in committed batches: a province's 10,000 greetings at 09:00 go
out while the province's own API sends keep answering, and a run stopped midway resumes
without greeting anyone twice.

Real connections on a committed database: the job runs as the worker runs it (`run_campaigns`
with a pool), the API on a pool of its own, and a third connection watches what is committed.
Nothing here times anything: it orders events (what was committed before and after each
answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis

from hub import calendar
from hub.app import create_app
from hub.calendar import BUSINESS_TZ
from hub.campaigns import service as campaigns
from hub.campaigns.jobs import run_campaigns
from hub.campaigns.service import BATCH
from hub.db import PoolDatabase, create_pool
from hub.quota import service as quota
from hub.settings import LimitsSettings, Settings
from tests.factories import bearer, grant, make_key, make_small_tree

pytestmark = [pytest.mark.concurrency, pytest.mark.slow]

PROVINCE = "510000"
GREETING = "{name}同志：今天是您入党{years}周年纪念日。"
CONTACTS = int(os.environ.get("HUB_TEST_CAMPAIGN_CONTACTS", "10000"))


@pytest.fixture
def live_settings(settings: Settings, fresh_db: str) -> Settings:
    # Request-rate limits out of the way: the API sends here are few, but back to back.
    return msgspec.structs.replace(
        settings,
        db=msgspec.structs.replace(settings.db, dsn=fresh_db),
        limits=LimitsSettings(key_rate=1e6, key_burst=1e6, tenant_rate=1e6, tenant_burst=1e6),
    )


@pytest.fixture
async def watcher(fresh_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own: it sees only what was committed."""
    conn = await asyncpg.connect(fresh_db)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def pool(live_settings: Settings) -> AsyncIterator[PoolDatabase]:
    assert live_settings.db.dsn
    db = PoolDatabase(await create_pool(live_settings.db, live_settings.db.dsn))
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def client(
    live_settings: Settings, redis: ArqRedis, pool: PoolDatabase
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(live_settings, db=pool, redis=redis)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI typing differs
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as c:
        yield c


async def _province_campaign(
    watcher: asyncpg.Connection, client: httpx.AsyncClient, contacts: int
) -> str:
    """The province's roster, `contacts` of them joined on this day in 2000, and its campaign
    at 09:00 (or at midnight, should the suite run before 09:00 on the wall clock); the
    province's key."""
    await make_small_tree(watcher)
    await grant(watcher, {"000000": 100_000, PROVINCE: 50_000})
    province = await make_key(watcher, PROVINCE)
    root = await make_key(watcher, "000000")
    today = calendar.now().astimezone(BUSINESS_TZ).date()
    joined = date(2000, today.month, today.day)  # 2000 was a leap year: any day exists
    await watcher.execute(
        """
        INSERT INTO contacts (tenant_id, phone, name, joined_on)
        SELECT t.id, '+86138' || lpad(i::text, 8, '0'), '党员' || i, $3
        FROM tenants t, generate_series(1, $2) AS i WHERE t.code = $1
        """,
        PROVINCE,
        contacts,
        joined,
    )
    template = await client.post(
        "/v1/templates", json={"name": "入党纪念日", "body": GREETING}, headers=bearer(province)
    )
    assert template.status_code == 201, template.text
    reviewed = await client.post(
        f"/v1/templates/{template.json()['id']}/review",
        json={"decision": "approve"},
        headers=bearer(root),
    )
    assert reviewed.status_code == 200, reviewed.text
    at_nine = calendar.now().astimezone(BUSINESS_TZ).hour >= 9
    made = await client.post(
        "/v1/campaigns",
        json={
            "kind": "anniversary",
            "field": "joined_on",
            "template": template.json()["id"],
            "send_time": "09:00" if at_nine else "00:00",
        },
        headers=bearer(province),
    )
    assert made.status_code == 201, made.text
    return province


async def _greeted(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM campaign_deliveries"))


async def _messages(conn: asyncpg.Connection) -> tuple[int, int]:
    """The campaign's messages, and the phones they go to."""
    found = await conn.fetchrow(
        "SELECT count(*) AS messages, count(DISTINCT m.phone) AS phones"
        " FROM messages m JOIN sends s ON s.id = m.send_id WHERE s.actor LIKE 'campaign:%'"
    )
    assert found is not None
    return found["messages"], found["phones"]


async def _progress(conn: asyncpg.Connection, job: asyncio.Task[Any], beyond: int) -> None:
    """Until the job has committed more than `beyond` greetings, or ended."""
    while not job.done():
        if await _greeted(conn) > beyond:
            return
        await asyncio.sleep(0.05)  # a commit in another session offers nothing to wait on


class _Undo(Exception):
    """Rolls a transaction back from inside its block."""


async def _waiting_for(
    conn: asyncpg.Connection, holder: asyncpg.Connection, job: asyncio.Task[Any]
) -> bool:
    """Wait until a session waits for a lock `holder` holds (the job, at the row it holds):
    True; or until the job has ended: False. (pg_locks is the whole server's: other tests'
    sessions wait for locks too.)"""
    pid = holder.get_server_pid()
    while not job.done():
        if await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))",
            pid,
        ):
            return True
        await asyncio.sleep(0.05)
    return False


async def _holding_quota(conn: asyncpg.Connection, job: asyncio.Task[Any]) -> bool:
    """Wait until another session holds a reservation it has not committed (the job, halfway
    through a greeting's transaction, holding the province's quota row): True; or until the
    job has ended: False."""
    while not job.done():
        if await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
            " WHERE c.relname = 'quota_reservations' AND l.mode = 'RowExclusiveLock'"
            " AND l.pid <> pg_backend_pid()"
            # pg_locks is the whole server's, and the tests' clones share table oids.
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
        ):
            return True
        await asyncio.sleep(0.01)  # another session's lock offers nothing to wait on
    return False


def _ctx(pool: PoolDatabase, redis: ArqRedis, settings: Settings) -> dict[str, Any]:
    """What the worker gives a job."""
    return {"db": pool, "redis": redis, "settings": settings}


# 10,000 greetings, one send per batch of 50: 7 s on 2 quiet cores (593 s at load 12 when each
# greeting was a send of its own).
@pytest.mark.timeout(900)
async def test_a_province_greets_10000_in_batches_while_its_api_sends_answer(
    watcher: asyncpg.Connection,
    client: httpx.AsyncClient,
    pool: PoolDatabase,
    redis: ArqRedis,
    live_settings: Settings,
) -> None:
    province = await _province_campaign(watcher, client, CONTACTS)
    job = asyncio.create_task(run_campaigns(_ctx(pool, redis, live_settings)))

    # API sends of the same province while the job runs, each made while a greeting's
    # reservation is uncommitted (the job holds the province's quota row, the row the API send
    # reserves on too), the next once the job has committed more.
    answers: list[tuple[int, int, int, int]] = []  # (greeted before, after, status, queued)
    while await _holding_quota(watcher, job):
        before = await _greeted(watcher)
        phone = f"+86139{len(answers):08d}"
        sent = await client.post(
            "/v1/messages",
            json={"to": [phone], "body": f"紧急通知第{len(answers)}号：今晚八点开会。"},
            headers=bearer(province),
        )
        after = await _greeted(watcher)
        answers.append((before, after, sent.status_code, await redis.zcard("arq:queue")))
        await _progress(watcher, job, after)
    greeted = await job

    assert greeted == CONTACTS
    assert answers, "the job never held the quota row"
    assert {status for _, _, status, _ in answers} == {202}
    # Made while the job held the quota row, answered before it had committed every greeting:
    # the send waited for one batch, not for the job. (In one transaction, the job commits its
    # greetings all at once, and a send behind it answers only then.)
    during = [(b, a) for b, a, _, _ in answers if a < CONTACTS]
    assert answers[0][1] < CONTACTS, answers
    assert len(during) >= 3, answers
    # The greetings already committed were on the queue to go while the job went on.
    assert any(queued and a < CONTACTS for _, a, _, queued in answers), answers

    # Batches: no transaction wrote more than one batch of greetings; each contact once.
    per_transaction = await watcher.fetchval(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM campaign_deliveries GROUP BY xmin::text) t"
    )
    assert per_transaction <= campaigns.BATCH
    assert await _messages(watcher) == (CONTACTS, CONTACTS)
    years = calendar.now().astimezone(BUSINESS_TZ).year - 2000
    assert (
        await watcher.fetchval("SELECT body FROM messages WHERE phone = '+8613800000007'")
        == f"党员7同志：今天是您入党{years}周年纪念日。"
    )
    _, problems = await quota.audit(watcher, calendar.current_period())
    assert problems == []


async def test_a_run_stopped_midway_resumes_without_greeting_anyone_twice(
    watcher: asyncpg.Connection,
    client: httpx.AsyncClient,
    pool: PoolDatabase,
    redis: ArqRedis,
    live_settings: Settings,
) -> None:
    contacts, stop_after = 400, 3 * BATCH
    province = await _province_campaign(watcher, client, contacts)
    # The job is stopped at a known place, whatever the machine's speed: another session holds
    # (uncommitted) the greeting of the first contact of the fourth batch, so the job commits
    # three batches and then waits on that row's key, where the worker dies.
    other = await client.post(
        "/v1/messages", json={"to": ["13900139000"], "body": "通知"}, headers=bearer(province)
    )
    assert other.status_code == 202, other.text
    assert live_settings.db.dsn
    blocker = await asyncpg.connect(live_settings.db.dsn)
    try:
        async with blocker.transaction():
            await blocker.execute(
                "INSERT INTO campaign_deliveries (campaign_id, contact_id, year, send_id)"
                " SELECT (SELECT id FROM campaigns), (SELECT id FROM contacts ORDER BY id"
                " OFFSET $1 LIMIT 1), $2, $3",
                stop_after,
                calendar.now().astimezone(BUSINESS_TZ).year,
                other.json()["id"],
            )
            ctx = _ctx(pool, redis, live_settings)
            job = asyncio.create_task(run_campaigns(ctx))
            assert await _waiting_for(watcher, blocker, job)
            job.cancel()  # the worker dies mid-run
            with contextlib.suppress(asyncio.CancelledError):
                await job
            raise _Undo  # the other session's greeting goes too
    except _Undo:
        pass
    finally:
        await blocker.close()
    kept = await _greeted(watcher)
    # What was committed before the stop stays committed; the rest was not reached.
    assert kept == stop_after

    rest = await run_campaigns(ctx)  # the next minute's run
    assert rest == contacts - kept
    assert await run_campaigns(ctx) == 0
    assert await _greeted(watcher) == contacts
    assert await _messages(watcher) == (contacts, contacts)
    _, problems = await quota.audit(watcher, calendar.current_period())
    assert problems == []
