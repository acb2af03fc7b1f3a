"""Dashboard fixtures: the small tree with quota and a month of usage, and signed-in clients."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import asyncpg
import httpx
import msgspec
import pytest

from hub.calendar import current_period
from hub.settings import Settings
from tenants.scopes import Scope
from tests.factories import grant, make_key, make_small_tree

ORIGIN = "http://hub.test"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """These pages' tests sign in with keys of every tenant, as before people had accounts
    (`key_sign_in = "any"`, deprecated); tests/integration/users signs people in."""
    dashboard = msgspec.structs.replace(settings.dashboard, key_sign_in="any")
    return msgspec.structs.replace(settings, dashboard=dashboard)


SAME_ORIGIN = {"Origin": ORIGIN}


async def add_usage(
    conn: asyncpg.Connection,
    code: str,
    day: date,
    carrier: str,
    billable: int,
    dedup: int = 0,
    delivered: int = 0,
    undelivered: int = 0,
) -> None:
    """One rollup row (the daily job's output) for a tenant, day and carrier."""
    tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE code = $1", code)
    await conn.execute(
        "INSERT INTO usage_daily (tenant_id, day, carrier, billable, dedup, delivered, undelivered)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        tenant_id,
        day,
        carrier,
        billable,
        dedup,
        delivered,
        undelivered,
    )


@dataclass(frozen=True)
class Seeded:
    period: date
    province_key: str  # 510000: dashboard:read + quota:write + billing:read + messages:read
    reader_key: str  # 510000: dashboard:read only
    api_key: str  # 510000: every scope (to ask the JSON API)
    no_dashboard_key: str  # 510000: everything but dashboard:read


async def seed(conn: asyncpg.Connection) -> Seeded:
    """四川省 with two cities and three counties, limits for this month, and usage on its days:
    锦江区 (510104) near its limit (an 80 % alert), 青羊区 over 100 % of its own."""
    period = current_period()
    await make_small_tree(conn)
    await grant(
        conn,
        {
            "000000": 1_000_000,
            "510000": 100_000,
            "510100": 20_000,
            "510300": 5_000,
            "510104": 1_000,
            "510105": 500,
        },
        period,
    )
    # Usage (billing's rollup) on three days of the month.
    d1, d2, d3 = period, period + timedelta(days=1), period + timedelta(days=9)
    await add_usage(conn, "510000", d1, "中国移动", 40, dedup=2, delivered=38, undelivered=2)
    await add_usage(conn, "510104", d1, "中国移动", 300, dedup=10, delivered=290, undelivered=10)
    await add_usage(conn, "510104", d2, "中国联通", 120, delivered=100, undelivered=20)
    await add_usage(conn, "510105", d3, "中国电信", 75, dedup=5, delivered=75)
    await add_usage(conn, "510104001", d2, "中国移动", 9, delivered=9)
    await add_usage(conn, "510300", d3, "中国移动", 50, delivered=40, undelivered=10)
    await add_usage(conn, "520000", d1, "中国移动", 999, delivered=999)  # another province
    # Quota use (the ledger): 锦江区 850 of 1,000 posted, 青羊区 500 of 500 posted.
    await _use(conn, "510104", period, 850)
    await _use(conn, "510105", period, 500)
    scopes = frozenset(
        {Scope.DASHBOARD_READ, Scope.QUOTA_WRITE, Scope.BILLING_READ, Scope.MESSAGES_READ}
    )
    return Seeded(
        period=period,
        province_key=await make_key(conn, "510000", scopes),
        reader_key=await make_key(conn, "510000", frozenset({Scope.DASHBOARD_READ})),
        api_key=await make_key(conn, "510000"),
        no_dashboard_key=await make_key(
            conn, "510000", frozenset(s for s in Scope if s != Scope.DASHBOARD_READ)
        ),
    )


async def _use(conn: asyncpg.Connection, code: str, period: date, segments: int) -> None:
    from hub.quota import service as quota
    from tenants.service import get_by_code

    tenant = await get_by_code(conn, code)
    assert tenant is not None
    reservation = await quota.reserve(
        conn, tenant, segments, "test", "test", ttl_seconds=3600, period=period
    )
    await quota.post(conn, reservation.id, segments, "test")


@pytest.fixture
async def seeded(conn: asyncpg.Connection) -> Seeded:
    return await seed(conn)


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.post("/dashboard/login", data={"key": key}, headers=SAME_ORIGIN)


@pytest.fixture
async def signed_in(client: httpx.AsyncClient, seeded: Seeded) -> httpx.AsyncClient:
    response = await sign_in(client, seeded.province_key)
    assert response.status_code == 303, response.text
    return client
