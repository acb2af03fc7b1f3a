"""Benchmark: small sends from other tenants while one tenant's 1,000,000-recipient send runs.

    .venv/bin/python -m ops.bench.send_fairness [--dsn postgresql://…] [--workers 2]
        [--policy strict|pooled] [--rate 10] [--recipients 1000000]

Real processes as in production: `hub serve` with HUB_HTTP__WORKERS processes (uvicorn), a real
PostgreSQL (embedded 18.6, or the one at --dsn) and Redis (embedded Valkey). Province 51 and 52
are imported; 510104 锦江区 sends to a million recipients (the body of ops/bench/send_million:
10 % repeats, 1 % invalid), while 24 other counties — of the same province and city, of its
other cities, and of province 52 — each send small notices (1 to 5 recipients, a text of their
own) on a fixed schedule, `--rate` sends a second in all.

Open loop: each small send is started at its scheduled instant whether or not the earlier ones
have answered, and its latency counts from that instant, so a stalled server shows as the whole
stall, not as fewer requests. Two phases, one run, same server:
1. baseline: the small sends alone for `--baseline` seconds;
2. big send: the same small sends from the moment the 1M POST leaves until its 202 arrives.
Printed: p50/p95/p99/max per phase, p99 against the goal (300 ms) and against the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import msgspec

from hub.calendar import current_period
from hub.db import create_database, migrate
from hub.quota import service as quota
from ops.bench import run_on_servers, wait_ready
from ops.bench.send_million import PREFIXES, recipients
from tenants.divisions import import_divisions
from tenants.scopes import ALL_SCOPES
from tenants.service import create_key, get_by_code

BENCH_DB = "hub_bench_fairness"
GOAL_MS = 300.0
BIG = "510104"
# Other tenants: the big sender's sibling counties, counties of other cities of province 51,
# and counties of province 52 (another province entirely).
SMALL = [
    *("510105", "510106", "510107", "510108", "510112", "510113", "510114"),  # 成都市
    *("510302", "510303", "510304", "510311", "510321"),  # 自贡市
    *("510402", "510403", "510411"),  # 攀枝花市
    *("520102", "520103", "520111", "520112", "520113", "520115"),  # 贵阳市
    *("520201", "520203", "520204"),  # 六盘水市
]


def _say(line: str) -> None:
    print(line, flush=True)


async def _seed(admin_dsn: str, policy: str) -> tuple[str, str, dict[str, str]]:
    """Provinces 51 and 52, quota on every level used, a key per sender: DSN, big key, keys."""
    dsn = await create_database(admin_dsn, BENCH_DB)
    await asyncio.to_thread(migrate, dsn)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for province in ("51", "52"):
                await import_divisions(conn, province)
            keys: dict[str, str] = {}
            granted: set[str] = set()
            for code in (BIG, *SMALL):
                chain = ["000000", code[:2] + "0000", code[:4] + "00", code]
                for depth, level in enumerate(chain):
                    tenant = await get_by_code(conn, level)
                    assert tenant is not None, level
                    if level not in granted:
                        granted.add(level)
                        # Pooled: the root's, the province's and the city's rows are locked by
                        # every send below them. Strict: a send locks only its sender's row.
                        await quota.set_limit(
                            conn,
                            tenant,
                            current_period(),
                            "bench",
                            limit=10**12 // 10**depth,
                            policy=policy if depth < 3 else "strict",
                        )
                tenant = await get_by_code(conn, code)
                assert tenant is not None
                keys[code] = (await create_key(conn, tenant, ALL_SCOPES, name="bench")).key
    finally:
        await conn.close()
    return dsn, keys.pop(BIG), keys


class Load:
    """Small sends on a fixed schedule from many tenants; latencies from their scheduled time."""

    def __init__(self, client: httpx.AsyncClient, keys: dict[str, str], rate: float) -> None:
        self.client = client
        self.keys = list(keys.values())
        self.interval = 1 / rate
        self.rng = random.Random(7)
        self.sent = 0
        self.errors: list[str] = []

    def _body(self) -> bytes:
        self.sent += 1
        n = self.rng.randint(1, 5)
        phones = [self.rng.choice(PREFIXES) + f"{self.rng.randrange(10**8):08d}" for _ in range(n)]
        text = f"第{self.sent}号通知：请于明日九时到会。"
        return msgspec.json.encode({"to": phones, "body": text})

    async def _one(
        self, key: str, body: bytes, due: float, out: list[float], slow: list[tuple[float, float]]
    ) -> None:
        try:
            resp = await self.client.post(
                "/v1/messages",
                content=body,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            if resp.status_code != 202:
                self.errors.append(f"{resp.status_code} {resp.text[:200]}")
        except httpx.HTTPError as exc:
            self.errors.append(repr(exc))
        out.append((time.perf_counter() - due) * 1000)
        slow.append((out[-1], due))

    async def run(self, until: asyncio.Future[httpx.Response] | float) -> list[float]:
        """Send until `until` (a future that completes, or a number of seconds); latencies (ms)."""
        latencies: list[float] = []
        self.slowest: list[tuple[float, float]] = []  # (ms, when it was due)
        tasks = []
        start = self.started = time.perf_counter()
        i = 0
        while True:
            if isinstance(until, float | int):
                if time.perf_counter() - start >= until:
                    break
            elif until.done():
                break
            due = start + i * self.interval
            # Always yield, even when behind: the big send's answer must be seen to arrive.
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            key = self.keys[i % len(self.keys)]
            work = self._one(key, self._body(), due, latencies, self.slowest)
            tasks.append(asyncio.create_task(work))
            i += 1
        await asyncio.gather(*tasks)
        return latencies


def _summary(name: str, ms: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    figures = {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "max": max(ms)}
    _say(
        f"{name:<28} n={len(ms):>5}  p50 {figures['p50']:7.1f} ms  p95 {figures['p95']:7.1f} ms"
        f"  p99 {figures['p99']:7.1f} ms  max {figures['max']:7.1f} ms"
    )
    return figures


def _start_server(dsn: str, redis_dsn: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_DB__DSN=dsn,
        HUB_REDIS__DSN=redis_dsn,
        HUB_HTTP__PORT=str(port),
        HUB_DB__STATEMENT_TIMEOUT="600",
        HUB_LOG_LEVEL="WARNING",
        HUB_MESSAGES__QUIET_HOURS="false",
    )
    if workers > 1:
        env["HUB_HTTP__WORKERS"] = str(workers)
    return subprocess.Popen([str(Path(sys.executable).parent / "hub"), "serve"], env=env)


async def _measure(args: argparse.Namespace, base: str, big_key: str, keys: dict[str, str]) -> int:
    text = "今晚七点在党员活动室召开支部大会，请准时参加。"
    big_body = msgspec.json.encode({"to": recipients(args.recipients), "body": text})
    # Idle connections are dropped before uvicorn drops them (5 s): a POST never meets a closed one.
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=2)
    async with httpx.AsyncClient(base_url=base, timeout=900, limits=limits) as client:
        await wait_ready(client)
        load = Load(client, keys, args.rate)
        await load.run(2.0)  # warm up: connections, prepared statements
        _say(f"baseline: {args.rate:g} small sends/s from {len(keys)} tenants, {args.baseline} s")
        baseline = await load.run(float(args.baseline))
        _say(f"big send: {args.recipients:,} recipients from {BIG} ({len(big_body) / 1e6:.1f} MB)")
        started = time.perf_counter()
        big = asyncio.create_task(
            client.post(
                "/v1/messages",
                content=big_body,
                headers={"Authorization": f"Bearer {big_key}", "Content-Type": "application/json"},
            )
        )
        during = await load.run(big)
        resp = await big
        elapsed = time.perf_counter() - started
    if resp.status_code != 202:
        _say(f"big send failed: {resp.status_code} {resp.text[:300]}")
        return 1
    _say(f"big send answered 202 in {elapsed:.1f} s: {resp.json()['counts']}")
    if load.errors:
        _say(f"small sends not accepted: {len(load.errors)}, e.g. {load.errors[:3]}")
    base_fig = _summary("small sends, baseline", baseline)
    big_fig = _summary("small sends, during 1M send", during)
    slowest = sorted(load.slowest, reverse=True)[:5]
    _say(
        "slowest during, (ms, s after the big send left): "
        + ", ".join(f"({ms:.0f}, {due - load.started:.1f})" for ms, due in slowest)
    )
    _say(f"p99 during / goal ({GOAL_MS:.0f} ms)  {big_fig['p99'] / GOAL_MS:6.2f}")
    _say(f"p99 during / baseline p99   {big_fig['p99'] / base_fig['p99']:6.2f}")
    _say(f"load average (1, 5, 15 min): {os.getloadavg()}")
    return 0 if not load.errors else 1


async def _run(args: argparse.Namespace, redis_dsn: str) -> int:
    _say(f"seeding provinces 51 and 52 ({args.policy} provinces and cities) …")
    dsn, big_key, keys = await _seed(args.dsn, args.policy)
    port = 18500 + os.getpid() % 1000
    server = await asyncio.to_thread(_start_server, dsn, redis_dsn, port, args.workers)
    try:
        return await _measure(args, f"http://127.0.0.1:{port}", big_key, keys)
    finally:
        server.terminate()
        await asyncio.to_thread(server.wait, 30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="an admin DSN; the benchmark creates its own database")
    parser.add_argument("--workers", type=int, default=2, help="hub serve processes")
    parser.add_argument("--policy", choices=["strict", "pooled"], default="strict")
    parser.add_argument("--rate", type=float, default=10.0, help="small sends a second, in all")
    parser.add_argument("--baseline", type=int, default=15, help="seconds of baseline")
    parser.add_argument("--recipients", type=int, default=1_000_000)
    args = parser.parse_args()
    return run_on_servers(args, _run)


if __name__ == "__main__":
    sys.exit(main())
