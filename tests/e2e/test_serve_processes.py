"""`hub serve` with two processes (HUB_HTTP__WORKERS=2): both answer, and they share one
request-rate bucket per key through Redis."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tenants.scopes import ALL_SCOPES
from tenants.service import create_key, ensure_root
from tests.e2e.conftest import HUB, clean_env, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def two_processes(fresh_db: str, redis_dsn: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = clean_env(
        HUB_DB__DSN=fresh_db,
        HUB_REDIS__DSN=redis_dsn,
        HUB_HTTP__PORT=str(port),
        HUB_HTTP__WORKERS="2",
        HUB_LIMITS__KEY_RATE="0.01",
        HUB_LIMITS__KEY_BURST="12",
    )
    server = subprocess.Popen([HUB, "serve"], env=env)
    try:
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        server.terminate()
        server.wait(timeout=60)


async def _ready(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/readyz")).status_code == 200
    except httpx.TransportError:
        return False


def serving_children(pid: int) -> int:
    """How many uvicorn processes the supervisor `pid` runs (spawned by multiprocessing)."""
    found = 0
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        found += ppid == pid and b"spawn_main" in cmdline
    return found


async def test_two_processes_share_the_keys_bucket(
    fresh_db: str, two_processes: tuple[str, int]
) -> None:
    url, pid = two_processes
    conn = await asyncpg.connect(fresh_db)
    try:
        root = await ensure_root(conn)
        key = (await create_key(conn, root, ALL_SCOPES, name="e2e")).key
    finally:
        await conn.close()
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        # Two processes importing the hub take seconds, a minute and more on a loaded machine:
        # wait for both (each answers readiness only once it listens), then go on.
        async with asyncio.timeout(300):
            while True:
                if serving_children(pid) == 2 and await _ready(client):
                    break
                await asyncio.sleep(0.2)
        # A new connection each time: the kernel hands them to either process.
        remaining = []
        for _ in range(12):
            async with httpx.AsyncClient(base_url=url, timeout=30) as fresh:
                resp = await fresh.get("/v1/me", headers=headers)
            assert resp.status_code == 200, resp.text
            remaining.append(int(resp.headers["RateLimit-Remaining"]))
        assert remaining == list(range(11, -1, -1))
        refused = await client.get("/v1/me", headers=headers)
        assert refused.status_code == 429
