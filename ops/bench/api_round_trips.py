"""What one 1-recipient send costs in round trips: SQL statements and Redis calls, listed.

    .venv/bin/python -m ops.bench.api_round_trips [--dsn postgresql://…] [--sends 3]

The app of `hub serve` in this process (its own pool and Redis client, through its ASGI
lifespan), one county with a key, `--sends` sends of one new phone each; the last one's
PostgreSQL statements (with the pool's own, e.g. its reset on release) and Redis round trips are
printed in order. The companion of ops/bench/api_load.py: a round trip saved here is one saved
per request there.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

import asyncpg
import msgspec
import redis.asyncio.connection
from litestar.testing import AsyncTestClient

from hub.app import create_app
from hub.calendar import current_period
from hub.db import create_database, migrate
from hub.embedded import EmbeddedValkey
from hub.quota import service as quota
from hub.settings import load_settings
from ops.bench import run_on_postgres
from tenants.divisions import import_divisions
from tenants.scopes import ALL_SCOPES
from tenants.service import create_key, get_by_code

BENCH_DB = "hub_bench_round_trips"


async def _seed(admin_dsn: str) -> tuple[str, str]:
    dsn = await create_database(admin_dsn, BENCH_DB)
    await asyncio.to_thread(migrate, dsn)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await import_divisions(conn, "51")
            for depth, code in enumerate(("000000", "510000", "510100", "510104")):
                tenant = await get_by_code(conn, code)
                assert tenant is not None
                limit = 10**9 // 10**depth
                await quota.set_limit(conn, tenant, current_period(), "bench", limit=limit)
            assert tenant is not None
            key = (await create_key(conn, tenant, ALL_SCOPES, name="bench")).key
    finally:
        await conn.close()
    return dsn, key


def _recording(seen: list[str]) -> ExitStack:
    """Patches that append each SQL statement and each Redis round trip to `seen`."""
    stack = ExitStack()
    create_pool = asyncpg.create_pool

    def logged(query: Any) -> None:
        seen.append("SQL   " + " ".join(str(query.query).split())[:110])

    async def init(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(logged)

    def pool(*args: Any, **kwargs: Any) -> Any:
        return create_pool(*args, init=init, **kwargs)

    stack.enter_context(mock.patch("asyncpg.create_pool", pool))
    send: Callable[..., Any] = redis.asyncio.connection.AbstractConnection.send_packed_command

    async def counted(self: Any, command: Any, check_health: bool = True) -> None:
        parts = command if isinstance(command, list) else [command]
        text = b"".join(p if isinstance(p, bytes) else bytes(p) for p in parts)
        words = [w for w in text.split(b"\r\n") if w and w[:1] not in (b"*", b"$")]
        seen.append("REDIS " + " ".join(w.decode(errors="replace") for w in words)[:110])
        await send(self, command, check_health)

    connection = redis.asyncio.connection.AbstractConnection
    stack.enter_context(mock.patch.object(connection, "send_packed_command", counted))
    return stack


async def _main(args: argparse.Namespace) -> int:
    dsn, key = await _seed(args.dsn)
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        valkey = EmbeddedValkey(Path(tmp))
        redis_dsn = valkey.start()
        try:
            env = {"HUB_DB__DSN": dsn, "HUB_REDIS__DSN": redis_dsn}
            env["HUB_MESSAGES__QUIET_HOURS"] = "false"
            with mock.patch.dict("os.environ", env):
                settings = load_settings()
            seen: list[str] = []
            with _recording(seen):
                app = create_app(settings)
                async with AsyncTestClient(app) as client:
                    headers = {"Authorization": f"Bearer {key}"}
                    for n in range(args.sends):
                        seen.clear()
                        body = {"to": [f"1390000{n:04d}"], "body": "明日九时开会。"}
                        resp = await client.post(
                            "/v1/messages", content=msgspec.json.encode(body), headers=headers
                        )
                        assert resp.status_code == 202, resp.text
                    await asyncio.sleep(0.2)  # the last release's reset
        finally:
            valkey.stop()
    for line in seen:
        print(line)
    sql = sum(line.startswith("SQL") for line in seen)
    print(f"one send: {sql} SQL statements, {len(seen) - sql} Redis round trips")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="an admin DSN; the benchmark creates its own database")
    parser.add_argument("--sends", type=int, default=3)
    return run_on_postgres(parser.parse_args(), _main)


if __name__ == "__main__":
    sys.exit(main())
