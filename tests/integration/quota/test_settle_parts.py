"""A reservation settled in pieces (delivery chunks): used and released in part, then closed."""

from __future__ import annotations

import asyncpg

from hub import calendar
from hub.quota import service as quota
from tenants.service import get_by_code
from tests.factories import grant, make_small_tree


async def _balances(conn: asyncpg.Connection, code: str) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT a.used, a.reserved FROM quota_accounts a JOIN tenants t ON t.id = a.tenant_id"
        " WHERE t.code = $1",
        code,
    )
    assert row is not None
    return row["used"], row["reserved"]


async def test_pieces_use_and_release_until_nothing_is_left(conn: asyncpg.Connection) -> None:
    await make_small_tree(conn)
    await grant(conn, {"000000": 1_000})
    await grant(conn, {"510000": 500}, policy="pooled")
    await grant(conn, {"510100": 300, "510104": 100})
    county = await get_by_code(conn, "510104")
    assert county is not None
    reservation = await quota.reserve(conn, county, 10, "send:1", "t", ttl_seconds=3600)

    await quota.settle_parts(conn, {reservation.id: (3, 2)}, "system:delivery")
    assert await _balances(conn, "510104") == (3, 5)
    assert await _balances(conn, "510000") == (3, 5)  # pooled: charged alongside
    # More than is left is capped at what is left; the reservation is then settled.
    await quota.settle_parts(conn, {reservation.id: (9, 9)}, "system:delivery")
    row = await conn.fetchrow(
        "SELECT status::text, used_part, released_part, posted FROM quota_reservations"
    )
    assert row is not None
    assert dict(row) == {"status": "posted", "used_part": 8, "released_part": 2, "posted": 8}
    assert await _balances(conn, "510104") == (8, 0)
    # A settled reservation takes no more pieces.
    await quota.settle_parts(conn, {reservation.id: (1, 0)}, "system:delivery")
    assert await _balances(conn, "510104") == (8, 0)
    _, problems = await quota.audit(conn, calendar.current_period())
    assert problems == []


async def test_a_reservation_released_entirely_is_voided(conn: asyncpg.Connection) -> None:
    await make_small_tree(conn)
    await grant(conn, {"000000": 1_000, "510000": 500, "510100": 300, "510104": 100})
    county = await get_by_code(conn, "510104")
    assert county is not None
    reservation = await quota.reserve(conn, county, 4, "send:2", "t", ttl_seconds=3600)
    await quota.settle_parts(conn, {reservation.id: (0, 4)}, "system:delivery")
    status = await conn.fetchval("SELECT status::text FROM quota_reservations")
    assert status == "voided"
    assert await _balances(conn, "510104") == (0, 0)
    assert (await quota.audit(conn, calendar.current_period()))[1] == []
