"""Benchmark: a national month (issue 16, point 4): the whole tree and 30,000,000 messages.

    .venv/bin/python -m ops.bench.national_month [--messages 30000000] [--tenants all|51]
        [--repeat 3] [--delivery-messages 50000] [--send-recipients 100000]
        [--phase all|generate|measure] [--keep] [--dsn postgresql://…]

Three databases on one server: a template (`hub_national_tpl`: the tree of 3,210 tenants,
rate cards, every tenant's quota account for last month and this one), the EMPTY hub (a copy
of it) and the NATIONAL hub (a copy of it plus one month, last month, written by COPY, never
through the API):

- `--messages` messages in sends spread like real use: a tenant's share of the month is
  Pareto-distributed (a few provinces and prefectures send a lot, many counties little), most
  sends are small (a branch's meeting), some medium (a county's notice) and a few bulk (a
  province's); statuses 94 % delivered, 3 % undelivered, 2 % failed (no gateway took them),
  1 % expired (sent, no receipt); every sent message has its gateway reference and times.
- each send's quota reserved and settled by the hub's own SQL functions (`quota_reserve`,
  `quota_settle_parts`: used = segments a gateway took, the failed ones released), so the
  ledger is what the hub would have written and `hub audit quota` is clean;
- `usage_daily` rolled up from the messages (billable = segments a gateway took, by the day
  they went, Asia/Shanghai), as the rollup job leaves it.

Then, on the EMPTY hub and right after it on the NATIONAL one (same machine, same run, each
`--repeat` times, the median printed; the ratio is national / empty):

1. a send of `--send-recipients` distinct recipients through `hub serve`: POST → 202 (the
   send committed and its delivery enqueued);
2. outbox delivery (ops.bench.delivery_throughput, one `hub serve` and one `hub worker`):
   `--delivery-messages` segments, first POST to the last one delivered;
3. the dashboard overview page of the root (national) and of province 510000 for last month
   (ops.bench.dashboard_overview: the page through the app in process);
4. `GET /v1/usage?period=…&subtree=true` for the root, through the app in process;
5. last month's close (`close_period`, timed in a transaction rolled back, --repeat times, then
   once committed) and the root's XLSX statement export;
6. sizes: every messages partition, sends, the quota ledger, usage, billing lines, the database.

`--phase generate --keep` writes the three databases and stops; `--phase measure` measures
databases already written (so the month, which takes long, is generated once). Without --keep
the databases are dropped at the end. Without --dsn an embedded PostgreSQL is used.
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
import tempfile
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
from litestar.response import File
from redis.asyncio import Redis

from hub import calendar, queue
from hub.app import create_app
from hub.billing import exports
from hub.billing import service as billing
from hub.db import (
    PoolDatabase,
    create_database,
    create_pool,
    drop_database,
    migrate,
    with_database,
)
from hub.embedded import EmbeddedPostgres, EmbeddedValkey
from hub.messages import months
from hub.quota import service as quota
from hub.settings import load_settings
from ops.bench import delivery_throughput as delivery
from ops.bench import timed, wait_ready
from ops.bench.billing_close import add_cards
from ops.bench.dashboard_overview import measure as dashboard_measure
from ops.bench.dashboard_overview import open_accounts
from ops.bench.retention import copy_month, month_start
from ops.bench.send_million import PREFIXES
from tenants import service as tenants
from tenants.divisions import import_divisions
from tenants.scopes import ALL_SCOPES
from tests.peers.smsc import free_port

SENDER = "510104"  # the county that sends in the send and delivery measures
PROVINCE = "510000"
BODY = "本周五下午三点在区委四楼会议室召开组织工作例会，请准时参加。"
LIST_PRICE = 60_000
COLUMNS = (
    "id",
    "send_id",
    "tenant_id",
    "phone",
    "carrier",
    "status",
    "segments",
    "created_at",
    "updated_at",
    "gateway",
    "reference",
    "attempts",
    "submitted_at",
    "sent_at",
    "done_at",
    "error",
)
# 100 messages' statuses, cycled: 94 delivered, 3 undelivered, 2 failed, 1 expired.
STATUS_CYCLE = tuple(
    "undelivered"
    if i % 33 == 7
    else "failed"
    if i in (13, 61)
    else "expired"
    if i == 89
    else "delivered"
    for i in range(100)
)
BILLED = ("delivered", "undelivered", "expired")  # a gateway took them: billable segments
CARRIER_OF = {
    **dict.fromkeys(
        (
            *("134", "135", "136", "137", "138", "139", "150", "151", "152", "157", "158"),
            *("159", "182", "183", "187", "188", "198"),
        ),
        "中国移动",
    ),
    **dict.fromkeys(("130", "131", "132", "155", "156", "166", "185", "186"), "中国联通"),
    **dict.fromkeys(("133", "153", "177", "180", "181", "189", "191", "199"), "中国电信"),
    "192": "中国广电",
}


def _say(line: str = "") -> None:
    print(line, flush=True)


async def _step(label: str, work: Awaitable[object]) -> None:
    started = time.perf_counter()
    await work
    _say(f"  {label}: {time.perf_counter() - started:.1f} s")


# --- the template: tree, cards, accounts ------------------------------------------------


def names(prefix: str) -> tuple[str, str, str]:
    """The databases: the national hub, the empty hub, their template."""
    return prefix, f"{prefix}_empty", f"{prefix}_tpl"


async def seed_template(admin_dsn: str, name: str, province: str | None) -> str:
    """The tree (or one province's), rate cards, and every account of last month and this."""
    dsn = await create_database(admin_dsn, name)
    await asyncio.to_thread(migrate, dsn)
    this = calendar.current_period()
    last = (this - timedelta(days=1)).replace(day=1)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await _step("the tree", import_divisions(conn, province))
            await add_cards(conn, last)
            for month in (last, this):
                await _step(f"accounts of {month:%Y-%m}", open_accounts(conn, month))
    finally:
        await conn.close()
    return dsn


# --- the month ---------------------------------------------------------------------------


@dataclass
class Send:
    id: int
    tenant_id: int
    size: int
    segments_each: int
    at: datetime
    statuses: dict[str, int] = field(default_factory=dict)


def _send_sizes(budget: int, rng: random.Random) -> list[int]:
    """Sends adding up to `budget` messages: most small, some medium, a few bulk."""
    sizes: list[int] = []
    while budget > 0:
        pick = rng.random()
        if pick < 0.85:
            size = int(rng.lognormvariate(3.7, 0.9))  # a branch, a village: median 40
        elif pick < 0.99:
            size = rng.randint(500, 5_000)  # a county's notice
        else:
            size = rng.randint(5_000, 50_000)  # a province's bulk notice
        size = max(1, min(size, budget))
        sizes.append(size)
        budget -= size
    return sizes


def _shares(depths: dict[int, int], rng: random.Random) -> dict[int, float]:
    """Each tenant's share of the month: Pareto (capped), the root sending nothing."""
    factor = {0: 0.0, 1: 4.0, 2: 1.5}
    weights = {t: factor.get(d, 1.0) * min(rng.paretovariate(1.2), 60.0) for t, d in depths.items()}
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


def _moment(month: datetime, days: int, rng: random.Random) -> datetime:
    """A working moment of the month: a day, then 08:00-21:59 Shanghai, mornings busier."""
    hour = min(21, 8 + int(rng.expovariate(1 / 4)))
    return month + timedelta(
        days=rng.randrange(days), hours=hour, minutes=rng.randrange(60), seconds=rng.randrange(60)
    )


async def _write_sends(
    conn: asyncpg.Connection, index: int, messages: int, rng: random.Random
) -> list[Send]:
    """The month's sends (by COPY), their sizes adding up to `messages`."""
    start = month_start(index)
    days = (month_start(index + 1) - start).days
    depths = {r["id"]: r["depth"] for r in await conn.fetch("SELECT id, depth FROM tenants")}
    plan: list[tuple[int, int, datetime]] = []
    shares = _shares(depths, rng)
    left = messages
    for tenant_id, share in sorted(shares.items()):
        budget = min(left, round(messages * share))
        left -= budget
        plan += [(tenant_id, size, _moment(start, days, rng)) for size in _send_sizes(budget, rng)]
    if left:
        plan.append((max(shares, key=lambda t: shares[t]), left, _moment(start, days, rng)))
    plan.sort(key=lambda p: p[2])
    first = await conn.fetchval("SELECT coalesce(max(id), 0) + 1 FROM sends")
    floor = index * months.MONTH_SPAN
    sends = [
        Send(first + i, t, size, 2 if rng.random() < 0.2 else 1, at)
        for i, (t, size, at) in enumerate(plan)
    ]
    await conn.copy_records_to_table(
        "sends",
        records=[
            (
                *(s.id, s.tenant_id, "【组织部】", BODY, "ucs2", s.segments_each, "normal"),
                *(True, s.size, 0, "[]", s.size * s.segments_each, LIST_PRICE, "bench"),
                *(s.at, "done", s.at, floor),
            )
            for s in sends
        ],
        columns=(
            "id",
            "tenant_id",
            "signature",
            "body",
            "encoding",
            "segments_each",
            "priority",
            "dedup",
            "recipients",
            "repeats",
            "rejects",
            "segments",
            "list_price_micros",
            "actor",
            "created_at",
            "state",
            "due_at",
            "message_ids_from",
        ),
    )
    await conn.execute(
        "SELECT setval(pg_get_serial_sequence('sends', 'id'), (SELECT max(id) FROM sends))"
    )
    return sends


def _rows(first_id: int, sends: list[Send]) -> Iterator[tuple[object, ...]]:
    """Each send's messages: statuses cycled (STATUS_CYCLE), a gateway reference and times;
    counts each send's statuses as it goes."""
    n = 0
    second = timedelta(seconds=1)
    for s in sends:
        counts = dict.fromkeys(STATUS_CYCLE, 0)
        for block in range(0, s.size, 500):  # the gateway takes ~500 a second
            sent = s.at + (block // 500 + 1) * second
            done = sent + 5 * second
            for _ in range(min(500, s.size - block)):
                status = STATUS_CYCLE[n % 100]
                counts[status] += 1
                prefix = PREFIXES[n % len(PREFIXES)]
                id_ = first_id + n
                went = status != "failed"
                yield (
                    id_,
                    s.id,
                    s.tenant_id,
                    f"+86{prefix}{n * 7919 % 100_000_000:08d}",
                    CARRIER_OF[prefix],
                    status,
                    s.segments_each,
                    s.at,
                    done,
                    "outbox",
                    f"ob{id_:x}" if went else None,
                    1,
                    sent,
                    sent if went else None,
                    done,
                    None if status == "delivered" else status.upper()[:7],
                )
                n += 1
        s.statuses = counts


SETTLE = """
DO $$
DECLARE
    s record;
    res bigint;
    n int := 0;
BEGIN
    FOR s IN SELECT b.* FROM bench_settle b JOIN sends x ON x.id = b.send_id
             WHERE x.reservation_id IS NULL ORDER BY b.send_id LOOP
        SELECT r.reservation_id INTO res
        FROM quota_reserve(ARRAY[s.account_id], s.amount, s.tenant_id, s.period,
                           'send:' || s.send_id, 'bench', 86400) AS r;
        IF res IS NULL THEN
            RAISE EXCEPTION 'no room for send %', s.send_id;
        END IF;
        PERFORM quota_settle_parts(ARRAY[res], ARRAY[s.used], ARRAY[s.amount - s.used],
                                   'bench');
        UPDATE sends SET reservation_id = res WHERE id = s.send_id;
        -- Committed every 500 sends: in one transaction a busy tenant's account row would carry
        -- every version it had (a chain to walk at each update: quadratic).
        n := n + 1;
        IF n % 500 = 0 THEN
            COMMIT;
        END IF;
    END LOOP;
END $$
"""

ROLL_UP = """
INSERT INTO usage_daily (tenant_id, day, carrier, billable, dedup, delivered, undelivered)
SELECT tenant_id, (sent_at AT TIME ZONE 'Asia/Shanghai')::date, carrier,
       sum(segments) FILTER (WHERE status IN ('delivered', 'undelivered', 'expired')), 0,
       coalesce(sum(segments) FILTER (WHERE status = 'delivered'), 0),
       coalesce(sum(segments) FILTER (WHERE status = 'undelivered'), 0)
FROM {partition} WHERE sent_at IS NOT NULL
GROUP BY 1, 2, 3
"""


async def write_month(dsn: str, messages: int) -> None:
    """Last month: sends, messages by COPY, the quota ledger, the usage rollup."""
    rng = random.Random(16)
    index = months.month_index(calendar.now()) - 1
    partition = months.partition_name(index)
    period = month_start(index).date()
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        sends = await _write_sends(conn, index, messages, rng)
        _say(f"  {len(sends):,} sends: {time.perf_counter() - started:.1f} s")
        took = await copy_month(conn, index, _rows(index * months.MONTH_SPAN + 1, sends), COLUMNS)
        rate = messages / took
        _say(f"  COPY {messages:,} messages into {partition}: {took:.0f} s, {rate:,.0f}/s")
        await conn.execute(SETTLE_TABLE)
        accounts = {
            r["tenant_id"]: r["id"]
            for r in await conn.fetch(
                "SELECT tenant_id, id FROM quota_accounts WHERE period = $1", period
            )
        }
        await conn.copy_records_to_table(
            "bench_settle",
            records=[
                (
                    s.id,
                    s.tenant_id,
                    accounts[s.tenant_id],
                    period,
                    s.size * s.segments_each,
                    sum(s.statuses[b] for b in BILLED) * s.segments_each,
                )
                for s in sends
            ],
        )
        await _finish(conn, index)
    finally:
        await conn.close()


SETTLE_TABLE = """
CREATE TEMP TABLE bench_settle (send_id bigint, tenant_id bigint, account_id bigint,
                                period date, amount bigint, used bigint)
"""

# Each send's segments and those a gateway took, read back from the month (when the month's
# ledger is finished apart from its writing: --phase finish).
SETTLE_FROM_MONTH = """
INSERT INTO bench_settle
SELECT s.id, s.tenant_id, a.id, $1::date, s.segments, coalesce(u.used, 0)
FROM sends s
JOIN quota_accounts a ON a.tenant_id = s.tenant_id AND a.period = $1::date
LEFT JOIN (
    SELECT send_id,
           sum(segments) FILTER (WHERE status IN ('delivered', 'undelivered', 'expired')) AS used
    FROM {partition} GROUP BY send_id
) u ON u.send_id = s.id
WHERE s.message_ids_from = $2 AND s.reservation_id IS NULL
"""


async def finish_month(dsn: str) -> None:
    """The quota ledger and usage of a month whose messages are written (resumable)."""
    index = months.month_index(calendar.now()) - 1
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SETTLE_TABLE)
        await _step(
            "each send's use read back from the month",
            conn.execute(
                SETTLE_FROM_MONTH.format(partition=months.partition_name(index)),
                month_start(index).date(),
                index * months.MONTH_SPAN,
            ),
        )
        await _finish(conn, index)
    finally:
        await conn.close()


async def _finish(conn: asyncpg.Connection, index: int) -> None:
    """Each send's quota reserved and settled, usage rolled up, the ledger audited."""
    partition = months.partition_name(index)
    period = month_start(index).date()
    await _step(
        "quota reserved and settled per send (quota_reserve, quota_settle_parts)",
        conn.execute(SETTLE),
    )
    await _step("usage_daily rolled up", conn.execute(ROLL_UP.format(partition=partition)))
    await conn.execute("ANALYZE")
    checked, problems = await quota.audit(conn, period)
    _say(f"  quota audit of {period:%Y-%m}: {checked} accounts, {problems or 'clean'}")
    totals = await conn.fetchrow(
        "SELECT (SELECT sum(used) FROM quota_accounts WHERE period = $1),"
        " (SELECT sum(billable) FROM usage_daily WHERE day >= $1 AND day < $2)",
        period,
        month_start(index + 1).date(),
    )
    assert totals is not None
    _say(f"  segments used by quota {totals[0]:,}, billable by usage {totals[1]:,}")


async def generate(args: argparse.Namespace) -> None:
    national, empty, template = names(args.prefix)
    for name in (national, empty, template):
        await drop_database(args.dsn, name)
    _say(f"template {template}:")
    await seed_template(args.dsn, template, None if args.tenants == "all" else args.tenants)
    await create_database(args.dsn, empty, template=template)
    dsn = await create_database(args.dsn, national, template=template)
    _say(f"{national}: a month of {args.messages:,} messages")
    started = time.perf_counter()
    await write_month(dsn, args.messages)
    _say(f"  the month in all: {time.perf_counter() - started:.0f} s")


# --- measures ----------------------------------------------------------------------------


@dataclass
class Figures:
    """Named figures of one hub: seconds (lower is better) or rates (higher is better)."""

    seconds: dict[str, float] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    scans: list[str] = field(default_factory=list)  # big sequential scans, by step


async def _keys(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        out = {}
        for code in ("000000", SENDER):
            tenant = await tenants.get_by_code(conn, code)
            assert tenant is not None, code
            out[code] = (await tenants.create_key(conn, tenant, ALL_SCOPES, name="bench")).key
        return out
    finally:
        await conn.close()


async def _send(dsn: str, redis_dsn: str, key: str, recipients: int, number: int) -> float:
    """Seconds from POST to 202 of one send through `hub serve` (no worker); its phones and
    text new to the database (never deduplicated against an earlier run's)."""
    conn = await asyncpg.connect(dsn)
    try:
        number += 1000 * await conn.fetchval("SELECT coalesce(max(id), 0) FROM sends")
    finally:
        await conn.close()
    port = free_port()
    env = delivery.hub_env(dsn, redis_dsn, port, delivery.gateway_config("outbox", 0))
    phones = delivery.phones(recipients, seed=number)
    with delivery.hub_processes(env, ("serve",)):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=900) as client:
            await wait_ready(client)
            started = time.perf_counter()
            resp = await client.post(
                "/v1/messages",
                json={"to": phones, "body": f"{BODY}（第{number}次）"},
                headers={"Authorization": f"Bearer {key}"},
            )
            took = time.perf_counter() - started
    if resp.status_code != 202 or resp.json()["counts"]["accepted"] != recipients:
        raise RuntimeError(f"send not as planned: {resp.status_code} {resp.text[:300]}")
    return took


async def _in_app(dsn: str, redis_dsn: str, key: str, path: str, repeat: int) -> list[float]:
    """Seconds per GET of `path` with `key`, through the app in process."""
    settings = load_settings({"HUB_DB__DSN": dsn})
    pool = PoolDatabase(await create_pool(settings.db, dsn))
    redis = await queue.connect(redis_dsn)
    try:
        app = create_app(settings, db=pool, redis=redis)
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI typing differs
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def get() -> None:
                resp = await client.get(path, headers={"Authorization": f"Bearer {key}"})
                assert resp.status_code == 200, resp.text[:300]

            return await timed(repeat, get, warm=2)
    finally:
        await redis.aclose()
        await pool.close()


async def _close_and_export(dsn: str, key: str, month: date, repeat: int) -> dict[str, float]:
    """The month's close (`repeat` times rolled back, then once committed) and its XLSX."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    db = PoolDatabase(pool)
    now = calendar.now()
    try:
        closes = []
        for n in range(repeat + 1):
            async with db.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                started = time.perf_counter()
                summary = await billing.close_period(
                    conn, month, "bench", grace_days=0, default_list_price=LIST_PRICE, now=now
                )
                closes.append(time.perf_counter() - started)
                await (tx.commit() if n == repeat else tx.rollback())
        async with db.acquire() as conn:
            who = await tenants.authenticate(conn, key)
            assert who is not None
        xlsx, size = [], 0
        for _ in range(repeat):
            started = time.perf_counter()
            response = await exports.statement_export(db, who, month, "xlsx")
            xlsx.append(time.perf_counter() - started)
            assert isinstance(response, File)
            size = os.stat(response.file_path).st_size
            os.unlink(response.file_path)
    finally:
        await pool.close()
    return {
        "close": statistics.median(closes),
        "xlsx": statistics.median(xlsx),
        "lines": summary.lines,
        "xlsx_mb": size / 1e6,
    }


SIZES = """
SELECT c.relname, pg_total_relation_size(c.oid) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r'
  AND (c.relname LIKE 'messages\\_%' OR c.relname IN ('sends', 'quota_entries',
       'quota_reservations', 'quota_accounts', 'usage_daily', 'usage_entries',
       'billing_lines', 'tenants', 'outbox', 'dedup_keys'))
ORDER BY bytes DESC
"""


async def _sizes(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        out = {r["relname"]: r["bytes"] for r in await conn.fetch(SIZES)}
        out["(database)"] = await conn.fetchval("SELECT pg_database_size(current_database())")
        return out
    finally:
        await conn.close()


SCANS = """
SELECT relname, seq_scan, seq_tup_read FROM pg_stat_user_tables
WHERE relname LIKE 'messages\\_%' OR relname IN ('sends', 'quota_entries', 'quota_reservations')
"""


async def _scans(dsn: str) -> dict[str, tuple[int, int]]:
    """Sequential scans so far, and rows they read, per messages partition and big table."""
    conn = await asyncpg.connect(dsn)
    try:
        await asyncio.sleep(1.5)  # backends flush their counters at least once a second
        return {r["relname"]: (r["seq_scan"], r["seq_tup_read"]) for r in await conn.fetch(SCANS)}
    finally:
        await conn.close()


class ScanWatch:
    """Sequential scans of 10,000 rows or more of the big tables, step by step."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.last: dict[str, tuple[int, int]] = {}
        self.seen: list[str] = []

    async def mark(self, step: str = "") -> None:
        now = await _scans(self.dsn)
        for name, (count, rows) in now.items():
            before = self.last.get(name, (0, 0))
            if step and rows - before[1] >= 10_000:
                self.seen.append(
                    f"{step}: {name} {count - before[0]} scans, {rows - before[1]:,} rows"
                )
        self.last = now


async def _forget_keys(dsn: str) -> None:
    """The earlier runs' dedup keys (a run's random phones must not meet them: every recipient
    of a delivery run is to go), and their sends still queued (a send run has no worker): each
    run starts as the first did."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM dedup_keys")
        await conn.execute(
            "UPDATE messages SET status = 'cancelled' WHERE status = 'accepted'"
            " AND id >= hub_month_floor(hub_now())"
        )
        await conn.execute("UPDATE sends SET state = 'cancelled' WHERE state = 'queued'")
    finally:
        await conn.close()


async def measure_hub(args: argparse.Namespace, dsn: str, redis_dsn: str) -> Figures:
    f = Figures()
    watch = ScanWatch(dsn)
    await watch.mark()
    month = (calendar.current_period() - timedelta(days=1)).replace(day=1)
    keys = await _keys(dsn)
    for label, code in (("dashboard national", "000000"), ("dashboard province", PROVINCE)):
        _, page = await dashboard_measure(dsn, code, month, args.repeat)
        f.seconds[f"{label} page"] = statistics.median(page)
        await watch.mark(label)
    usage = await _in_app(
        dsn, redis_dsn, keys["000000"], f"/v1/usage?period={month:%Y-%m}&subtree=true", args.repeat
    )
    f.seconds["/v1/usage root (subtree)"] = statistics.median(usage)
    await watch.mark("/v1/usage")
    closed = await _close_and_export(dsn, keys["000000"], month, args.repeat)
    f.seconds[f"close {month:%Y-%m} ({closed['lines']:,.0f} lines)"] = closed["close"]
    f.seconds[f"XLSX export ({closed['xlsx_mb']:.1f} MB)"] = closed["xlsx"]
    await watch.mark("close and XLSX")
    ns = argparse.Namespace(
        outbox_messages=args.delivery_messages,
        smpp_messages=0,
        per_post=10_000,
        profile=None,
        timeline=None,
        pgdata=None,
    )
    rates = []
    for number in range(1, args.repeat + 1):
        redis = Redis.from_url(redis_dsn)
        await redis.flushdb()
        await redis.aclose()
        await _forget_keys(dsn)
        result = await delivery.run_on(ns, dsn, "outbox", number, keys[SENDER], redis_dsn)
        rates.append(result.delivered_rate)
        _say(f"    delivery run {number}: {result.delivered_rate:,.0f} segments/s")
        await watch.mark(f"delivery run {number}")
    f.rates["outbox delivery, segments/s"] = statistics.median(rates)
    sends = []
    for number in range(1, (args.send_repeat or args.repeat) + 1):
        await _forget_keys(dsn)
        sends.append(await _send(dsn, redis_dsn, keys[SENDER], args.send_recipients, number))
        _say(f"    send run {number}: {sends[-1]:.2f} s")
        await watch.mark(f"send run {number}")
    f.seconds[f"send to {args.send_recipients:,}"] = statistics.median(sends)
    f.sizes = await _sizes(dsn)
    f.scans = watch.seen
    for name, value in f.seconds.items():
        _say(f"    {name}: {value * 1000:,.0f} ms")
    return f


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def _report(empty: Figures, national: Figures) -> None:
    _say()
    _say(f"{'measure (median)':<40} {'empty':>10} {'national':>10} {'ratio':>7}")
    for name, e in empty.seconds.items():
        key = next(k for k in national.seconds if k.split(" (")[0] == name.split(" (")[0])
        n = national.seconds[key]
        flag = "" if n / e <= 1.5 else "  > 1.5x"
        _say(f"{key:<40} {e * 1000:>8.0f}ms {n * 1000:>8.0f}ms {n / e:>6.2f}x{flag}")
    for name, e in empty.rates.items():
        n = national.rates[name]
        flag = "" if e / n <= 1.5 else "  > 1.5x"
        _say(f"{name:<40} {e:>10,.0f} {n:>10,.0f} {e / n:>6.2f}x{flag}")
    _say()
    for label, figures in (("empty", empty), ("national", national)):
        _say(f"sequential scans of 10,000 rows or more, {label} hub: {len(figures.scans)}")
        for line in figures.scans:
            _say(f"  {line}")
    _say("sizes (pg_total_relation_size: table, indexes, TOAST)")
    for name, n in national.sizes.items():
        if max(n, empty.sizes.get(name, 0)) >= 2**20:
            _say(f"  {name:<28} empty {_mb(empty.sizes.get(name, 0)):>10}  national {_mb(n):>10}")


async def measure(args: argparse.Namespace, redis_dsn: str) -> None:
    national_db, empty_db, _ = names(args.prefix)
    empty_dsn = with_database(args.dsn, empty_db)
    national_dsn = with_database(args.dsn, national_db)
    conn = await asyncpg.connect(national_dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        messages = await conn.fetchval("SELECT coalesce(sum(recipients), 0) FROM sends")
    finally:
        await conn.close()
    _say(
        f"PostgreSQL {version}; {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.machine()}; national hub {messages:,} messages; median of {args.repeat}"
    )
    _say("EMPTY hub:")
    empty = await measure_hub(args, empty_dsn, redis_dsn)
    _say("NATIONAL hub:")
    national = await measure_hub(args, national_dsn, redis_dsn)
    _report(empty, national)


async def _run(args: argparse.Namespace, redis_dsn: str) -> int:
    try:
        if args.phase in ("all", "generate"):
            await generate(args)
        if args.phase == "finish":
            await finish_month(with_database(args.dsn, names(args.prefix)[0]))
        if args.phase in ("all", "measure"):
            await measure(args, redis_dsn)
    finally:
        if not args.keep:
            for name in names(args.prefix):
                await drop_database(args.dsn, name)
    return 0


def main() -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="an admin DSN; the benchmark creates its own databases")
    parser.add_argument("--messages", type=int, default=30_000_000)
    parser.add_argument(
        "--tenants", default="all", help="all, or one province's code (51: a smaller tree)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--delivery-messages", type=int, default=50_000)
    parser.add_argument("--send-recipients", type=int, default=100_000)
    parser.add_argument(
        "--send-repeat",
        type=int,
        help="send runs (default --repeat; each later one meets the"
        " earlier ones' sends still queued: no worker runs then)",
    )
    parser.add_argument("--phase", choices=["all", "generate", "finish", "measure"], default="all")
    parser.add_argument("--prefix", default="hub_national", help="the databases' names")
    parser.add_argument("--keep", action="store_true", help="keep the databases at the end")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        valkey = EmbeddedValkey(Path(tmp))
        pg = EmbeddedPostgres(Path(tmp)) if not args.dsn else None
        try:
            redis_dsn = valkey.start() if args.phase != "generate" else ""
            if pg is not None:
                args.dsn = with_database(pg.start(), "postgres")
            return asyncio.run(_run(args, redis_dsn))
        finally:
            if args.phase != "generate":
                valkey.stop()
            if pg is not None:
                pg.stop()


if __name__ == "__main__":
    sys.exit(main())
