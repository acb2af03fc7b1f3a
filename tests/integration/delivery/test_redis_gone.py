"""Servers and workers gone mid-delivery. Redis gone: the API still takes a send (it is in
PostgreSQL), and it goes out once Redis is back (the sweeper enqueues it; a real Valkey of the
test's own, stopped and started again on its port). A worker gone before its outbox's receipts
were recorded: they are reported again."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis

from hub import queue
from hub.db import PoolDatabase, create_pool
from hub.delivery import service
from hub.delivery.gateway import Outbound
from hub.delivery.gateways.outbox import OutboxGateway
from hub.embedded import EmbeddedValkey
from hub.settings import Settings
from tests.factories import bearer
from tests.integration.delivery.conftest import (
    RunWorker,
    audit_clean,
    live_client,
    started_delivery,
    statuses,
    sweep_once,
)

PHONES = [f"1390013{n:04d}" for n in range(30)]


@pytest.fixture
def own_valkey() -> Iterator[EmbeddedValkey]:
    with tempfile.TemporaryDirectory(prefix="hub-test-gone-vk-") as tmp:
        server = EmbeddedValkey(Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


async def test_a_send_while_redis_is_down_is_taken_and_goes_out_when_it_is_back(
    live_db: asyncpg.Connection,
    live_settings: Settings,
    county_key: str,
    own_valkey: EmbeddedValkey,
    run_worker: RunWorker,
) -> None:
    dsn = f"redis://127.0.0.1:{own_valkey.port}/0"
    settings = msgspec.structs.replace(
        live_settings, redis=msgspec.structs.replace(live_settings.redis, dsn=dsn)
    )
    redis = await queue.connect(dsn)
    try:
        async for client in live_client(settings, redis):
            assert await redis.ping()
            own_valkey.stop()
            resp = await client.post(
                "/v1/messages",
                json={"to": PHONES, "body": "停电也要通知"},
                headers=bearer(county_key),
            )
            assert resp.status_code == 202, resp.text
            send_id = resp.json()["id"]
            assert resp.json()["counts"]["accepted"] == len(PHONES)
        assert await statuses(live_db, send_id) == {"accepted": len(PHONES)}

        own_valkey.restart()
        assert (await sweep_once(settings, redis))["enqueued"] >= 1
        await run_worker(settings)
    finally:
        await redis.aclose()
    assert await statuses(live_db, send_id) == {"delivered": len(PHONES)}
    sent = await live_db.fetch(
        "SELECT message_id, count(*) AS n FROM outbox GROUP BY message_id HAVING count(*) > 1"
    )
    assert sent == []
    assert await live_db.fetchval("SELECT count(*) FROM outbox") == len(PHONES)
    assert await audit_clean(live_db) == []


async def test_a_send_while_redis_hangs_is_answered_and_goes_out_later(
    live_db: asyncpg.Connection,
    live_settings: Settings,
    county_key: str,
    own_valkey: EmbeddedValkey,
    run_worker: RunWorker,
) -> None:
    """Redis hung (its process stopped, its connections open): the send is answered all the
    same, its batches left to the sweeper, and it goes out once Redis answers again."""
    dsn = f"redis://127.0.0.1:{own_valkey.port}/0"
    settings = msgspec.structs.replace(
        live_settings,
        redis=msgspec.structs.replace(live_settings.redis, dsn=dsn),
        delivery=msgspec.structs.replace(live_settings.delivery, enqueue_timeout_seconds=0.5),
    )
    redis = await queue.connect(dsn)
    pid = own_valkey.pid
    assert pid is not None
    try:
        async for client in live_client(settings, redis):
            assert await redis.ping()
            os.kill(pid, signal.SIGSTOP)
            try:
                # A bound on waiting, not a speed: unbounded, the answer never comes.
                resp = await asyncio.wait_for(
                    client.post(
                        "/v1/messages",
                        json={"to": PHONES, "body": "卡住也要通知"},
                        headers=bearer(county_key),
                    ),
                    timeout=120,
                )
            finally:
                os.kill(pid, signal.SIGCONT)
            assert resp.status_code == 202, resp.text
            send_id = resp.json()["id"]
        assert await statuses(live_db, send_id) == {"accepted": len(PHONES)}
        assert (await sweep_once(settings, redis))["enqueued"] >= 1
        await run_worker(settings)
    finally:
        await redis.aclose()
    assert await statuses(live_db, send_id) == {"delivered": len(PHONES)}
    assert await audit_clean(live_db) == []


async def test_receipts_lost_with_their_worker_are_reported_again(
    client: httpx.AsyncClient,
    live_db: asyncpg.Connection,
    live_settings: Settings,
    redis: ArqRedis,
    county_key: str,
) -> None:
    """A worker hands a batch to the outbox and dies before the outbox's receipts are recorded
    (here: a Delivery never started, so its outbox has nowhere to report). The next worker's
    outbox reports them, and a message closed as "outcome unknown" that the outbox holds gets
    its receipt too, and so does one whose outbox copy went (its phone erased)."""
    resp = await client.post(
        "/v1/messages", json={"to": PHONES[:10], "body": "回执不丢"}, headers=bearer(county_key)
    )
    send_id = resp.json()["id"]
    assert live_settings.db.dsn
    db = PoolDatabase(await create_pool(live_settings.db, live_settings.db.dsn))
    try:
        batch = await live_db.fetchrow(
            "SELECT carrier, min(id) AS first, max(id) AS last FROM messages"
            " WHERE send_id = $1 GROUP BY carrier",
            send_id,
        )
        assert batch is not None
        dying = service.Delivery(live_settings, db, redis)  # its gateways never started
        assert await dying.deliver_batch(send_id, batch["carrier"], batch["first"], batch["last"])
        await dying.close()
        assert await statuses(live_db, send_id) == {"sent": 10}
        # One of them as the sweeper leaves a message whose worker died mid-submit.
        unknown = batch["first"]
        await live_db.execute(
            "UPDATE messages SET reference = NULL, error = 'outcome unknown' WHERE id = $1",
            unknown,
        )
        # And the outbox's copy of another went meanwhile (its phone erased): still reported.
        await live_db.execute("DELETE FROM outbox WHERE message_id = $1", batch["last"])
        assert await live_db.fetchval("SELECT count(*) FROM outbox_pending") == 10

        next_worker = service.Delivery(live_settings, db, redis)
        await next_worker.start()
        try:
            outbox = next_worker.gateways["outbox"]
            assert isinstance(outbox, OutboxGateway)
            assert await outbox.report_again(older_than=0) == 10
            assert await outbox.report_again(older_than=0) == 0  # recorded: not again
        finally:
            await next_worker.close()
    finally:
        await db.close()
    assert await statuses(live_db, send_id) == {"delivered": 10}
    assert await live_db.fetchval("SELECT count(*) FROM outbox_pending") == 0
    assert await audit_clean(live_db) == []


async def test_receipts_of_a_chunk_closed_as_unknown_while_it_was_handed_over_still_match(
    client: httpx.AsyncClient,
    live_db: asyncpg.Connection,
    live_settings: Settings,
    redis: ArqRedis,
    county_key: str,
) -> None:
    """A live worker's chunk outlived its lease: the sweeper closed its messages as sent with
    "outcome unknown" and no reference while the outbox still took them. The receipts the
    outbox then reports at once give those messages their reference first, so they end
    delivered, not unmatched."""
    resp = await client.post(
        "/v1/messages", json={"to": PHONES[:5], "body": "租约过期"}, headers=bearer(county_key)
    )
    send_id = resp.json()["id"]
    rows = await live_db.fetch(
        "SELECT id, phone, segments FROM messages WHERE send_id = $1", send_id
    )
    # As the sweeper leaves a chunk whose lease ran out mid-submit.
    await live_db.execute(
        "UPDATE messages SET status = 'sent', reference = NULL, error = 'outcome unknown',"
        " gateway = 'outbox', sent_at = hub_now() WHERE send_id = $1",
        send_id,
    )
    async with started_delivery(live_settings, redis) as worker:  # closing waits for the report
        outbox = worker.gateways["outbox"]
        assert isinstance(outbox, OutboxGateway)
        outbound = [
            Outbound(r["id"], r["phone"], "租约过期", r["segments"], "ucs2", "10690000")
            for r in rows
        ]
        await outbox.submit(outbound)
    assert await statuses(live_db, send_id) == {"delivered": 5}
    assert await live_db.fetchval("SELECT count(*) FROM unmatched_receipts") == 0
