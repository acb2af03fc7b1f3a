"""Benchmark: 1-recipient sends from 50 concurrent HTTP clients, the hub beside a bare app.

    .venv/bin/python -m ops.bench.api_load [--dsn postgresql://…] [--workers 2] [--clients 50]
        [--seconds 10] [--rounds 3] [--loop asyncio|uvloop] [--client wrk|httpx] [--env HUB_X=Y …]

Real processes as in production: `hub serve` with HUB_HTTP__WORKERS uvicorn processes, a real
PostgreSQL (embedded 18.6, or the one at --dsn) and Redis (embedded Valkey), no worker (the
batches wait in the queue; the API's work ends at the enqueue). Beside it, in the same run and on
the same server stack (uvicorn, the same event loop, the same number of processes, the same pool
size): ops/bench/api_bare.py, a bare Litestar app doing one INSERT per request — the baseline.
`--loop` is both servers' event loop (unset: `hub serve`'s default, uvloop where installed).

Closed loop: `--clients` connections each POST a send to one new phone (`{"to": [phone],
"body": …}`), wait for the 202 and POST the next, for `--seconds`; the keys are spread over
`--tenants` counties of 成都市 (strict quota on every level, request limits raised out of the
way). The clients are wrk (Debian's `wrk`, driven by ops/bench/api_load.lua): C, a small part
of one core. `--client httpx` runs them as Python coroutines in this process instead, as the
benchmark did before 2026-12-05: that client takes a core of its own and held the bare app to
about a tenth of what it does (docs/BENCHMARKS.md, issue 17 point 5). Rounds alternate bare and
hub, so both meet the same machine; each round prints sends/s, p50 and p99 of both and the
ratio; the medians of the rounds close the run. Goal: hub at least 0.5 of bare, p99 ≤ 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import msgspec

from hub import loops
from hub.calendar import current_period
from hub.db import create_database, migrate
from hub.quota import service as quota
from hub.settings import EventLoop
from ops.bench import run_on_servers, wait_ready
from ops.bench.api_bare import TABLE
from ops.bench.send_million import PREFIXES
from tenants.divisions import import_divisions
from tenants.scopes import ALL_SCOPES
from tenants.service import create_key, get_by_code

BENCH_DB = "hub_bench_api"
GOAL_RATIO = 0.5
GOAL_P99_MS = 100.0
COUNTIES = ["510104", "510105", "510106", "510107", "510108", "510112", "510113", "510114"]
TEXT = "今晚七点在党员活动室召开支部大会，请准时参加。"


def _say(line: str) -> None:
    print(line, flush=True)


async def _seed(admin_dsn: str, tenants: int) -> tuple[str, list[str]]:
    """Province 51, strict quota on every level a sender's chain holds, a key per county."""
    dsn = await create_database(admin_dsn, BENCH_DB)
    await asyncio.to_thread(migrate, dsn)
    conn = await asyncpg.connect(dsn)
    keys: list[str] = []
    try:
        await conn.execute(TABLE)
        async with conn.transaction():
            await import_divisions(conn, "51")
            granted: set[str] = set()
            for code in COUNTIES[:tenants]:
                chain = ["000000", "510000", "510100", code]
                for depth, level in enumerate(chain):
                    tenant = await get_by_code(conn, level)
                    assert tenant is not None, level
                    if level not in granted:
                        granted.add(level)
                        await quota.set_limit(
                            conn, tenant, current_period(), "bench", limit=10**12 // 10**depth
                        )
                tenant = await get_by_code(conn, code)
                assert tenant is not None
                keys.append((await create_key(conn, tenant, ALL_SCOPES, name="bench")).key)
    finally:
        await conn.close()
    return dsn, keys


def _hub_server(
    dsn: str, redis_dsn: str, port: int, workers: int, loop: EventLoop, extra: dict[str, str]
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_DB__DSN=dsn,
        HUB_REDIS__DSN=redis_dsn,
        HUB_HTTP__PORT=str(port),
        HUB_HTTP__WORKERS=str(workers),
        HUB_HTTP__EVENT_LOOP=loop,
        HUB_LOG_LEVEL="WARNING",
        HUB_MESSAGES__QUIET_HOURS="false",
        # The request limiter still runs (its Redis call is part of a send's cost), out of the way.
        HUB_LIMITS__KEY_RATE="1000000",
        HUB_LIMITS__KEY_BURST="1000000000",
        HUB_LIMITS__TENANT_RATE="1000000",
        HUB_LIMITS__TENANT_BURST="1000000000",
        **extra,
    )
    return subprocess.Popen([str(Path(sys.executable).parent / "hub"), "serve"], env=env)


def _bare_server(dsn: str, port: int, workers: int, loop: EventLoop) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HUB_BARE_DSN": dsn}
    command = [sys.executable, "-m", "uvicorn", "ops.bench.api_bare:create_app", "--factory"]
    command += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    command += ["--loop", loop, "--http", "httptools"]
    return subprocess.Popen(command, env=env)


@dataclass
class Round:
    sends: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Latency from each request's start to its answer, in ms.
    p50: float = 0.0
    p99: float = 0.0
    # CPU seconds the server's processes and its PostgreSQL backends spent in the round: what a
    # send costs, which a loaded machine stretches far less than it stretches the wall clock.
    cpu_app: float = 0.0
    cpu_pg: float = 0.0

    def ms_per_send(self, cpu: float) -> float:
        return cpu * 1000 / max(self.sends, 1)

    @property
    def rate(self) -> float:
        return self.sends / self.seconds


class Phones:
    """A new valid mobile number for every send (no send is a duplicate of another)."""

    def __init__(self, start: int) -> None:
        self.n = start

    def next(self) -> str:
        self.n += 1
        return PREFIXES[self.n % len(PREFIXES)] + f"{self.n // len(PREFIXES) % 10**8:08d}"


class WrkResult(msgspec.Struct, frozen=True):
    """What ops/bench/api_load.lua's done() prints."""

    seconds: float
    responses: int
    not_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float


LUA = Path(__file__).with_suffix(".lua")


async def _drive_wrk(
    url: str,
    keys: list[str],
    clients: int,
    seconds: float,
    phones: Phones,
    meter: Meter | None = None,
) -> Round:
    """One round of `clients` wrk connections (2 threads) sending for `seconds`."""
    phones.n += 10**9  # this round's numbers: none sent before (the Lua script counts up)
    env = {
        **os.environ,
        "API_LOAD_KEYS": ",".join(keys),
        "API_LOAD_PREFIXES": ",".join(PREFIXES),
        "API_LOAD_FIRST": str(phones.n),
        "API_LOAD_BODY": TEXT,
    }
    command = ["wrk", "-t", "2", "-c", str(clients), "-d", f"{seconds:g}s", "--timeout", "60s"]
    command += ["-s", str(LUA), f"{url}/v1/messages"]
    before = (0.0, 0.0) if meter is None else await meter.read()
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True)
    output = done.stdout.decode()
    line = next((x for x in output.splitlines() if x.startswith("wrk-result ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {output}{done.stderr.decode()}")
    got = msgspec.json.decode(line.split(" ", 1)[1], type=WrkResult)
    result = Round(
        sends=got.responses - got.not_2xx,
        seconds=got.seconds,
        p50=got.p50_ms,
        p99=got.p99_ms,
        errors=[f"{got.not_2xx} answers not 2xx"] * bool(got.not_2xx)
        + [f"{got.socket_errors} socket errors"] * bool(got.socket_errors),
    )
    if meter is not None:
        app, pg = await meter.read()
        result.cpu_app, result.cpu_pg = app - before[0], pg - before[1]
    return result


async def _drive_httpx(
    client: httpx.AsyncClient,
    keys: list[str],
    clients: int,
    seconds: float,
    phones: Phones,
    meter: Meter | None = None,
) -> Round:
    """One round of `clients` coroutines of this process sending for `seconds`."""
    result = Round()
    latencies: list[float] = []
    before = (0.0, 0.0) if meter is None else await meter.read()
    stop = time.perf_counter() + seconds

    async def one_client(i: int) -> None:
        headers = {"Authorization": f"Bearer {keys[i % len(keys)]}"}
        headers["Content-Type"] = "application/json"
        while time.perf_counter() < stop:
            body = msgspec.json.encode({"to": [phones.next()], "body": TEXT})
            started = time.perf_counter()
            try:
                resp = await client.post("/v1/messages", content=body, headers=headers)
                ok = resp.status_code == 202
                if not ok:
                    result.errors.append(f"{resp.status_code} {resp.text[:200]}")
            except httpx.HTTPError as exc:
                ok = False
                result.errors.append(repr(exc))
            if ok:
                latencies.append((time.perf_counter() - started) * 1000)
                result.sends += 1

    started = time.perf_counter()
    await asyncio.gather(*(one_client(i) for i in range(clients)))
    result.seconds = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    result.p50, result.p99 = cuts[49], cuts[98]
    if meter is not None:
        app, pg = await meter.read()
        result.cpu_app, result.cpu_pg = app - before[0], pg - before[1]
    return result


async def _ready(client: httpx.AsyncClient) -> None:
    """wait_ready, for up to three minutes: on a loaded machine uvicorn's processes take long."""
    for attempt in range(3):
        try:
            await wait_ready(client)
            return
        except RuntimeError:
            if attempt == 2:
                raise


def _line(name: str, r: Round) -> str:
    return (
        f"{name:<5} {r.rate:8.1f} sends/s  p50 {r.p50:7.1f} ms  p99 {r.p99:7.1f} ms"
        f"  CPU/send: app {r.ms_per_send(r.cpu_app):5.2f} ms, PostgreSQL "
        f"{r.ms_per_send(r.cpu_pg):5.2f} ms  n={r.sends}"
        + (f"  errors={len(r.errors)} e.g. {r.errors[0]}" if r.errors else "")
    )


TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (gone ones count nothing)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def _tree(root: int) -> list[int]:
    """`root` and every process below it (uvicorn's supervisor and its workers)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


class Meter:
    """CPU of one server's process tree and of the bench database's backends."""

    def __init__(self, server: int, dsn: str) -> None:
        self.server = server
        self.dsn = dsn

    async def read(self) -> tuple[float, float]:
        conn = await asyncpg.connect(self.dsn)
        try:
            backends = [
                r["pid"]
                for r in await conn.fetch(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ]
        finally:
            await conn.close()
        return _cpu_seconds(_tree(self.server)), _cpu_seconds(backends)


async def _measure(
    args: argparse.Namespace,
    hub_url: str,
    bare_url: str,
    keys: list[str],
    meters: tuple[Meter, Meter],
) -> int:
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    phones = Phones(0)
    rows: list[tuple[Round, Round]] = []
    async with (
        httpx.AsyncClient(base_url=hub_url, timeout=60, limits=limits) as hub,
        httpx.AsyncClient(base_url=bare_url, timeout=60, limits=limits) as bare,
    ):
        for client in (hub, bare):
            await _ready(client)

        async def drive(client: httpx.AsyncClient, seconds: float, meter: Meter | None) -> Round:
            if args.client == "httpx":
                return await _drive_httpx(client, keys, args.clients, seconds, phones, meter)
            url = str(client.base_url).rstrip("/")
            return await _drive_wrk(url, keys, args.clients, seconds, phones, meter)

        _say(f"{args.clients} clients ({args.client}); warm-up: {args.warm} s each")
        await drive(bare, args.warm, None)
        await drive(hub, args.warm, None)
        for n in range(1, args.rounds + 1):
            load = os.getloadavg()[0]
            b = await drive(bare, args.seconds, meters[1])
            h = await drive(hub, args.seconds, meters[0])
            rows.append((b, h))
            _say(f"round {n} (load {load:.1f})")
            _say("  " + _line("bare", b))
            _say("  " + _line("hub", h))
            _say(f"  hub / bare {h.rate / b.rate:.2f}")
    ratios = [h.rate / b.rate for b, h in rows]
    median = statistics.median

    _say(
        f"median of {len(rows)}: bare {median(b.rate for b, _ in rows):.1f} sends/s "
        f"(p50 {median(b.p50 for b, _ in rows):.1f} ms, "
        f"p99 {median(b.p99 for b, _ in rows):.1f} ms); "
        f"hub {median(h.rate for _, h in rows):.1f} sends/s "
        f"(p50 {median(h.p50 for _, h in rows):.1f} ms, "
        f"p99 {median(h.p99 for _, h in rows):.1f} ms)"
    )
    _say(f"hub / bare (median of the rounds' ratios) {median(ratios):.2f}  (goal ≥ {GOAL_RATIO})")
    for name, pick in (("bare", 0), ("hub", 1)):
        app = median(r[pick].ms_per_send(r[pick].cpu_app) for r in rows)
        pg = median(r[pick].ms_per_send(r[pick].cpu_pg) for r in rows)
        _say(f"CPU per send, median, {name}: app {app:.2f} ms, PostgreSQL {pg:.2f} ms")
    cost = [
        b.ms_per_send(b.cpu_app + b.cpu_pg) / h.ms_per_send(h.cpu_app + h.cpu_pg) for b, h in rows
    ]
    _say(f"bare CPU per send / hub CPU per send (median) {median(cost):.2f}")
    p99 = median(h.p99 for _, h in rows)
    _say(f"hub p99 / goal ({GOAL_P99_MS:.0f} ms) {p99 / GOAL_P99_MS:.2f}")
    _say(f"load average (1, 5, 15 min): {os.getloadavg()}")
    errors = sum(len(b.errors) + len(h.errors) for b, h in rows)
    return 0 if errors == 0 else 1


async def _run(args: argparse.Namespace, redis_dsn: str) -> int:
    _say(f"seeding province 51, {args.tenants} sending counties …")
    dsn, keys = await _seed(args.dsn, args.tenants)
    extra = dict(item.split("=", 1) for item in args.env)
    hub_port = 18600 + os.getpid() % 500
    bare_port = hub_port + 500
    loop = loops.chosen(args.loop, "--loop")
    _say(f"both servers on {loop}")
    hub = _hub_server(dsn, redis_dsn, hub_port, args.workers, loop, extra)
    bare = _bare_server(dsn, bare_port, args.workers, loop)
    try:
        meters = (Meter(hub.pid, dsn), Meter(bare.pid, dsn))
        return await _measure(
            args, f"http://127.0.0.1:{hub_port}", f"http://127.0.0.1:{bare_port}", keys, meters
        )
    finally:
        for server in (hub, bare):
            server.terminate()
        for server in (hub, bare):
            await asyncio.to_thread(server.wait, 30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="an admin DSN; the benchmark creates its own database")
    parser.add_argument("--workers", type=int, default=2, help="processes of each server")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--tenants", type=int, default=8, help="sending counties (≤ 8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="of each round and server")
    parser.add_argument("--warm", type=float, default=3.0, help="seconds of warm-up each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], help="both servers' event loop")
    parser.add_argument("--env", action="append", default=[], help="HUB_X=Y for hub serve")
    parser.add_argument(
        "--client", choices=["wrk", "httpx"], default="wrk", help="what sends (httpx: in here)"
    )
    args = parser.parse_args()
    if args.client == "wrk" and shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk), or pass --client httpx")
    return run_on_servers(args, _run)


if __name__ == "__main__":
    sys.exit(main())
