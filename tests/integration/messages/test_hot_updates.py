"""A message's claim, its `sent` and its receipt rewrite it in place (HOT): no index names a
column they change (the gateway's reference is looked up in `message_references`, migration
0050), and every month's partition leaves room on its pages for the new versions (migration
0047; docs/BENCHMARKS.md, issue 17 point 4)."""

from __future__ import annotations

import asyncpg

from hub.db import SingleConnectionDatabase
from hub.delivery import repository as delivery_sql
from hub.messages import months
from tests.factories import make_small_tree
from tests.integration.messages.months import month_start, send_at

PHONE = "+8613800000001"


async def _hot_updates(conn: asyncpg.Connection, partition: str) -> int:
    """HOT updates of `partition` in this transaction so far (counted as they happen)."""
    n: int = await conn.fetchval(
        "SELECT pg_stat_get_xact_tuples_hot_updated($1::regclass)", partition
    )
    return n


async def test_a_claim_its_sent_and_its_receipt_rewrite_the_message_in_place(
    conn: asyncpg.Connection,
) -> None:
    await months.make_ahead(SingleConnectionDatabase(conn), month_start(0), 0)
    await make_small_tree(conn)
    tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    send_id = await send_at(conn, tenant_id, month_start(0).replace(day=10), [PHONE], ("accepted",))
    message_id = await conn.fetchval("SELECT id FROM messages WHERE send_id = $1", send_id)
    part = months.partition_name(months.month_index(month_start(0)))
    bounds = delivery_sql.bounds([message_id])
    async with conn.transaction():
        before = await _hot_updates(conn, part)
        claimed = await conn.fetch(
            delivery_sql.CLAIM,
            send_id,
            "中国移动",
            message_id,
            message_id,
            "smpp-a",
            30.0,
            100,
            False,
        )
        assert [r["id"] for r in claimed] == [message_id]
        assert await _hot_updates(conn, part) == before + 1, "the claim was not HOT"

        sent = await conn.fetch(
            delivery_sql.RECORD_SENT,
            [message_id],
            ["ref-9"],
            [claimed[0]["attempts"]],
            [""],
            [0],
            *bounds,
        )
        assert [(r["id"], r["reference"]) for r in sent] == [(message_id, "ref-9")]
        assert await _hot_updates(conn, part) == before + 2, "recording `sent` was not HOT"
        held = await conn.fetch("SELECT gateway, reference FROM message_references")
        assert [tuple(r) for r in held] == [("smpp-a", "ref-9")]
        applied = await conn.fetch(
            delivery_sql.APPLY_RECEIPTS, "smpp-a", ["ref-9"], ["delivered"], ["DELIVRD"], 3600.0
        )
        assert [r["id"] for r in applied] == [message_id]
        assert await _hot_updates(conn, part) == before + 3, "the receipt was not HOT"


async def test_a_copy_relies_on_its_original_until_it_is_done(conn: asyncpg.Connection) -> None:
    """`relies_on` is the one definition of "relying": a deduplicated copy not done yet names
    its original; once done, or for any other message, it is NULL."""
    await months.make_ahead(SingleConnectionDatabase(conn), month_start(0), 0)
    await make_small_tree(conn)
    tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    at = month_start(0).replace(day=10)
    original = await conn.fetchval(
        "SELECT id FROM messages WHERE send_id = $1",
        await send_at(conn, tenant_id, at, [PHONE], ("sent",)),
    )
    copy_send = await send_at(conn, tenant_id, at, [PHONE], ("accepted",))
    copy = await conn.fetchval(
        "UPDATE messages SET status = 'deduplicated', duplicate_of = $2, duplicate_tenant_id = $3"
        " WHERE send_id = $1 RETURNING id",
        copy_send,
        original,
        tenant_id,
    )
    relies = "SELECT id, relies_on FROM messages WHERE id = ANY($1::bigint[]) ORDER BY id"
    assert [tuple(r) for r in await conn.fetch(relies, [original, copy])] == [
        (original, None),
        (copy, original),
    ]
    await conn.execute("UPDATE messages SET done_at = now() WHERE id = $1", copy)
    assert await conn.fetchval("SELECT relies_on FROM messages WHERE id = $1", copy) is None


async def test_every_month_keeps_room_on_its_pages(conn: asyncpg.Connection) -> None:
    """The partitions there are and those made later (a month moved out of the DEFAULT one
    too) keep 15 % of each page free, and compute `relies_on` themselves."""
    await make_small_tree(conn)
    tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    # A month with no partition yet: its message waits in the DEFAULT partition until made.
    await send_at(conn, tenant_id, month_start(5).replace(day=3), [PHONE], ("accepted",))
    made = await months.make_ahead(SingleConnectionDatabase(conn), month_start(5), 0)
    assert made == [months.partition_name(months.month_index(month_start(5)))]
    rows = await conn.fetch(
        "SELECT c.relname, c.reloptions,"
        "       (SELECT attgenerated::text FROM pg_attribute"
        "        WHERE attrelid = c.oid AND attname = 'relies_on') AS generated"
        " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'messages'::regclass"
    )
    assert made[0] in {r["relname"] for r in rows}
    for r in rows:
        assert r["reloptions"] == ["fillfactor=85"], r["relname"]
        assert r["generated"] == "s", r["relname"]
    moved = await conn.fetchrow(
        "SELECT tableoid::regclass::text AS part, relies_on FROM messages WHERE phone = $1", PHONE
    )
    assert moved is not None
    assert moved["part"] == made[0]
    assert moved["relies_on"] is None
