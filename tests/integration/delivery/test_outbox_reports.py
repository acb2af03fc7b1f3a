"""The outbox reports a chunk's receipts once its worker has recorded the chunk: told so by the
worker (`Gateway.recorded`), without asking PostgreSQL; asked, only when no word came (its
record failed or is slow)."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from arq.connections import ArqRedis

from hub.delivery import repository as delivery_sql
from hub.delivery.gateway import Outbound
from hub.delivery.gateways import outbox
from hub.settings import Settings
from tests.factories import bearer, hold_references
from tests.integration.delivery.conftest import audit_clean, started_delivery, statuses

PHONES = [f"1390014{n:04d}" for n in range(5)]


async def _send(client: httpx.AsyncClient, key: str, body: str) -> int:
    resp = await client.post("/v1/messages", json={"to": PHONES, "body": body}, headers=bearer(key))
    assert resp.status_code == 202, resp.text
    return int(resp.json()["id"])


async def test_a_batch_is_reported_on_its_workers_word_without_asking_postgres(
    client: httpx.AsyncClient,
    live_db: asyncpg.Connection,
    live_settings: Settings,
    redis: ArqRedis,
    county_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Neither a poll nor the deadline could report within the test: only the worker's word.
    monkeypatch.setattr(outbox, "POLL_SECONDS", 3600.0)
    monkeypatch.setattr(outbox, "RECORD_WAIT_SECONDS", 7200.0)
    send_id = await _send(client, county_key, "记录即回执")
    batch = await live_db.fetchrow(
        "SELECT carrier, min(id) AS first, max(id) AS last FROM messages WHERE send_id = $1"
        " GROUP BY carrier",
        send_id,
    )
    assert batch is not None
    async with started_delivery(live_settings, redis) as worker:
        claimed = await worker.deliver_batch(
            send_id, batch["carrier"], batch["first"], batch["last"]
        )
        assert claimed == len(PHONES)
    assert await statuses(live_db, send_id) == {"delivered": len(PHONES)}
    assert await live_db.fetchval("SELECT count(*) FROM unmatched_receipts") == 0
    assert await live_db.fetchval("SELECT count(*) FROM outbox_pending") == 0
    assert await audit_clean(live_db) == []


async def test_without_word_the_outbox_asks_until_the_chunk_is_recorded(
    client: httpx.AsyncClient,
    live_db: asyncpg.Connection,
    live_settings: Settings,
    redis: ArqRedis,
    county_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Submitted by a worker whose record never says so (here: the test records the chunk by
    hand): the outbox asks, reports nothing while the chunk is still `sending`, and reports
    once it is `sent`."""
    monkeypatch.setattr(outbox, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(outbox, "RECORD_WAIT_SECONDS", 7200.0)
    send_id = await _send(client, county_key, "无人告知")
    rows = await live_db.fetch(
        "UPDATE messages SET status = 'sending', gateway = 'outbox', attempts = 1,"
        " submitted_at = hub_now() WHERE send_id = $1 RETURNING id, phone, segments",
        send_id,
    )
    outbound = [
        Outbound(r["id"], r["phone"], "无人告知", r["segments"], "ucs2", "10690000") for r in rows
    ]
    async with started_delivery(live_settings, redis) as worker:
        await worker.gateways["outbox"].submit(outbound)
        # Asked again and again, it keeps the receipts while the chunk is `sending`.
        for _ in range(5):
            await asyncio.sleep(0.05)
            assert await statuses(live_db, send_id) == {"sending": len(PHONES)}
        sent = await live_db.fetch(
            "UPDATE messages SET status = 'sent', reference = 'outbox-' || id,"
            " sent_at = hub_now() WHERE send_id = $1 RETURNING id",
            send_id,
        )
        await hold_references(live_db, *(r["id"] for r in sent))
    assert await statuses(live_db, send_id) == {"delivered": len(PHONES)}
    assert await live_db.fetchval("SELECT count(*) FROM unmatched_receipts") == 0


async def test_a_message_handed_over_again_queues_its_receipt_again(
    live_db: asyncpg.Connection,
) -> None:
    """The outbox keeps its first copy of a message, but a retry's hand-over queues the receipt
    again: one reported while the message waited to go again is reported once more."""
    first = ([7], ["outbox"], ["+8613900000001"], ["10690000"], ["通知"], [1])
    await live_db.execute(delivery_sql.OUTBOX_INSERT, *first)
    await live_db.execute("DELETE FROM outbox_pending")  # reported meanwhile
    again = ([7], ["outbox"], ["+8613900000001"], ["10690000"], ["通知，再发"], [1])
    await live_db.execute(delivery_sql.OUTBOX_INSERT, *again)
    await live_db.execute(delivery_sql.OUTBOX_INSERT, *again)  # and a third time: one row
    pending = await live_db.fetch("SELECT message_id, gateway FROM outbox_pending")
    assert [tuple(r) for r in pending] == [(7, "outbox")]
    assert await live_db.fetchval("SELECT text FROM outbox WHERE message_id = 7") == "通知"
