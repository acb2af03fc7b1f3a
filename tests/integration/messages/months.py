"""Sends and messages written at chosen instants, for the partition and retention tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from hub import calendar
from tests.factories import hold_references


def month_start(months_after: int) -> datetime:
    """The first instant of the business month `months_after` months after the clock's."""
    now = calendar.now().astimezone(calendar.BUSINESS_TZ)
    index = now.year * 12 + now.month - 1 + months_after
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=calendar.BUSINESS_TZ)


async def at_instant(conn: asyncpg.Connection, at: datetime) -> str:
    """Shift hub_now() to `at` for the rest of this transaction; the shift it replaced."""
    before: str = await conn.fetchval("SELECT current_setting('hub.clock_offset', true)") or ""
    await conn.execute(
        "SELECT set_config('hub.clock_offset', ($1::timestamptz - now())::text, true)", at
    )
    return before


async def restore(conn: asyncpg.Connection, shift: str) -> None:
    await conn.execute("SELECT set_config('hub.clock_offset', $1, true)", shift)


async def send_at(
    conn: asyncpg.Connection,
    tenant_id: int,
    at: datetime,
    phones: Sequence[str],
    statuses: Sequence[str] = ("delivered",),
) -> int:
    """A send written at `at` (hub_now() shifted there) with a message to each phone, their
    statuses taken in turn from `statuses`; its id."""
    shift = await at_instant(conn, at)
    try:
        send_id: int = await conn.fetchval(
            "INSERT INTO sends (tenant_id, signature, body, encoding, segments_each, priority,"
            " dedup, recipients, repeats, rejects, segments, list_price_micros, actor)"
            " VALUES ($1, '锦江区', '通知', 'ucs2', 1, 'normal', true, $2::int, 0, '[]', $2::int,"
            "         0, 't')"
            " RETURNING id",
            tenant_id,
            len(phones),
        )
        written = await conn.fetch(
            "INSERT INTO messages (send_id, tenant_id, phone, carrier, status, segments, body,"
            " gateway, reference, sent_at)"
            " SELECT $1::bigint, $2::bigint, p, '中国移动', s::message_status, 2, '通知' || p,"
            "        'outbox',"
            "        'ref-' || $1::bigint::text || '-' || p, hub_now()"
            " FROM UNNEST($3::text[], $4::text[]) AS x(p, s)"
            " RETURNING id",
            send_id,
            tenant_id,
            list(phones),
            [statuses[i % len(statuses)] for i in range(len(phones))],
        )
        await hold_references(conn, *(r["id"] for r in written))
        # The default gateway's copies of them (its store is keyed by message id).
        await conn.execute(
            "INSERT INTO outbox (message_id, gateway, phone, sender, text, segments)"
            " SELECT id, 'outbox', phone, '106', body, segments FROM messages WHERE send_id = $1",
            send_id,
        )
    finally:
        await restore(conn, shift)
    return send_id
