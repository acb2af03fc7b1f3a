"""Benchmark: one send to 1,000,000 mainland mobiles through the real API.

    .venv/bin/python -m ops.bench.send_million [--dsn postgresql://…] [--recipients 1000000]

The recipients are random valid mobiles with 10 % repeated and 1 % invalid. The send is timed
from the request leaving the client to the 202 arriving (the transaction has committed by then);
beside it, in the same run on the same server, the raw baseline: `copy_records_to_table` of the
same unique rows into a table with the messages table's indexes. The API runs as its own process
(`hub serve`); its peak RSS is read from /proc (VmHWM) afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

from hub.calendar import current_period
from hub.db import create_database, migrate
from hub.messages.numbers import Recipient, normalize
from hub.quota import service as quota
from ops.bench import run_on_servers
from tenants.divisions import import_divisions
from tenants.scopes import ALL_SCOPES
from tenants.service import create_key, get_by_code

BENCH_DB = "hub_bench_send"
PREFIXES = [
    "130",
    "131",
    "132",
    "133",
    "134",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "152",
    "153",
    "155",
    "156",
    "157",
    "158",
    "159",
    "166",
    "177",
    "180",
    "181",
    "182",
    "183",
    "185",
    "186",
    "187",
    "188",
    "189",
    "191",
    "192",
    "198",
    "199",
]


def _say(line: str) -> None:
    print(line, flush=True)


def recipients(n: int, seed: int = 1) -> list[str]:
    """n phones: 89 % distinct valid mobiles, 10 % repeats of them, 1 % invalid."""
    rng = random.Random(seed)
    unique = int(n * 0.89)
    seen: set[str] = set()
    while len(seen) < unique:
        seen.add(rng.choice(PREFIXES) + f"{rng.randrange(10**8):08d}")
    valid = list(seen)
    phones = valid + rng.choices(valid, k=int(n * 0.10))
    phones += [f"1{rng.randrange(10**6):06d}" for _ in range(n - len(phones))]  # too short
    rng.shuffle(phones)
    return phones


async def seed_database(admin_dsn: str, name: str = "") -> tuple[str, str]:
    """A migrated database `name` with province 51's tenants, quota enough on the chain
    000000 → 510104, and an API key of 510104: its DSN and the key."""
    dsn = await create_database(admin_dsn, name or BENCH_DB)
    await asyncio.to_thread(migrate, dsn)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await import_divisions(conn, "51")
            chain = ("000000", "510000", "510100", "510104")
            for depth, code in enumerate(chain):
                tenant = await get_by_code(conn, code)
                assert tenant is not None
                await quota.set_limit(
                    conn, tenant, current_period(), "bench", limit=10**12 // 10**depth
                )
            county = await get_by_code(conn, "510104")
            assert county is not None
            key = (await create_key(conn, county, ALL_SCOPES, name="bench")).key
    finally:
        await conn.close()
    return dsn, key


async def _raw_copy(dsn: str, phones: list[str]) -> float:
    """Rows per second of COPY of the same unique rows into a table with the same indexes."""
    rows = []
    for phone in dict.fromkeys(phones):
        result = normalize(phone)
        if isinstance(result, Recipient):
            rows.append((1, 1, result.phone, result.carrier, "accepted", 1))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE raw_messages (LIKE messages INCLUDING DEFAULTS INCLUDING IDENTITY "
            "INCLUDING INDEXES)"
        )
        started = time.perf_counter()
        await conn.copy_records_to_table(
            "raw_messages",
            records=rows,
            columns=["send_id", "tenant_id", "phone", "carrier", "status", "segments"],
        )
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return len(rows) / elapsed


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _run(args: argparse.Namespace, redis_dsn: str) -> int:
    dsn, key = await seed_database(args.dsn)
    phones = recipients(args.recipients)
    port = 18000 + os.getpid() % 1000
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_DB__DSN=dsn,
        HUB_REDIS__DSN=redis_dsn,
        HUB_HTTP__PORT=str(port),
        HUB_DB__STATEMENT_TIMEOUT="600",
        HUB_LOG_LEVEL="WARNING",
    )
    server = await asyncio.to_thread(
        subprocess.Popen, [str(Path(sys.executable).parent / "hub"), "serve"], env=env
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=900) as client:
            for _ in range(100):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            body = {"to": phones, "body": "今晚七点在党员活动室召开支部大会，请准时参加。"}
            _say(f"sending to {len(phones):,} recipients …")
            started = time.perf_counter()
            resp = await client.post(
                "/v1/messages", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            elapsed = time.perf_counter() - started
        if resp.status_code != 202:
            _say(f"send failed: {resp.status_code} {resp.text[:500]}")
            return 1
        counts = resp.json()["counts"]
        rss = _peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    copy_rate = await _raw_copy(dsn, phones)
    rate = len(phones) / elapsed
    _say(f"counts: {counts}")
    _say(f"API send            {elapsed:8.2f} s  {rate:>10,.0f} recipients/s")
    _say(f"raw COPY (same rows)             {copy_rate:>10,.0f} rows/s")
    _say(f"ratio API / COPY    {rate / copy_rate:8.2f}")
    _say(f"API peak RSS        {rss:8.0f} MB")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="an admin DSN; the benchmark creates its own database")
    parser.add_argument("--recipients", type=int, default=1_000_000)
    args = parser.parse_args()
    return run_on_servers(args, _run)


if __name__ == "__main__":
    sys.exit(main())
