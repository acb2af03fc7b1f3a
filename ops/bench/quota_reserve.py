"""Benchmark: quota reservations per second at 50 concurrent clients.

    .venv/bin/python -m ops.bench.quota_reserve [--dsn postgresql://…] [--clients 50] [--seconds 5]

Measures, in one run on one server, each for --seconds, --repeat times (the median is reported):
  bare      UPDATE counter SET n = n + 1 on one row, autocommit (the raw baseline)
  spread    reserve 1 segment for a random county of any province (2,845 counties)
  hot       reserve 1 segment for a random county of 四川省 (183 counties, one province)
under three policy layouts, one month each (see POLICIES): every level `strict` (the default:
a reservation locks the county's row only); every level above the county `pooled` (it locks
county, prefecture, province and root: the hot chain the design note warns about); and only the
province `pooled`. A reservation runs in BEGIN … COMMIT as a send would, or as one autocommit
statement (then the chain's row locks are released inside the server). The "leases" scenarios
reserve as a send does by default (hub/quota/sql/lease.sql: a county under pooled ancestors
draws from a block of --lease-block segments it leased of their quota, so the chain is locked
once per block); the others reserve on the chain directly, as before leases.

Without --dsn it starts an embedded PostgreSQL in a temporary folder and removes it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import date

import asyncpg

from hub.db import create_database, migrate, with_database
from hub.quota import service as quota
from hub.settings import QuotaSettings
from ops.bench import run_on_postgres
from tenants.divisions import import_divisions
from tenants.repository import TenantRow
from tenants.service import get_by_code

STRICT, POOLED, MIXED = date(2026, 11, 1), date(2026, 12, 1), date(2027, 1, 1)
# Per month, each level's policy (by depth: root, province, prefecture, county).
POLICIES = {
    STRICT: ("strict", "strict", "strict", "strict"),
    POOLED: ("pooled", "pooled", "pooled", "strict"),
    # What a province that pools its counties' quota would choose: only the province is charged
    # beside the county, so only a province's own subtree shares a hot row.
    MIXED: ("strict", "pooled", "strict", "strict"),
}
# (HUB_BENCH_DATABASE names another, when benchmarks share a server)
BENCH_DB = "hub_bench"
TOP = 10**12


def _say(line: str) -> None:
    print(line, flush=True)


async def _prepare(admin_dsn: str) -> str:
    dsn = await create_database(admin_dsn, os.environ.get("HUB_BENCH_DATABASE", BENCH_DB))
    await asyncio.to_thread(migrate, dsn)
    return dsn


async def _grant_everything(conn: asyncpg.Connection) -> list[TenantRow]:
    """Import every province; open both months for every tenant with room to spare."""
    started = time.monotonic()
    await import_divisions(conn)
    codes = [r["code"] for r in await conn.fetch("SELECT code FROM tenants ORDER BY path")]
    tenants = [t for t in [await get_by_code(conn, c) for c in codes] if t is not None]
    for period, policies in POLICIES.items():
        for i, tenant in enumerate(tenants):
            limit = TOP // (64**tenant.depth)
            policy = policies[min(tenant.depth, 3)]
            await quota.set_limit(conn, tenant, period, "bench", limit=limit, policy=policy)
            if i % 1600 == 0:
                _say(f"  {period:%Y-%m}: {i}/{len(tenants)} accounts open")
    _say(
        f"set up {len(tenants)} tenants x {len(POLICIES)} months "
        f"in {time.monotonic() - started:.1f}s"
    )
    return [t for t in tenants if t.level == "county"]


async def _run_clients(
    dsn: str,
    clients: int,
    seconds: float,
    op: Callable[[asyncpg.Connection, random.Random], Awaitable[None]],
) -> float:
    conns = [await asyncpg.connect(dsn) for _ in range(clients)]
    stop = time.monotonic() + seconds
    counts = [0] * clients

    async def client(i: int) -> None:
        rng = random.Random(i)
        while time.monotonic() < stop:
            await op(conns[i], rng)
            counts[i] += 1

    started = time.monotonic()
    try:
        await asyncio.gather(*(client(i) for i in range(clients)))
    finally:
        elapsed = time.monotonic() - started
        for conn in conns:
            await conn.close()
    return sum(counts) / elapsed


def _reserving(
    counties: list[TenantRow],
    period: date,
    *,
    own_transaction: bool = True,
    leases: QuotaSettings | None = None,
) -> Callable[..., Awaitable[None]]:
    """A reservation for a random county: inside BEGIN … COMMIT (as a send's transaction), or
    as its own statement (autocommit: the chain's locks are released inside the server);
    drawn from leases with `leases`."""

    async def op(conn: asyncpg.Connection, rng: random.Random) -> None:
        county = rng.choice(counties)
        reserve = quota.reserve(
            conn, county, 1, "b", "b", ttl_seconds=3600, period=period, leases=leases
        )
        if own_transaction:
            async with conn.transaction():
                await reserve
        else:
            await reserve

    return op


async def _bare(conn: asyncpg.Connection, _: random.Random) -> None:
    await conn.execute("UPDATE bench_counter SET n = n + 1 WHERE id = 1")


async def _reused(admin_dsn: str) -> tuple[str, list[TenantRow], str]:
    dsn = with_database(admin_dsn, os.environ.get("HUB_BENCH_DATABASE", BENCH_DB))
    conn = await asyncpg.connect(dsn)
    try:
        codes = [r["code"] for r in await conn.fetch("SELECT code FROM tenants ORDER BY path")]
        tenants = [t for t in [await get_by_code(conn, c) for c in codes] if t is not None]
        version = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    return dsn, [t for t in tenants if t.level == "county"], version


async def _main(args: argparse.Namespace) -> int:
    if args.reuse:
        dsn, counties, version = await _reused(args.dsn)
        return await _measure(dsn, args, counties, version)
    dsn = await _prepare(args.dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE bench_counter (id int PRIMARY KEY, n bigint NOT NULL)")
        await conn.execute("INSERT INTO bench_counter VALUES (1, 0)")
        async with conn.transaction():
            counties = await _grant_everything(conn)
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return await _measure(dsn, args, counties, str(version))


async def _measure(
    dsn: str, args: argparse.Namespace, counties: list[TenantRow], version: str
) -> int:
    sichuan = [c for c in counties if c.code.startswith("51")]
    leases = QuotaSettings(lease_block=args.lease_block)
    scenarios: list[tuple[str, Callable[..., Awaitable[None]]]] = [
        ("bare single-row UPDATE", _bare),
        ("strict · spread over 31 provinces", _reserving(counties, STRICT)),
        ("strict · one province (hot chain)", _reserving(sichuan, STRICT)),
        ("pooled · spread over 31 provinces", _reserving(counties, POOLED)),
        ("pooled · one province (hot chain)", _reserving(sichuan, POOLED)),
        ("province pooled · one province", _reserving(sichuan, MIXED)),
        ("strict · hot chain, autocommit", _reserving(sichuan, STRICT, own_transaction=False)),
        ("pooled · hot chain, autocommit", _reserving(sichuan, POOLED, own_transaction=False)),
        ("province pooled · autocommit", _reserving(sichuan, MIXED, own_transaction=False)),
        ("pooled · spread · leases", _reserving(counties, POOLED, leases=leases)),
        ("pooled · hot chain · leases", _reserving(sichuan, POOLED, leases=leases)),
        ("province pooled · hot · leases", _reserving(sichuan, MIXED, leases=leases)),
        (
            "pooled · hot chain · leases, autocommit",
            _reserving(sichuan, POOLED, own_transaction=False, leases=leases),
        ),
    ]
    if args.sql:
        conn = await asyncpg.connect(dsn)
        for statement in args.sql:
            await conn.execute(statement)
        await conn.close()
    chosen = [(n, op) for n, op in scenarios if not args.only or args.only in n or "bare" in n]
    if args.paired:
        return await _paired(dsn, args, chosen[1:], str(version))
    rates: dict[str, float] = {}
    for name, op in chosen:
        runs = [await _run_clients(dsn, args.clients, args.seconds, op) for _ in range(args.repeat)]
        rates[name] = statistics.median(runs)
        _say(f"  {name:<40} {rates[name]:>8,.0f}/s  (runs: {', '.join(f'{r:,.0f}' for r in runs)})")
    bare = rates["bare single-row UPDATE"]
    _say("")
    _say(
        f"PostgreSQL {version}, {args.clients} clients, {args.seconds:g}s x {args.repeat}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    _say(f"{'scenario':<40} {'per second':>12} {'x bare':>8}")
    for name, rate in rates.items():
        _say(f"{name:<40} {rate:>12,.0f} {rate / bare:>8.2f}")
    return 0


async def _paired(
    dsn: str,
    args: argparse.Namespace,
    scenarios: list[tuple[str, Callable[..., Awaitable[None]]]],
    version: str,
) -> int:
    """Each run of a scenario right after a run of the bare UPDATE, its ratio to that one: on a
    machine others load too, a baseline measured minutes apart says little."""
    table: list[tuple[str, float, float, float]] = []
    for name, op in scenarios:
        pairs = []
        for _ in range(args.repeat):
            bare = await _run_clients(dsn, args.clients, args.seconds, _bare)
            rate = await _run_clients(dsn, args.clients, args.seconds, op)
            pairs.append((bare, rate))
        ratios = [rate / bare for bare, rate in pairs]
        row = (
            name,
            statistics.median(r for _, r in pairs),
            statistics.median(b for b, _ in pairs),
            statistics.median(ratios),
        )
        table.append(row)
        runs = ", ".join(f"{r:,.0f}/{b:,.0f}" for b, r in pairs)
        _say(f"  {name:<40} {row[1]:>8,.0f}/s  x bare {row[3]:.2f}  (runs/bare: {runs})")
    _say("")
    _say(
        f"PostgreSQL {version}, {args.clients} clients, {args.seconds:g}s x {args.repeat} paired "
        f"with the bare UPDATE, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    _say(f"{'scenario':<40} {'per second':>12} {'bare':>8} {'x bare':>8}")
    for name, rate, bare, ratio in table:
        _say(f"{name:<40} {rate:>12,.0f} {bare:>8,.0f} {ratio:>8.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="an admin DSN; the benchmark creates its own database")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", help="run only scenarios whose name contains this")
    parser.add_argument(
        "--paired",
        action="store_true",
        help="run the bare UPDATE before each run of each scenario; report median ratios",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="use the database a previous run left (no import, no grants)",
    )
    parser.add_argument(
        "--lease-block",
        type=int,
        default=QuotaSettings().lease_block,
        help="segments per lease in the leases scenarios (HUB_QUOTA__LEASE_BLOCK's default)",
    )
    parser.add_argument(
        "--sql", action="append", default=[], help="extra SQL run before (experiments)"
    )
    args = parser.parse_args()
    return run_on_postgres(args, _main)


if __name__ == "__main__":
    sys.exit(main())
