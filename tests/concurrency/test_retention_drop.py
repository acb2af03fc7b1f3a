"""Dropping a month's partition while sends run blocks no send for more than a second: real
POST /v1/messages on a pool whose connections give up any lock wait after 1 s (a send held
longer would fail, and the API answer 503), while erase_old detaches and drops old partitions
with its own 500 ms lock waits. Prints the measured worst send and the DDL's time."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis

from hub.app import create_app
from hub.db import PoolDatabase, SingleConnectionDatabase
from hub.messages import months
from hub.messages.retention import erase_old
from hub.retention.schemas import Policy
from hub.settings import Settings
from tests.factories import bearer, grant, make_key, make_small_tree
from tests.integration.messages.months import month_start, send_at

pytestmark = [pytest.mark.concurrency, pytest.mark.slow]

SENDERS = 8


def _last_month() -> str:
    """The partition of last month's sends, the one that goes."""
    return months.partition_name(months.month_index(month_start(-1)))


async def _setup(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await make_small_tree(conn)
            await grant(conn, {"000000": 100_000, "510000": 50_000, "510100": 20_000})
            await grant(conn, {"510104": 10_000})
            tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE code = '510104'")
            # Last month's sends, in last month's own partition: what goes.
            await months.make_ahead(SingleConnectionDatabase(conn), month_start(-1), 0)
            for n in range(20):
                await send_at(conn, tenant_id, month_start(-1), [f"+86137{n:08d}"])
            return await make_key(conn, "510104")
    finally:
        await conn.close()


async def test_dropping_a_month_blocks_no_send_for_more_than_a_second(
    fresh_db: str, redis: ArqRedis, settings: Settings
) -> None:
    # Not the request limiter's test: every send must reach the database, however many fit in
    # the drop's time (at 5 units a send, the default burst holds 60).
    limits = msgspec.structs.replace(settings.limits, key_burst=1e6, tenant_burst=1e6)
    settings = msgspec.structs.replace(settings, limits=limits)
    key = await _setup(fresh_db)
    before = await asyncpg.connect(fresh_db)
    try:
        partitions = set(
            await before.fetchval(
                "SELECT array_agg(c.relname::text) FROM pg_inherits i"
                " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'messages'::regclass"
            )
        )
    finally:
        await before.close()
    pool = await asyncpg.create_pool(
        fresh_db, min_size=SENDERS, max_size=SENDERS + 2, server_settings={"lock_timeout": "1s"}
    )
    retention_pool = await asyncpg.create_pool(fresh_db, min_size=1, max_size=2)
    app = create_app(settings, db=PoolDatabase(pool), redis=redis)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    latencies: list[float] = []
    answers: list[httpx.Response] = []
    stop = asyncio.Event()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:

            async def sender(i: int) -> None:
                n = 0
                while not stop.is_set() or n < 3:
                    started = time.perf_counter()
                    answer = await client.post(
                        "/v1/messages",
                        json={"to": [f"+86139{i:04d}{n:04d}"], "body": f"第{n}条通知"},
                        headers=bearer(key),
                    )
                    latencies.append(time.perf_counter() - started)
                    answers.append(answer)
                    n += 1

            async def retention() -> tuple[float, list[str]]:
                await asyncio.sleep(0.2)  # the senders are under way
                started = time.perf_counter()
                policy = Policy(now=month_start(1), messages_before=month_start(0))
                gone = await erase_old(PoolDatabase(retention_pool), policy, dry_run=False)
                took = time.perf_counter() - started
                stop.set()
                return took, [g.what for g in gone if g.how == "partition dropped"]

            running = asyncio.create_task(retention())
            await asyncio.gather(*(sender(i) for i in range(SENDERS)))
            took, dropped = await running
    finally:
        await retention_pool.close()
        await pool.close()
    print(
        f"\n{len(answers)} sends during retention; worst {max(latencies) * 1000:.0f} ms, "
        f"median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms; "
        f"erase_old dropped {dropped} in {took * 1000:.0f} ms"
    )
    assert _last_month() in dropped
    assert set(dropped) <= partitions
    # No send waited on a lock for 1 s (it would have failed): every one was accepted.
    assert [a.status_code for a in answers] == [202] * len(answers), [
        a.text for a in answers if a.status_code != 202
    ]


async def test_a_drop_behind_a_long_transaction_gives_way_and_tries_again(
    fresh_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A transaction holding `messages` for 1.2 s: the DDL gives up after 500 ms each time (a
    send arriving meanwhile queues behind it no longer than that, and its own 1 s lock_timeout
    never ends it), and goes on its next try. Under libfaketime PostgreSQL's lock timeouts
    never fire (.ci/run): those runs leave this test out."""
    await _setup(fresh_db)
    holder = await asyncpg.connect(fresh_db)
    sender = await asyncpg.connect(fresh_db, server_settings={"lock_timeout": "1s"})
    pool = await asyncpg.create_pool(fresh_db, min_size=1, max_size=2)
    try:
        holding = holder.transaction()
        await holding.start()
        await holder.execute("LOCK TABLE messages IN ROW EXCLUSIVE MODE")  # as a send does

        async def release() -> None:
            await asyncio.sleep(1.2)
            await holding.commit()

        async def a_send_meanwhile() -> float:
            await asyncio.sleep(0.2)  # the DDL is waiting by now
            started = time.perf_counter()
            async with sender.transaction():
                await sender.execute("LOCK TABLE messages IN ROW EXCLUSIVE MODE")
            return time.perf_counter() - started

        started = time.perf_counter()
        policy = Policy(now=month_start(1), messages_before=month_start(0))
        caplog.set_level(logging.INFO, logger="hub.messages.months")
        gone, waited, _ = await asyncio.gather(
            erase_old(PoolDatabase(pool), policy, dry_run=False), a_send_meanwhile(), release()
        )
        took = time.perf_counter() - started
    finally:
        await pool.close()
        await sender.close()
        await holder.close()
    print(
        f"\nDDL behind a 1.2 s transaction: done in {took * 1000:.0f} ms; a send meanwhile"
        f" waited {waited * 1000:.0f} ms"
    )
    assert _last_month() in [g.what for g in gone if g.how == "partition dropped"]
    # It gave way to the holder (its lock wait ended) and went on a later try; the send that
    # came meanwhile got its lock (a wait of 1 s would have failed it).
    assert any("lock not granted" in r.getMessage() for r in caplog.records)
