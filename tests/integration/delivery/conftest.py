"""Delivery tests: a committed database (the worker has its own connections), the app on a real
pool, and an in-process arq worker run in burst mode."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import uvicorn
from arq.connections import ArqRedis
from arq.worker import Worker

from hub import calendar
from hub.app import create_app
from hub.db import PoolDatabase, create_pool
from hub.delivery import service
from hub.quota import service as quota
from hub.settings import GatewayConfig, Settings
from hub.worker import build_worker
from tests.conftest import HubDb
from tests.factories import grant, make_key, make_small_tree

SECRET = "s3cret-for-tests"
RunWorker = Callable[..., Awaitable[Any]]


def with_gateways(settings: Settings, *gateways: GatewayConfig, **delivery: Any) -> Settings:
    return msgspec.structs.replace(
        settings,
        delivery=msgspec.structs.replace(settings.delivery, gateways=list(gateways), **delivery),
    )


@pytest.fixture
def live_settings(settings: Settings, hub_db: HubDb) -> Settings:
    """The hub's settings on the committed database: straight, or through PgBouncer for a test
    parametrized so (tests/conftest.py `hub_db`)."""
    outbox = GatewayConfig(
        name="outbox", kind="outbox", rate=1e9, secret=SECRET, options={"receipt_delay": 0}
    )
    db = msgspec.structs.replace(settings.db, dsn=hub_db.dsn, pooler=hub_db.pooler)
    return with_gateways(
        msgspec.structs.replace(settings, db=db),
        outbox,
        webhooks_private_ok=True,  # the tests' webhook receivers listen on loopback
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
        # No crons: a burst does what was queued, not a sweep that falls due meanwhile.
        worker = build_worker(
            settings or live_settings, burst=True, handle_signals=False, crons=False
        )
        try:
            await worker.main()
        finally:
            await worker.close()
        return worker

    return run


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, *, crons: bool = True) -> AsyncIterator[Worker]:
    """A worker that keeps running (receipts keep arriving on its gateway connections)."""
    worker = build_worker(settings, handle_signals=False, crons=crons)
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        if worker.main_task is not None:
            worker.main_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # Let the jobs still running end first: arq's close cancels them, and one cancelled
        # makes it raise before it closes its pool and the gateways (left for the next test's
        # setup to trip over as unclosed sockets).
        running = [t for t in worker.tasks.values() if not t.done()]
        if running:
            await asyncio.wait(running, timeout=60)
        await worker.close()


async def sweep_once(settings: Settings, redis: ArqRedis) -> dict[str, int]:
    """The sweeper's round, on a pool of its own."""
    assert settings.db.dsn
    db = PoolDatabase(await create_pool(settings.db, settings.db.dsn))
    try:
        return await service.sweep(db, redis, settings.delivery)
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def started_delivery(settings: Settings, redis: ArqRedis) -> AsyncIterator[service.Delivery]:
    """A worker's delivery on a pool of its own, its gateways started; closing it waits (a
    minute at most) for the outbox's reports."""
    assert settings.db.dsn
    db = PoolDatabase(await create_pool(settings.db, settings.db.dsn))
    try:
        delivery = service.Delivery(settings, db, redis)
        await delivery.start()
        try:
            yield delivery
        finally:
            await asyncio.wait_for(delivery.close(), 60)
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def serving_hub(settings: Settings, redis: ArqRedis, port: int) -> AsyncIterator[str]:
    """The hub's API on a real port (peers call it back); its base URL."""
    assert settings.db.dsn
    pool = PoolDatabase(await create_pool(settings.db, settings.db.dsn))
    app = create_app(settings, db=pool, redis=redis)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, patience=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        await pool.close()


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], patience: float = 60, every: float = 0.1
) -> None:
    """Poll `check` until it holds; fail after `patience` seconds (PostgreSQL, a peer and a
    server starting offer nothing to wait on but polling)."""
    async with asyncio.timeout(patience):
        while True:
            result = check()
            if await result if inspect.isawaitable(result) else result:
                return
            await asyncio.sleep(every)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def statuses(conn: asyncpg.Connection, send_id: int) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT status::text, count(*) AS n FROM messages WHERE send_id = $1 GROUP BY 1", send_id
    )
    return {r["status"]: r["n"] for r in rows}


async def wait_statuses(
    conn: asyncpg.Connection, send_id: int, expected: dict[str, int], patience: float = 60
) -> None:
    """Poll until the send's messages have exactly these statuses (fails after `patience`)."""

    async def reached() -> bool:
        return await statuses(conn, send_id) == expected

    await eventually(reached, patience)


async def audit_clean(conn: asyncpg.Connection) -> list[str]:
    _, problems = await quota.audit(conn, calendar.current_period())
    return problems
