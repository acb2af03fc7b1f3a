"""Billing fixtures: the small tree with October's usage, and an operator key."""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg
import pytest

from hub.billing import service as billing
from hub.billing.schemas import Band, CloseSummary, RateCardIn
from tests.factories import make_key, make_small_tree

OCTOBER = date(2026, 10, 1)


async def usage(conn: asyncpg.Connection, day: date, code: str, carrier: str, n: int) -> None:
    await conn.execute(
        "INSERT INTO usage_entries (tenant_id, day, carrier, kind, segments)"
        " SELECT id, $2, $3, 'billable', $4 FROM tenants WHERE code = $1",
        code,
        day,
        carrier,
        n,
    )


async def close(conn: asyncpg.Connection, month: date) -> CloseSummary:
    """Close `month` as if its grace window had passed."""
    return await billing.close_period(
        conn,
        month,
        "test",
        grace_days=3,
        default_list_price=60_000,
        now=datetime(2027, 6, 1, tzinfo=UTC),
    )


@pytest.fixture
async def operator(conn: asyncpg.Connection) -> str:
    await make_small_tree(conn)
    # 中国移动: 0.040 yuan for the hub's first 5 segments of a month, 0.030 beyond.
    card = RateCardIn(
        carrier="中国移动",
        valid_from=OCTOBER,
        mode="graduated",
        bands=[Band(0, 5, 40_000), Band(5, None, 30_000)],
    )
    await billing.add_card(conn, card, "test")
    for code, n in (("510104", 3), ("510105", 3), ("510300", 1)):
        await usage(conn, date(2026, 10, 15), code, "中国移动", n)
    await usage(conn, date(2026, 10, 31), "510104", "中国联通", 2)  # no card: list price
    return await make_key(conn, "000000")
