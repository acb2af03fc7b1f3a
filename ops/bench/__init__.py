"""Benchmarks: modules run as `python -m ops.bench.<name>`; numbers in docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx

from hub.db import with_database
from hub.embedded import EmbeddedPostgres, EmbeddedValkey


def run_on_postgres(
    args: argparse.Namespace, main: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
) -> int:
    """`main(args)` against the server of `args.dsn`, or else an embedded PostgreSQL in a
    temporary folder (its admin DSN put in `args.dsn`), stopped and removed afterwards."""
    if args.dsn:
        return asyncio.run(main(args))
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp))
        try:
            args.dsn = with_database(pg.start(), "postgres")
            return asyncio.run(main(args))
        finally:
            pg.stop()


def run_on_servers(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, str], Coroutine[Any, Any, int]],
) -> int:
    """`run(args, redis_dsn)` with an embedded Valkey, against the PostgreSQL of `args.dsn` or
    else an embedded one (its admin DSN put in `args.dsn`); both stopped and removed after."""
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        valkey = EmbeddedValkey(Path(tmp))
        pg = EmbeddedPostgres(Path(tmp)) if not args.dsn else None
        try:
            redis_dsn = valkey.start()
            if pg is not None:
                args.dsn = with_database(pg.start(), "postgres")
            return asyncio.run(run(args, redis_dsn))
        finally:
            valkey.stop()
            if pg is not None:
                pg.stop()


async def wait_ready(client: httpx.AsyncClient) -> None:
    """Until the `hub serve` behind `client` answers /readyz (60 s at most)."""
    for _ in range(600):
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("hub serve did not become ready in 60 s")


async def timed(times: int, op: Callable[[], Awaitable[Any]], warm: int = 2) -> list[float]:
    """Seconds each of `times` runs of `op` took, after `warm` runs untimed (prepared
    statements, caches)."""
    for _ in range(warm):
        await op()
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        await op()
        samples.append(time.perf_counter() - started)
    return samples
