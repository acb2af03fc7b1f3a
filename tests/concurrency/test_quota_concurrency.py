"""Fifty real connections reserving at once across 四川省's 183 counties under tight limits.

Every level is tight: the root (pooled), the province (pooled, its prefectures oversubscribed),
prefectures (half strict with their counties' limits carved exactly, half pooled and
oversubscribed) and the counties. Afterwards: no deadlock surfaced, every level ran out at least
once, no account is over its limit, and the audit rebuilds every balance from the entries.

Run straight to PostgreSQL, and through a real PgBouncer in transaction pooling mode, where
the fifty clients share its ten server connections transaction by transaction; each without
and with leases (hub/quota/sql/lease.sql: sends under pooled ancestors draw from blocks of
their quota, while a sweeper keeps returning leases as if they had fallen due).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import date

import asyncpg
import pytest

from hub.db import pooled_options
from hub.quota import service as quota
from hub.quota.service import QuotaExhausted
from hub.settings import QuotaSettings
from tenants.divisions import import_divisions
from tenants.repository import TenantRow
from tenants.service import get_by_code
from tests.conftest import HubDb
from tests.peers.pgbouncer import POOL_SIZE

pytestmark = [pytest.mark.concurrency, pytest.mark.slow]

NOV = date(2026, 11, 1)
# Leases need a month not over yet (one of a month gone would be due at once).
LATER = date(2031, 11, 1)
LEASES = QuotaSettings(lease_block=20, lease_ttl_seconds=3600.0)
CLIENTS = 50
OPERATIONS = 120


async def _setup(dsn: str, month: date) -> dict[int, list[TenantRow]]:
    """Import 四川省 and set tight limits; returns tenants by depth."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await import_divisions(conn, "51")
            codes = [r["code"] for r in await conn.fetch("SELECT code FROM tenants ORDER BY path")]
            tenants = [t for t in [await get_by_code(conn, c) for c in codes] if t is not None]
            by_code = {t.code: t for t in tenants}

            async def grant(code: str, limit: int, policy: str) -> None:
                tenant = by_code[code]
                await quota.set_limit(conn, tenant, month, "setup", limit=limit, policy=policy)

            await grant("000000", 11_000, "pooled")
            await grant("510000", 10_000, "pooled")
            prefectures = [t for t in tenants if t.depth == 2]
            for i, prefecture in enumerate(prefectures):
                policy = "strict" if i % 2 == 0 else "pooled"
                await grant(prefecture.code, 800, policy)
                counties = [t for t in tenants if t.parent_code == prefecture.code]
                for county in counties:
                    share = 800 // len(counties) if policy == "strict" else 300
                    await grant(county.code, share, "strict")
    finally:
        await conn.close()
    levels: dict[int, list[TenantRow]] = {}
    for tenant in tenants:
        levels.setdefault(tenant.depth, []).append(tenant)
    return levels


async def _client(
    db: HubDb,
    levels: dict[int, list[TenantRow]],
    seed: int,
    outcomes: Counter[str],
    leases: QuotaSettings | None,
) -> None:
    rng = random.Random(seed)
    conn = await asyncpg.connect(db.dsn, **(pooled_options() if db.pooler != "none" else {}))
    try:
        for _ in range(OPERATIONS):
            depth = rng.choices([0, 1, 2, 3], weights=[5, 5, 10, 80])[0]
            tenant = rng.choice(levels[depth])
            try:
                async with conn.transaction():
                    reservation = await quota.reserve(
                        conn,
                        tenant,
                        rng.randint(1, 15),
                        "load",
                        "test",
                        ttl_seconds=3600,
                        period=LATER if leases else NOV,
                        leases=leases,
                    )
            except QuotaExhausted as exc:
                outcomes[f"exhausted_depth_{_depth(exc, levels)}"] += 1
                continue
            except asyncpg.DeadlockDetectedError:
                outcomes["deadlock"] += 1
                continue
            outcomes["reserved"] += 1
            fate = rng.random()
            async with conn.transaction():
                if fate < 0.3:
                    await quota.void(conn, reservation.id, "test")
                elif fate < 0.7:
                    await quota.post(
                        conn, reservation.id, rng.randint(0, reservation.amount), "test"
                    )
    finally:
        await conn.close()


async def _sweeper(db: HubDb, done: asyncio.Event, outcomes: Counter[str]) -> None:
    """Every active lease falls due and is returned, again and again, while the clients run."""
    conn = await asyncpg.connect(db.dsn, **(pooled_options() if db.pooler != "none" else {}))
    try:
        while not done.is_set():
            async with conn.transaction():
                await conn.execute(
                    "UPDATE quota_leases SET expires_at = hub_now() WHERE status = 'active'"
                )
            async with conn.transaction():
                outcomes["returned"] += await quota.return_due_leases(conn)
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


def _depth(exc: QuotaExhausted, levels: dict[int, list[TenantRow]]) -> int:
    code = exc.extra["tenant"]
    return next(d for d, tenants in levels.items() if any(t.code == code for t in tenants))


@pytest.mark.parametrize("leases", [None, LEASES], ids=["chain", "leases"])
@pytest.mark.parametrize("hub_db", ["direct", "pgbouncer"], indirect=True)
async def test_fifty_connections_never_overspend_or_deadlock(
    fresh_db: str, hub_db: HubDb, leases: QuotaSettings | None
) -> None:
    month = LATER if leases else NOV
    levels = await _setup(fresh_db, month)
    assert len(levels[3]) >= 100
    outcomes: Counter[str] = Counter()
    done = asyncio.Event()
    sweeper = asyncio.create_task(_sweeper(hub_db, done, outcomes))
    await asyncio.gather(
        *(_client(hub_db, levels, seed, outcomes, leases) for seed in range(CLIENTS))
    )
    done.set()
    await sweeper
    if hub_db.peer is not None:
        # The fifty clients were served by PgBouncer's few server connections.
        pools = await hub_db.peer.admin("SHOW POOLS")
        (pool,) = [p for p in pools if p["database"] == hub_db.dsn.rsplit("/", 1)[1]]
        assert int(pool["sv_idle"] or 0) + int(pool["sv_used"] or 0) <= POOL_SIZE
        stats = await hub_db.peer.admin("SHOW STATS")
        (used,) = [s for s in stats if s["database"] == pool["database"]]
        assert int(used["total_xact_count"] or 0) >= outcomes["reserved"]

    assert outcomes["deadlock"] == 0
    assert outcomes["reserved"] > 1000
    for depth in (0, 1, 2, 3):
        assert outcomes[f"exhausted_depth_{depth}"] > 0, f"level {depth} never ran out: {outcomes}"

    conn = await asyncpg.connect(fresh_db)
    try:
        over = await conn.fetchval(
            "SELECT count(*) FROM quota_accounts WHERE used + reserved > limit_segments "
            "OR (policy = 'strict' AND used + reserved + allocated > limit_segments)"
        )
        assert over == 0
        checked, problems = await quota.audit(conn, month)
        leased = await conn.fetchval("SELECT count(*) FROM quota_reservations WHERE lease_id > 0")
    finally:
        await conn.close()
    assert checked == 206  # the root and all 205 tenants of 四川省
    assert problems == []
    if leases:  # sends drew from leases, and leases went back while they did
        assert leased > 500
        assert outcomes["returned"] > 0
    else:
        assert leased == 0
