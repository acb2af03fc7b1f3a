"""Benchmark: every console page for a county with 100,000 contacts and a year of 2,000 sends.

    .venv/bin/python -m ops.bench.console_pages [--dsn postgresql://…] [--redis redis://…]
        [--contacts 100000] [--sends 2000] [--repeat 20] [--only sends] [--reuse]
        [--database hub_bench_console]

Issue 14's measure: the server's time for each page under /dashboard ≤ 300 ms (median and p95).
The data (ops/bench/console_seed.py): province 51's tree around the county 510104 锦江区, the
county's roster and a year of its sends with their messages, replies, follow-ups, templates,
signatures, users, keys, quota, usage, closed months and operation log, and a smaller roster
and year for every other county of the province and every unit below 锦江区.

A real `hub serve` process (uvicorn, one worker) on a loopback port, a real PostgreSQL and
Redis: the servers of --dsn / --redis (default: HUB_TEST_DB__DSN / HUB_TEST_REDIS__DSN), else an
embedded PostgreSQL and Valkey in a temporary folder. Two people sign in through the console as
a browser does (login, password, then the SMS code, read from the code's send as the tests'
`last_code` reads it): `bench.county`, every role in 锦江区, and `bench.operator`, every role at
the root, for the pages an operator opens. Each page is fetched `--repeat` times after two
warm-ups (exports `--export-repeat` times), timed from the request to the last byte of the
answer over the loopback connection; printed: median, p95, and the ratio of the median to a raw
baseline from the same run — the page's main rows read with one plain asyncpg query on an open
connection (e.g. `SELECT … FROM contacts WHERE tenant_id = $1 ORDER BY id LIMIT 50`), what no
page can beat.

The database (`hub_bench_console`, or --database) is dropped afterwards; `--reuse` keeps it
between runs on the same server and only migrates it when it was seeded at the same scale.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx

from hub import calendar
from hub.db import create_database, drop_database, migrate, with_database
from hub.embedded import EmbeddedPostgres, EmbeddedValkey
from hub.settings import UsersSettings
from hub.users.service import CODE_ACTOR
from ops.bench import console_seed as data
from ops.bench import timed, wait_ready
from ops.bench.console_seed import COUNTY, PROVINCE, Scale, Seeded

BENCH_DB = "hub_bench_console"
GOAL_MS = 300.0


def _say(line: str = "") -> None:
    print(line, flush=True)


# --- the servers -------------------------------------------------------------------------


def start_serve(dsn: str, redis_dsn: str, port: int) -> Any:
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_DB__DSN=dsn,
        HUB_REDIS__DSN=redis_dsn,
        HUB_HTTP__PORT=str(port),
        HUB_LOG_LEVEL="WARNING",
        # Every run signs the same two people in: no daily cap on their codes.
        HUB_USERS__CODE_GAP_SECONDS="0",
        HUB_USERS__CODES_PER_HOUR="1000",
        HUB_USERS__CODES_PER_PHONE_DAY="1000",
    )
    return subprocess.Popen([str(Path(sys.executable).parent / "hub"), "serve"], env=env)


# --- signing in --------------------------------------------------------------------------


async def _last_code(conn: asyncpg.Connection, phone: str) -> str:
    body = await conn.fetchval(
        "SELECT m.body FROM sends s JOIN messages m ON m.send_id = s.id "
        "WHERE s.actor = $1 AND m.phone = $2 ORDER BY s.id DESC LIMIT 1",
        CODE_ACTOR,
        phone,
    )
    found = re.search(r"验证码：(\d{6})", body or "")
    assert found is not None, f"no code was sent to {phone}"
    return found[1]


async def sign_in(
    client: httpx.AsyncClient, conn: asyncpg.Connection, login: str, phone: str
) -> None:
    """As a browser: the login form, then the SMS code page with the code the phone got."""
    origin = {"Origin": str(client.base_url).rstrip("/")}
    form = {"login": login, "password": data.PASSWORD}
    answer = await client.post("/dashboard/login", data=form, headers=origin)
    assert answer.status_code == 303, answer.text[:300]
    assert answer.headers["location"].startswith("/dashboard/code"), answer.headers["location"]
    code = await _last_code(conn, phone)
    answer = await client.post("/dashboard/code", data={"code": code}, headers=origin)
    assert answer.status_code == 303, answer.text[:300]
    assert (await client.get("/dashboard/sessions")).status_code == 200


# --- the pages ---------------------------------------------------------------------------


@dataclass
class Page:
    name: str
    path: str
    who: str  # county | operator | anonymous (signed out) | owing (its SMS code not entered)
    baseline: str  # the raw query for the page's main rows
    args: tuple[Any, ...] = ()
    export: bool = False


# Raw baselines: one plain query each, for the rows the page is about.
B_USAGE = """SELECT day, sum(billable) FROM usage_daily
             WHERE tenant_id = $1 AND day >= $2 GROUP BY day"""
B_SUBTREE_USAGE = """SELECT day, sum(billable)
                     FROM usage_daily u JOIN tenants t ON t.id = u.tenant_id
                     WHERE t.path LIKE $1 AND day >= $2 GROUP BY day"""
B_RECENT = """SELECT id, body, state, recipients, created_at FROM sends WHERE tenant_id = $1
              ORDER BY id DESC LIMIT 20"""
B_TAGS = "SELECT tag, count(*) FROM contacts, unnest(tags) tag WHERE tenant_id = $1 GROUP BY tag"
B_SENDS = """SELECT id, body, state, recipients, created_at FROM sends WHERE tenant_id = $1
             ORDER BY id DESC LIMIT 50"""
B_ALL_SENDS = """SELECT id, body, state, recipients, created_at FROM sends
                 ORDER BY id DESC LIMIT 50"""
B_MESSAGES = """SELECT id, phone, status, error FROM messages WHERE send_id = $1 AND id > $2
                ORDER BY id LIMIT 100"""
B_CONTACTS = """SELECT id, phone, name, tags, fields FROM contacts WHERE tenant_id = $1
                AND id > $2 ORDER BY id LIMIT 50"""
B_TAGGED = """SELECT id, phone, name, tags, fields FROM contacts WHERE tenant_id = $1
              AND tags @> ARRAY[$2] ORDER BY id LIMIT 50"""
B_CONTACT = "SELECT * FROM contacts WHERE id = $1"
B_TEMPLATES = "SELECT * FROM templates WHERE tenant_id = $1 ORDER BY id"
B_SIGNATURES = "SELECT * FROM signatures WHERE tenant_id = $1 ORDER BY id DESC LIMIT 50"
B_PENDING = "SELECT * FROM templates WHERE status = 'pending' ORDER BY id"
B_CHILDREN = "SELECT * FROM tenants WHERE parent_id = $1 ORDER BY code"
B_KEYS = "SELECT * FROM api_keys WHERE tenant_id = $1 ORDER BY created_at"
B_WEBHOOK = "SELECT url, updated_at FROM webhooks WHERE tenant_id = $1"
B_USERS = "SELECT * FROM users WHERE tenant_id = $1 ORDER BY id"
B_SESSIONS = "SELECT * FROM dashboard_sessions WHERE user_id = $1 ORDER BY id DESC"
B_INVITE = """SELECT u.login, u.display_name FROM user_invites i JOIN users u ON u.id = i.user_id
              WHERE i.token_sha256 = sha256(convert_to($1, 'UTF8'))"""
B_OPLOG = """SELECT * FROM operation_log WHERE tenant_id = $1 ORDER BY at DESC, id DESC
             LIMIT 50"""
B_BILLING = """SELECT sum(segments), sum(cost_micros) FROM billing_lines
               WHERE period = $1 AND tenant_id = ANY($2::bigint[])"""
B_ROSTER = "SELECT phone, name, tags, joined_on, fields FROM contacts WHERE tenant_id = $1"
B_RESULTS = "SELECT id, phone, status, error FROM messages WHERE send_id = $1 ORDER BY id"
B_YEAR_LOG = "SELECT * FROM operation_log WHERE tenant_id = $1 ORDER BY at DESC, id DESC"
B_LINES = "SELECT * FROM billing_lines WHERE period = $1 AND tenant_id = ANY($2::bigint[])"


def _q(path: str, **query: Any) -> str:
    return f"{path}?{urlencode(query)}"


def pages(s: Seeded, user_ids: dict[str, int]) -> list[Page]:
    """Every page under /dashboard a signed-in person opens (GET), and the downloads."""
    c = s.ids[COUNTY]
    month = calendar.current_period()
    last = calendar.previous_period(month)
    county_ids = [i for code, i in s.ids.items() if code.startswith(COUNTY)]
    province_ids = [i for code, i in s.ids.items() if code.startswith("51")]
    big, tag, remind, one = (s.sends[k] for k in ("all", "tag", "remind", "one"))
    sends, msgs = "/dashboard/sends", s.cursors["messages"]
    ops = f"/dashboard/t/{COUNTY}/operations"
    contacts = "/dashboard/contacts"
    day, month_ago = s.texts["day"], s.texts["month_ago"]
    return [
        Page("overview", f"/dashboard/t/{COUNTY}", "county", B_USAGE, (c, month)),
        Page(
            "overview, by segments desc",
            _q(f"/dashboard/t/{COUNTY}", sort="segments", order="desc"),
            "county",
            B_USAGE,
            (c, month),
        ),
        Page(
            "overview, last month",
            _q(f"/dashboard/t/{COUNTY}", period=f"{last:%Y-%m}"),
            "county",
            B_USAGE,
            (c, last),
        ),
        Page("tenant activity", f"/dashboard/t/{COUNTY}/activity", "county", B_RECENT, (c,)),
        Page("compose", "/dashboard/compose", "county", B_TAGS, (c,)),
        Page("sends", sends, "county", B_SENDS, (c,)),
        Page("sends, text 主题党日", _q(sends, text="主题党日"), "county", B_SENDS, (c,)),
        Page("sends, text no match", _q(sends, text="没有这样的内容"), "county", B_SENDS, (c,)),
        Page("sends, state done", _q(sends, state="done"), "county", B_SENDS, (c,)),
        Page("sends, state scheduled", _q(sends, state="scheduled"), "county", B_SENDS, (c,)),
        Page("sends, having failed", _q(sends, having="failed"), "county", B_SENDS, (c,)),
        Page(
            "sends, having deduplicated", _q(sends, having="deduplicated"), "county", B_SENDS, (c,)
        ),
        Page("sends, subtree", _q(sends, subtree="1"), "county", B_SENDS, (c,)),
        Page(
            "sends, one month", _q(sends, **{"from": month_ago, "to": day}), "county", B_SENDS, (c,)
        ),
        Page("sends, by sender", _q(sends, sender=s.texts["sender"]), "county", B_SENDS, (c,)),
        Page("sends, late page", _q(sends, before=s.cursors["sends"]), "county", B_SENDS, (c,)),
        Page("send: to all, replies", f"{sends}/{big}", "county", B_MESSAGES, (big, 0)),
        Page(
            "send: to all, late page",
            _q(f"{sends}/{big}", after=msgs),
            "county",
            B_MESSAGES,
            (big, msgs),
        ),
        Page("send: tag group", f"{sends}/{tag}", "county", B_MESSAGES, (tag, 0)),
        Page("send: reminder", f"{sends}/{remind}", "county", B_MESSAGES, (remind, 0)),
        Page("send: one phone", f"{sends}/{one}", "county", B_MESSAGES, (one, 0)),
        Page("contacts", contacts, "county", B_CONTACTS, (c, 0)),
        Page(
            "contacts, late page",
            _q(contacts, after=s.cursors["contacts"]),
            "county",
            B_CONTACTS,
            (c, s.cursors["contacts"]),
        ),
        Page("contacts, q=王", _q(contacts, q="王"), "county", B_CONTACTS, (c, 0)),
        Page("contacts, q=<a name>", _q(contacts, q=s.texts["name"]), "county", B_CONTACTS, (c, 0)),
        Page(
            "contacts, q=<8 digits>", _q(contacts, q=s.texts["phone"]), "county", B_CONTACTS, (c, 0)
        ),
        Page("contacts, q no match", _q(contacts, q="欧阳无此人"), "county", B_CONTACTS, (c, 0)),
        Page("contacts, tag 书记", _q(contacts, tag="书记"), "county", B_TAGGED, (c, "书记")),
        Page(
            "contacts, tag 大学生村官",
            _q(contacts, tag="大学生村官"),
            "county",
            B_TAGGED,
            (c, "大学生村官"),
        ),
        Page(
            "contacts, tag 大学生村官 late",
            _q(contacts, tag="大学生村官", after=s.cursors["contacts"]),
            "county",
            B_TAGGED,
            (c, "大学生村官"),
        ),
        Page(
            "contacts, tag 书记 + q=张",
            _q(contacts, tag="书记", q="张"),
            "county",
            B_TAGGED,
            (c, "书记"),
        ),
        Page(
            "contact",
            f"{contacts}/{s.cursors['contact']}",
            "county",
            B_CONTACT,
            (s.cursors["contact"],),
        ),
        Page("contacts import", f"{contacts}/import", "county", B_WEBHOOK, (c,)),
        Page("templates", "/dashboard/templates", "county", B_TEMPLATES, (c,)),
        Page("signatures", "/dashboard/signatures", "county", B_SIGNATURES, (c,)),
        Page("reviews", "/dashboard/reviews", "county", B_PENDING),
        Page("admin: units", "/dashboard/admin/units", "county", B_CHILDREN, (c,)),
        Page("admin: keys", "/dashboard/admin/keys", "county", B_KEYS, (c,)),
        Page("admin: webhook", "/dashboard/admin/webhook", "county", B_WEBHOOK, (c,)),
        Page("users", "/dashboard/users", "county", B_USERS, (c,)),
        Page("sessions", "/dashboard/sessions", "county", B_SESSIONS, (user_ids["county"],)),
        Page("operations", ops, "county", B_OPLOG, (c,)),
        Page("operations, action contacts", _q(ops, action="contacts"), "county", B_OPLOG, (c,)),
        Page("operations, actor", _q(ops, actor=s.texts["actor"]), "county", B_OPLOG, (c,)),
        Page(
            "operations, one month",
            _q(ops, **{"from": month_ago, "to": day}),
            "county",
            B_OPLOG,
            (c,),
        ),
        Page(
            "operations, late page", _q(ops, after=s.cursors["operations"]), "county", B_OPLOG, (c,)
        ),
        Page("billing", "/dashboard/billing", "county", B_BILLING, (last, county_ids)),
        Page("sign-in", "/dashboard/login", "anonymous", B_INVITE, (data.INVITE_TOKEN,)),
        Page("SMS code", "/dashboard/code", "owing", B_SESSIONS, (user_ids["county"],)),
        Page(
            "invite",
            f"/dashboard/invite/{data.INVITE_TOKEN}",
            "anonymous",
            B_INVITE,
            (data.INVITE_TOKEN,),
        ),
        Page(
            "operator: province overview",
            f"/dashboard/t/{PROVINCE}",
            "operator",
            B_SUBTREE_USAGE,
            ("000000/510000/%", month),
        ),
        Page(
            "operator: county overview", f"/dashboard/t/{COUNTY}", "operator", B_USAGE, (c, month)
        ),
        Page("operator: sends, subtree", _q(sends, subtree="1"), "operator", B_ALL_SENDS),
        Page(
            "operator: sends, subtree, having failed",
            _q(sends, subtree="1", having="failed"),
            "operator",
            B_ALL_SENDS,
        ),
        Page("operator: reviews", "/dashboard/reviews", "operator", B_PENDING),
        Page(
            "operator: units of 成都市",
            _q("/dashboard/admin/units", tenant="510100"),
            "operator",
            B_CHILDREN,
            (s.ids["510100"],),
        ),
        Page(
            "operator: users of the county",
            _q("/dashboard/users", tenant=COUNTY),
            "operator",
            B_USERS,
            (c,),
        ),
        Page("operator: county operations", ops, "operator", B_OPLOG, (c,)),
        Page(
            "operator: billing", "/dashboard/billing", "operator", B_BILLING, (last, province_ids)
        ),
        # Downloads the pages link to.
        Page("contacts.csv", f"{contacts}/export.csv", "county", B_ROSTER, (c,), True),
        Page("contacts.xlsx", f"{contacts}/export.xlsx", "county", B_ROSTER, (c,), True),
        Page(
            "results.xlsx, to all", f"{sends}/{big}/results.xlsx", "county", B_RESULTS, (big,), True
        ),
        Page(
            "results.xlsx, tag group",
            f"{sends}/{tag}/results.xlsx",
            "county",
            B_RESULTS,
            (tag,),
            True,
        ),
        Page("operations.xlsx, a year", f"{ops}.xlsx", "county", B_YEAR_LOG, (c,), True),
        Page(
            "statement.csv",
            f"/dashboard/billing/{last:%Y-%m}/statement.csv",
            "county",
            B_LINES,
            (last, county_ids),
            True,
        ),
        Page(
            "statement.xlsx",
            f"/dashboard/billing/{last:%Y-%m}/statement.xlsx",
            "county",
            B_LINES,
            (last, county_ids),
            True,
        ),
        Page(
            "operator: statement.xlsx",
            f"/dashboard/billing/{last:%Y-%m}/statement.xlsx",
            "operator",
            B_LINES,
            (last, province_ids),
            True,
        ),
    ]


# --- measuring ---------------------------------------------------------------------------


@dataclass
class Result:
    page: Page
    times: list[float]
    raw: list[float]
    size: int

    @property
    def median(self) -> float:
        return statistics.median(self.times) * 1000

    @property
    def p95(self) -> float:
        ordered = sorted(self.times)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000

    @property
    def raw_median(self) -> float:
        return statistics.median(self.raw) * 1000


async def measure(
    page: Page, client: httpx.AsyncClient, conn: asyncpg.Connection, repeat: int
) -> Result:
    size = 0

    async def fetch() -> None:
        nonlocal size
        answer = await client.get(page.path)
        assert answer.status_code == 200, f"{page.name}: {answer.status_code} {answer.text[:300]}"
        size = len(answer.content)

    times = await timed(repeat, fetch, warm=1 if page.export else 2)
    raw = await timed(repeat, lambda: conn.fetch(page.baseline, *page.args))
    return Result(page, times, raw, size)


def _row(r: Result) -> str:
    over = "  over" if max(r.median, r.p95) > GOAL_MS and not r.page.export else ""
    ratio = r.median / r.raw_median if r.raw_median else float("inf")
    return (
        f"{r.page.name:<42} {r.median:9.1f} {r.p95:9.1f} {r.raw_median:8.2f} {ratio:8.0f}x "
        f"{r.size / 1024:9.0f}{over}"
    )


def report(results: list[Result]) -> None:
    header = f"{'page':<42} {'median':>9} {'p95':>9} {'raw':>8} {'x raw':>9} {'KiB':>9}"
    for title, exports in (("pages (ms)", False), ("downloads (ms)", True)):
        _say()
        _say(title)
        _say(header)
        for r in results:
            if r.page.export == exports:
                _say(_row(r))
    slow = [r for r in results if not r.page.export and max(r.median, r.p95) > GOAL_MS]
    _say()
    _say(
        f"pages over {GOAL_MS:.0f} ms (median or p95): {len(slow)} of "
        f"{sum(1 for r in results if not r.page.export)}"
    )
    for r in slow:
        _say(f"  {r.page.name}: median {r.median:.0f} ms, p95 {r.p95:.0f} ms")


def machine(version: str) -> str:
    cpu = ""
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as info:
        kib = int(info.readline().split()[1])
    return (
        f"{os.cpu_count()} cores ({cpu}), {kib / 1024**2:.0f} GiB, PostgreSQL {version}, "
        f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}"
    )


# --- the run -----------------------------------------------------------------------------


async def _database(args: argparse.Namespace, scale: Scale) -> str:
    """The seeded database: reused when --reuse finds one seeded at this scale."""
    name = args.database
    dsn = with_database(args.dsn, name)
    if args.reuse:
        admin = await asyncpg.connect(args.dsn)
        try:
            comment = await admin.fetchval(
                """SELECT shobj_description(oid, 'pg_database') FROM pg_database
                   WHERE datname = $1""",
                name,
            )
        finally:
            await admin.close()
        if comment == scale.comment():
            _say(f"reusing {name} ({comment}); migrating it")
            await asyncio.to_thread(migrate, dsn)
            return dsn
    await create_database(args.dsn, name)
    await asyncio.to_thread(migrate, dsn)
    _say(f"seeding {name}: {scale.comment()}")
    started = time.monotonic()
    conn = await asyncpg.connect(dsn)
    try:
        await data.seed(conn, scale, UsersSettings())
        await conn.execute(f"COMMENT ON DATABASE \"{name}\" IS '{scale.comment()}'")
    finally:
        await conn.close()
    _say(f"seeded in {time.monotonic() - started:.0f} s")
    return dsn


async def _run(args: argparse.Namespace, redis_dsn: str) -> int:
    scale = Scale(args.contacts, args.sends, args.others, args.other_counties)
    dsn = await _database(args, scale)
    conn = await asyncpg.connect(dsn)
    try:
        seeded = await data.describe(conn)
        _say("data: " + ", ".join(f"{k} {v:,}" for k, v in seeded.counts.items()))
        version = await conn.fetchval("SHOW server_version")
        user_ids = {
            "county": await conn.fetchval("SELECT id FROM users WHERE login = 'bench.county'"),
        }
        port = 18600 + os.getpid() % 1000
        server = start_serve(dsn, redis_dsn, port)
        try:
            return await _pages(args, conn, seeded, user_ids, port, version)
        finally:
            server.terminate()
            await asyncio.to_thread(server.wait, 30)
    finally:
        await conn.close()
        if not args.reuse:
            await drop_database(args.dsn, args.database)


async def _pages(
    args: argparse.Namespace,
    conn: asyncpg.Connection,
    seeded: Seeded,
    user_ids: dict[str, int],
    port: int,
    version: str,
) -> int:
    base = f"http://127.0.0.1:{port}"
    async with (
        httpx.AsyncClient(base_url=base, timeout=600) as county,
        httpx.AsyncClient(base_url=base, timeout=600) as operator,
        httpx.AsyncClient(base_url=base, timeout=600) as anonymous,
        httpx.AsyncClient(base_url=base, timeout=600) as owing,
    ):
        await wait_ready(county)
        await sign_in(county, conn, "bench.county", "+8613900000001")
        await sign_in(operator, conn, "bench.operator", "+8613900000002")
        # A second browser of the county's person, its code not entered: the code page.
        form = {"login": "bench.county", "password": data.PASSWORD}
        answer = await owing.post("/dashboard/login", data=form, headers={"Origin": base})
        assert answer.headers["location"].startswith("/dashboard/code"), answer.text[:300]
        clients = {"county": county, "operator": operator, "anonymous": anonymous, "owing": owing}
        results = []
        for page in pages(seeded, user_ids):
            if args.only and args.only not in page.name:
                continue
            repeat = args.export_repeat if page.export else args.repeat
            result = await measure(page, clients[page.who], conn, repeat)
            _say(_row(result))
            results.append(result)
    report(results)
    _say()
    _say(f"machine: {machine(version)}")
    _say(f"at {calendar.now() + timedelta(hours=8):%Y-%m-%d %H:%M} Beijing time")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("HUB_TEST_DB__DSN"),
        help="an admin DSN (default HUB_TEST_DB__DSN; else embedded)",
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("HUB_TEST_REDIS__DSN"),
        help="a Redis DSN (default HUB_TEST_REDIS__DSN; else embedded Valkey)",
    )
    parser.add_argument("--contacts", type=int, default=100_000, help="the county's roster")
    parser.add_argument("--sends", type=int, default=2_000, help="the county's year of sends")
    parser.add_argument(
        "--others",
        type=int,
        default=2_000,
        help="each other tenant's roster (its sends: a fiftieth of it)",
    )
    parser.add_argument(
        "--other-counties",
        type=int,
        default=0,
        help="how many other counties get data (0: all 183 of province 51)",
    )
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--export-repeat", type=int, default=3)
    parser.add_argument("--only", default="", help="only pages whose name holds this")
    parser.add_argument("--database", default=BENCH_DB, help="the benchmark's own database")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the seeded database and reuse it at the same scale",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        valkey = EmbeddedValkey(Path(tmp)) if not args.redis else None
        pg = EmbeddedPostgres(Path(tmp)) if not args.dsn else None
        try:
            redis_dsn = valkey.start() if valkey is not None else args.redis
            if pg is not None:
                args.dsn = with_database(pg.start(), "postgres")
            return asyncio.run(_run(args, redis_dsn))
        finally:
            if valkey is not None:
                valkey.stop()
            if pg is not None:
                pg.stop()


if __name__ == "__main__":
    sys.exit(main())
