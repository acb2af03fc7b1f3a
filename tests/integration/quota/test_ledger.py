"""The quota ledger through its service functions, on a real database."""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg
import pytest

from hub.calendar import period_of
from hub.errors import Conflict, Invalid
from hub.quota import service as quota
from hub.quota.schemas import Reservation
from hub.quota.service import QuotaExhausted
from tenants.repository import TenantRow
from tenants.service import get_by_code
from tests.factories import make_small_tree

NOV = date(2026, 11, 1)
DEC = date(2026, 12, 1)
TTL = 3600.0


async def _t(conn: asyncpg.Connection, code: str) -> TenantRow:
    tenant = await get_by_code(conn, code)
    assert tenant is not None
    return tenant


async def _limits(conn: asyncpg.Connection, spec: dict[str, tuple[int, str]]) -> None:
    """Set limits root first: {code: (limit, policy)}."""
    for code, (limit, policy) in spec.items():
        await quota.set_limit(conn, await _t(conn, code), NOV, "test", limit=limit, policy=policy)


async def _account(conn: asyncpg.Connection, code: str, period: date = NOV) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT a.* , a.policy::text AS policy_text FROM quota_accounts a "
        "JOIN tenants t ON t.id = a.tenant_id WHERE t.code = $1 AND a.period = $2",
        code,
        period,
    )
    assert row is not None, f"no account for {code}"
    return row


async def _reserve(conn: asyncpg.Connection, code: str, n: int) -> Reservation:
    return await quota.reserve(
        conn, await _t(conn, code), n, "test", "test", ttl_seconds=TTL, period=NOV
    )


async def _audit_clean(conn: asyncpg.Connection, period: date = NOV) -> None:
    _, problems = await quota.audit(conn, period)
    assert problems == []


@pytest.fixture
async def tree(conn: asyncpg.Connection) -> asyncpg.Connection:
    await make_small_tree(conn)
    return conn


async def test_all_strict_charges_only_the_sender(tree: asyncpg.Connection) -> None:
    conn = tree
    await _limits(
        conn,
        {
            "000000": (1000, "strict"),
            "510000": (500, "strict"),
            "510100": (200, "strict"),
            "510104": (50, "strict"),
        },
    )
    reservation = await _reserve(conn, "510104", 30)
    assert len(reservation.accounts) == 1
    assert (await _account(conn, "510104"))["reserved"] == 30
    assert (await _account(conn, "510100"))["reserved"] == 0
    assert (await _account(conn, "510100"))["allocated"] == 50
    await _audit_clean(conn)


async def test_pooled_ancestors_are_charged_too(tree: asyncpg.Connection) -> None:
    conn = tree
    await _limits(
        conn,
        {
            "000000": (1000, "pooled"),
            "510000": (500, "strict"),
            "510100": (200, "pooled"),
            "510104": (50, "strict"),
        },
    )
    reservation = await _reserve(conn, "510104", 30)
    charged = {
        r["code"]
        for r in await conn.fetch(
            "SELECT t.code FROM quota_accounts a JOIN tenants t ON t.id = a.tenant_id "
            "WHERE a.id = ANY($1)",
            reservation.accounts,
        )
    }
    assert charged == {"000000", "510100", "510104"}  # 510000 is strict: its grant covers 510100
    assert (await _account(conn, "510000"))["reserved"] == 0
    await _audit_clean(conn)


async def test_exhausted_names_the_level_and_reserves_nothing(tree: asyncpg.Connection) -> None:
    conn = tree
    await _limits(
        conn,
        {
            "000000": (1000, "pooled"),
            "510000": (60, "pooled"),
            "510100": (200, "pooled"),
            "510104": (100, "strict"),
        },
    )
    entries_before = await conn.fetchval("SELECT count(*) FROM quota_entries")
    with pytest.raises(QuotaExhausted) as caught:
        await _reserve(conn, "510104", 70)
    error = caught.value
    assert error.status_code == 429
    assert error.extra["tenant"] == "510000"
    assert (error.extra["limit"], error.extra["used"], error.extra["reserved"]) == (60, 0, 0)
    assert error.extra["requested"] == 70
    assert error.extra["period"] == "2026-11"
    assert await conn.fetchval("SELECT count(*) FROM quota_entries") == entries_before
    assert await conn.fetchval("SELECT count(*) FROM quota_reservations") == 0
    for code in ("000000", "510000", "510100", "510104"):
        assert (await _account(conn, code))["reserved"] == 0


async def test_strict_sum_breaking_grant_is_409_with_numbers(tree: asyncpg.Connection) -> None:
    conn = tree
    await _limits(
        conn,
        {
            "000000": (1000, "strict"),
            "510000": (500, "strict"),
            "510100": (300, "strict"),
            "510300": (150, "strict"),
        },
    )
    with pytest.raises(Conflict) as caught:
        await quota.set_limit(conn, await _t(conn, "510300"), NOV, "test", limit=201)
    extra = caught.value.extra
    assert (extra["tenant"], extra["limit"], extra["allocated"], extra["requested"]) == (
        "510000",
        500,
        450,
        51,
    )
    await quota.set_limit(conn, await _t(conn, "510300"), NOV, "test", limit=200)  # fits exactly
    assert (await _account(conn, "510000"))["allocated"] == 500
    await _audit_clean(conn)


async def test_strict_parent_keeps_its_grants_free(tree: asyncpg.Connection) -> None:
    conn = tree
    await _limits(
        conn, {"000000": (1000, "strict"), "510000": (500, "strict"), "510100": (400, "strict")}
    )
    await _reserve(conn, "510000", 100)  # exactly what is not granted
    with pytest.raises(QuotaExhausted) as caught:
        await _reserve(conn, "510000", 1)
    assert caught.value.extra["allocated"] == 400


async def test_pooled_children_may_be_oversubscribed_but_use_is_capped(
    tree: asyncpg.Connection,
) -> None:
    conn = tree
    await _limits(
        conn,
        {
            "000000": (1000, "strict"),
            "510000": (100, "pooled"),
            "510100": (80, "pooled"),
            "510300": (80, "strict"),
        },
    )
    assert (await _account(conn, "510000"))["allocated"] == 160  # oversubscribed: allowed
    await _reserve(conn, "510100", 70)
    with pytest.raises(QuotaExhausted) as caught:
        await _reserve(conn, "510300", 40)
    assert caught.value.extra["tenant"] == "510000"
    await _reserve(conn, "510300", 30)
    assert (await _account(conn, "510000"))["reserved"] == 100
    await _audit_clean(conn)


async def test_lowering_a_limit_below_what_is_held_is_409(tree: asyncpg.Connection) -> None:
    conn = tree
    await _limits(
        conn, {"000000": (1000, "strict"), "510000": (500, "strict"), "510100": (200, "strict")}
    )
    await _reserve(conn, "510100", 150)
    with pytest.raises(Conflict) as caught:
        await quota.set_limit(conn, await _t(conn, "510100"), NOV, "test", limit=149)
    assert caught.value.extra["reserved"] == 150
    with pytest.raises(Conflict):  # a strict parent cannot drop below what it granted
        await quota.set_limit(conn, await _t(conn, "510000"), NOV, "test", limit=199)
    await quota.set_limit(conn, await _t(conn, "510100"), NOV, "test", limit=150)
    assert (await _account(conn, "510000"))["allocated"] == 150


async def test_partial_post_releases_the_rest_exactly_once(tree: asyncpg.Connection) -> None:
    conn = tree
    await _limits(conn, {"000000": (1000, "pooled"), "510000": (500, "pooled")})
    reservation = await _reserve(conn, "510000", 40)
    assert await quota.post(conn, reservation.id, 25, "test")
    for code in ("000000", "510000"):
        account = await _account(conn, code)
        assert (account["used"], account["reserved"]) == (25, 0)
    assert not await quota.post(conn, reservation.id, 25, "test")
    assert not await quota.void(conn, reservation.id, "test")
    status = await conn.fetchval(
        "SELECT status FROM quota_reservations WHERE id = $1", reservation.id
    )
    assert status == "posted"
    await _audit_clean(conn)


async def test_posting_more_than_reserved_is_refused(tree: asyncpg.Connection) -> None:
    conn = tree
    await _limits(conn, {"000000": (1000, "strict")})
    reservation = await _reserve(conn, "000000", 10)
    with pytest.raises(Invalid):
        await quota.post(conn, reservation.id, 11, "test")


async def test_void_releases_everything(tree: asyncpg.Connection) -> None:
    conn = tree
    await _limits(conn, {"000000": (100, "strict")})
    reservation = await _reserve(conn, "000000", 100)
    assert await quota.void(conn, reservation.id, "test")
    assert (await _account(conn, "000000"))["reserved"] == 0
    await _reserve(conn, "000000", 100)
    await _audit_clean(conn)


async def test_expiry_voids_overdue_reservations_only(tree: asyncpg.Connection) -> None:
    conn = tree
    await _limits(conn, {"000000": (100, "pooled"), "510000": (100, "strict")})
    overdue = await _reserve(conn, "510000", 30)
    fresh = await _reserve(conn, "510000", 20)
    await conn.execute(
        "UPDATE quota_reservations SET expires_at = hub_now() - interval '1 second' WHERE id = $1",
        overdue.id,
    )
    assert await quota.expire_due(conn) == 1
    assert await quota.expire_due(conn) == 0
    statuses = {
        r["id"]: r["status"]
        for r in await conn.fetch("SELECT id, status::text FROM quota_reservations")
    }
    assert statuses == {overdue.id: "expired", fresh.id: "pending"}
    assert (await _account(conn, "510000"))["reserved"] == 20
    assert (await _account(conn, "000000"))["reserved"] == 20
    kinds = await conn.fetch("SELECT actor FROM quota_entries WHERE kind = 'expire'")
    assert {r["actor"] for r in kinds} == {"system:expiry"}
    await _audit_clean(conn)


def test_the_month_is_the_business_month_in_shanghai() -> None:
    # Midnight of 1 December in Asia/Shanghai is 16:00 UTC on 30 November.
    assert period_of(datetime(2026, 11, 30, 15, 59, 59, tzinfo=UTC)) == NOV
    assert period_of(datetime(2026, 11, 30, 16, 0, tzinfo=UTC)) == DEC


async def test_month_rollover_opens_from_defaults_and_settles_in_the_old_month(
    tree: asyncpg.Connection,
) -> None:
    conn = tree
    await _limits(conn, {"000000": (1000, "strict"), "510000": (300, "strict")})
    await quota.set_defaults(conn, await _t(conn, "000000"), 2000, "strict", "test")
    await quota.set_defaults(conn, await _t(conn, "510000"), 400, "pooled", "test")
    november = await _reserve(conn, "510000", 100)

    december = await quota.reserve(
        conn, await _t(conn, "510000"), 50, "test", "test", ttl_seconds=TTL, period=DEC
    )
    dec_account = await _account(conn, "510000", DEC)
    assert (dec_account["limit_segments"], dec_account["policy_text"]) == (400, "pooled")
    assert dec_account["reserved"] == 50
    assert (await _account(conn, "000000", DEC))["allocated"] == 400

    # A November send delivered in December is charged to November.
    assert await quota.post(conn, november.id, 100, "test")
    assert (await _account(conn, "510000"))["used"] == 100
    assert (await _account(conn, "510000", DEC))["used"] == 0
    assert december.period == DEC
    await _audit_clean(conn, NOV)
    await _audit_clean(conn, DEC)


async def test_lazy_open_under_strict_parent_grants_what_fits(tree: asyncpg.Connection) -> None:
    conn = tree
    await _limits(
        conn, {"000000": (1000, "strict"), "510000": (100, "strict"), "510100": (80, "strict")}
    )
    await quota.set_defaults(conn, await _t(conn, "510300"), 50, "strict", "test")
    await _reserve(conn, "510300", 5)  # opens 510300 with the 20 that fit, not 50
    assert (await _account(conn, "510300"))["limit_segments"] == 20
    assert (await _account(conn, "510000"))["allocated"] == 100
    await _audit_clean(conn)


async def test_a_tenant_with_nothing_granted_gets_429(tree: asyncpg.Connection) -> None:
    conn = tree
    with pytest.raises(QuotaExhausted) as caught:
        await _reserve(conn, "510104", 1)
    assert caught.value.extra["tenant"] == "510104"
    assert caught.value.extra["limit"] == 0


async def test_policy_may_tighten_but_not_loosen_once_open(tree: asyncpg.Connection) -> None:
    conn = tree
    await _limits(conn, {"000000": (1000, "pooled"), "510000": (500, "strict")})
    with pytest.raises(Conflict, match="only tighten"):
        await quota.set_limit(conn, await _t(conn, "510000"), NOV, "test", policy="pooled")
    await quota.set_limit(conn, await _t(conn, "000000"), NOV, "test", policy="strict")
    assert (await _account(conn, "000000"))["policy_text"] == "strict"
    await _audit_clean(conn)


async def test_thresholds_are_recorded_once_each(tree: asyncpg.Connection) -> None:
    conn = tree
    await _limits(conn, {"000000": (100, "strict")})
    await _reserve(conn, "000000", 79)
    assert await conn.fetchval("SELECT count(*) FROM quota_events") == 0
    await _reserve(conn, "000000", 1)
    await _reserve(conn, "000000", 5)
    await _reserve(conn, "000000", 15)
    events = await conn.fetch(
        "SELECT threshold, used + reserved AS held FROM quota_events ORDER BY threshold"
    )
    assert [(e["threshold"], e["held"]) for e in events] == [(80, 80), (100, 100)]


async def test_audit_finds_a_tampered_balance(tree: asyncpg.Connection) -> None:
    conn = tree
    await _limits(conn, {"000000": (100, "strict")})
    await _reserve(conn, "000000", 10)
    await _audit_clean(conn)
    await conn.execute("UPDATE quota_accounts SET used = used + 1")
    checked, problems = await quota.audit(conn, NOV)
    assert checked == 1
    assert any("entries rebuild" in p for p in problems)
    assert any("reservations say" in p for p in problems)
