"""Benchmark: retention of one month of messages (issue 15: 20,000,000 of them).

    .venv/bin/python -m ops.bench.retention [--messages 20000000] [--per-send 10000]
        [--slice 200000] [--dsn postgresql://…]

In a database of its own (created, migrated, dropped at the end): the partition of a month
eight months back gets `--messages` messages by COPY, in sends of `--per-send` (the sends by
INSERT), and the month after it a `--slice` of messages of one tenant. Then, on the hub's own
code over a real pool:

1. `erase_old` with the period ending at the start of the month after: the month's sends get
   their summaries (a batch of 500 sends per transaction), its partition is detached and
   dropped; the time of each part is printed;
2. `erase_old` with the period ending there but the tenant's own ending after the slice's month:
   the slice's phones and bodies are erased in batches of 5,000 per transaction; rows per second.

Printed: each step's time, the COPY's rate (the raw baseline of the same run), the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

import asyncpg

from hub import calendar
from hub.db import PoolDatabase, create_database, drop_database, migrate
from hub.messages import months, retention
from hub.retention.schemas import Policy
from ops.bench import run_on_postgres
from tenants import service as tenants

DATABASE = "hub_bench_retention"
COLUMNS = (
    "id",
    "send_id",
    "tenant_id",
    "phone",
    "carrier",
    "status",
    "segments",
    "body",
    "created_at",
    "updated_at",
)
STATUSES = ("delivered", "delivered", "delivered", "undelivered", "failed")


def _say(text: str) -> None:
    print(text, flush=True)


def month_start(index: int) -> datetime:
    """The first instant of month `index` (months since 2000-01) in the business zone."""
    return datetime(2000 + index // 12, index % 12 + 1, 1, tzinfo=calendar.BUSINESS_TZ)


async def _sends(
    conn: asyncpg.Connection, tenant_id: int, at: datetime, count: int, per_send: int
) -> list[int]:
    rows = await conn.fetch(
        "INSERT INTO sends (tenant_id, signature, body, encoding, segments_each, priority, dedup,"
        " recipients, repeats, rejects, segments, list_price_micros, actor, created_at,"
        " message_ids_from)"
        " SELECT $1, '基准', '通知', 'ucs2', 1, 'normal', true, $2::int, 0, '[]', $2::int, 0,"
        "        'bench', $3::timestamptz, hub_month_floor($3)"
        " FROM generate_series(1, $4) RETURNING id",
        tenant_id,
        per_send,
        at,
        count,
    )
    return sorted(r["id"] for r in rows)


def _rows(
    first_id: int, sends: list[int], tenant_id: int, per_send: int, at: datetime
) -> Iterator[tuple[object, ...]]:
    n = 0
    for send_id in sends:
        for k in range(per_send):
            phone = f"+86138{n % 100_000_000:08d}"
            yield (
                first_id + n,
                send_id,
                tenant_id,
                phone,
                "中国移动",
                STATUSES[k % len(STATUSES)],
                1,
                "本周五下午三点在区委四楼会议室召开组织工作例会，请准时参加。",
                at,
                at,
            )
            n += 1


async def _fill(
    conn: asyncpg.Connection, index: int, tenant_id: int, messages: int, per_send: int
) -> float:
    """A month's partition with `messages` messages by COPY; the COPY's rows per second."""
    at = month_start(index).replace(day=10, hour=9)
    sends = await _sends(conn, tenant_id, at, messages // per_send, per_send)
    rows = _rows(index * months.MONTH_SPAN + 1, sends, tenant_id, per_send, at)
    took = await copy_month(conn, index, rows, COLUMNS)
    return len(sends) * per_send / took


async def copy_month(
    conn: asyncpg.Connection,
    index: int,
    rows: Iterable[tuple[object, ...]],
    columns: Sequence[str],
) -> float:
    """COPY `rows` into month `index`'s partition (made if missing), then ANALYZE it; the
    COPY's seconds. Ids must lie in the month's range (index * MONTH_SPAN onwards)."""
    await conn.fetch("SELECT hub_message_partitions($1, 0)", month_start(index).replace(day=10))
    started = time.perf_counter()
    await conn.copy_records_to_table(months.partition_name(index), records=rows, columns=columns)
    took = time.perf_counter() - started
    await conn.execute(f"ANALYZE {months.partition_name(index)}")
    return took


async def _main(args: argparse.Namespace) -> int:
    _say(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    dsn = await create_database(args.dsn, DATABASE)
    try:
        await asyncio.to_thread(migrate, dsn)
        conn = await asyncpg.connect(dsn)
        try:
            _say(f"PostgreSQL {await conn.fetchval('SHOW server_version')}")
            tenant_id = (await tenants.ensure_root(conn)).id
            old = months.month_index(calendar.now()) - 8
            rate = await _fill(conn, old, tenant_id, args.messages, args.per_send)
            _say(
                f"COPY {args.messages:,} messages into {months.partition_name(old)}: {rate:,.0f}/s"
            )
            await _fill(conn, old + 1, tenant_id, args.slice, args.per_send)
            size = await conn.fetchval(
                "SELECT pg_size_pretty(pg_total_relation_size($1::regclass))",
                months.partition_name(old),
            )
            _say(f"the month's partition with its indexes: {size}")
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            db = PoolDatabase(pool)
            cut = month_start(old + 1)
            started = time.perf_counter()
            part = retention._Partition(months.partition_name(old), old * months.MONTH_SPAN, 0)
            part.hi = part.lo + months.MONTH_SPAN
            await retention._summarize(db, part)
            summaries = time.perf_counter() - started
            policy = Policy(now=month_start(old + 8), messages_before=cut)
            gone = await retention.erase_old(db, policy, dry_run=False)
            total = time.perf_counter() - started
            _say(
                f"erase_old, one month of {args.messages:,}: {total:.2f} s"
                f" (summaries of {args.messages // args.per_send:,} sends {summaries:.2f} s,"
                f" detach + drop and the rest {total - summaries:.2f} s); {gone}"
            )
            shorter = Policy(
                now=month_start(old + 8),
                messages_before=cut,
                tenants_before={tenant_id: month_start(old + 2)},
            )
            started = time.perf_counter()
            gone = await retention.erase_old(db, shorter, dry_run=False)
            took = time.perf_counter() - started
            erased = sum(g.rows for g in gone if g.how == "phones and bodies erased")
            _say(
                f"tenant's shorter period: {erased:,} phones and bodies erased in {took:.2f} s"
                f" = {erased / took:,.0f} rows/s; {gone}"
            )
        finally:
            await pool.close()
    finally:
        await drop_database(args.dsn, DATABASE)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="an admin DSN; the benchmark creates its own database")
    parser.add_argument("--messages", type=int, default=20_000_000)
    parser.add_argument("--per-send", type=int, default=10_000)
    parser.add_argument("--slice", type=int, default=200_000)
    args = parser.parse_args()
    return run_on_postgres(args, _main)


if __name__ == "__main__":
    sys.exit(main())
