"""Delivery tests: a committed database (the worker has its own connections), the app on a real
pool, and an in-process arq worker run in burst mode."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis

from hub.app import create_app
from hub.db import PoolDatabase, create_pool
from hub.quota import service as quota
from hub.settings import GatewayConfig, Settings
from hub.worker import build_worker
from tests.factories import grant, make_key, make_small_tree

SECRET = "s3cret-for-tests"
RunWorker = Callable[..., Awaitable[Any]]


def with_gateways(settings: Settings, *gateways: GatewayConfig, **delivery: Any) -> Settings:
    return msgspec.structs.replace(
        settings,
        delivery=msgspec.structs.replace(settings.delivery, gateways=list(gateways), **delivery),
    )


@pytest.fixture
def live_settings(settings: Settings, fresh_db: str) -> Settings:
    outbox = GatewayConfig(
        name="outbox", kind="outbox", rate=1e9, secret=SECRET, options={"receipt_delay": 0}
    )
    return with_gateways(
        msgspec.structs.replace(settings, db=msgspec.structs.replace(settings.db, dsn=fresh_db)),
        outbox,
    )


@pytest.fixture
async def live_db(fresh_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the committed database; every statement commits."""
    conn = await asyncpg.connect(fresh_db)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def county_key(live_db: asyncpg.Connection) -> str:
    await make_small_tree(live_db)
    await grant(
        live_db,
        {"000000": 100_000, "510000": 50_000, "510100": 30_000, "510104": 10_000, "510105": 10_000},
    )
    return await make_key(live_db, "510104")


async def live_client(settings: Settings, redis: ArqRedis) -> AsyncIterator[httpx.AsyncClient]:
    assert settings.db.dsn
    pool = PoolDatabase(await create_pool(settings.db, settings.db.dsn))
    app = create_app(settings, db=pool, redis=redis)
    try:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI typing differs
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
            yield client
    finally:
        await pool.close()


@pytest.fixture
async def client(live_settings: Settings, redis: ArqRedis) -> AsyncIterator[httpx.AsyncClient]:
    async for c in live_client(live_settings, redis):
        yield c


@pytest.fixture
def run_worker(live_settings: Settings) -> RunWorker:
    """Run the worker until the queue is empty (burst); returns it for its counters."""

    async def run(settings: Settings | None = None) -> Any:
        worker = build_worker(settings or live_settings, burst=True, handle_signals=False)
        try:
            await worker.main()
        finally:
            await worker.close()
        return worker

    return run


async def audit_clean(conn: asyncpg.Connection) -> list[str]:
    _, problems = await quota.audit(conn, quota.current_period())
    return problems
