"""PostgreSQL access: the pool, one transaction per request, and migrations.

Request handlers receive `conn`, an asyncpg connection inside a transaction that commits when the
handler (and the response's serialisation) succeeds and rolls back on any exception. Services
take that connection as their first argument and never commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from alembic.config import Config
from litestar.datastructures import State

from alembic import command
from hub import calendar
from hub.settings import DbSettings

log = logging.getLogger("hub.db")

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent


class Database(Protocol):
    """Where connections come from: a pool in production, one connection in tests."""

    def acquire(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]: ...

    async def close(self) -> None: ...


class PoolDatabase:
    """An asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn:
            # A pool hands out a proxy that behaves as the connection it wraps.
            yield cast(asyncpg.Connection, conn)

    async def close(self) -> None:
        await self.pool.close()


class SingleConnectionDatabase:
    """Hands out one connection, one borrower at a time.

    Tests wrap a connection that sits inside a transaction they roll back; each request's
    `conn.transaction()` then becomes a savepoint inside it, so a test sees the request's writes
    and leaves nothing behind.
    """

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._lock:
            yield self.conn

    async def close(self) -> None:
        """The connection belongs to the caller."""


# What PostgreSQL answers when two transactions cannot both go on: a deadlock it broke, or a
# serialization failure. Doing the work again (from a savepoint) is the remedy; the API answers
# one that persists with 503 `busy` and Retry-After (hub.errors), never a 500.
TRANSIENT = asyncpg.exceptions.TransactionRollbackError


# What means "PostgreSQL is unreachable right now" rather than "this request is wrong": the API
# answers these with 503 `unavailable` and Retry-After (hub.errors, the dashboard's pages too),
# and a worker's job waits and runs again (hub.worker). Nothing here is a bug of ours.
UNREACHABLE: tuple[type[Exception], ...] = (
    # Refused, no socket file, reset, no route; TimeoutError (a connect or pool-acquire timeout)
    # is an OSError too.
    OSError,
    # Class 08: the connection broke mid-query or never formed.
    asyncpg.exceptions.PostgresConnectionError,
    # Starting up, shutting down, in recovery (57P03).
    asyncpg.exceptions.CannotConnectNowError,
    # The server was told to stop (57P01), or restarts after a backend crashed (57P02).
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    # max_connections reached: no fault in the request, and a moment later there is room.
    asyncpg.exceptions.TooManyConnectionsError,
)
# asyncpg's InterfaceError also means misuse (two queries at once on one connection); only
# these words say the connection is gone.
_CLOSED = ("connection is closed", "underlying connection is closed", "pool is closing")
# A pooled connection idle when PostgreSQL shut down (a restart, a failover) is sent an
# unasked FATAL ("terminating connection due to administrator command") just before the socket
# closes. asyncpg, expecting nothing, puts the connection in its "consume an error" state (2),
# and a request that takes it from the pool in between fails at its first query with this
# InternalClientError; releasing it then drops it from the pool. Misuse shows another state
# (the number of the operation in flight), so only state 2 means "gone".
_SHUT_DOWN_WHILE_IDLE = "another operation (2) is in progress"


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says PostgreSQL cannot be reached (see UNREACHABLE)."""
    if isinstance(exc, UNREACHABLE):
        return True
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        return _SHUT_DOWN_WHILE_IDLE in str(exc)
    return isinstance(exc, asyncpg.exceptions.InterfaceError) and any(
        words in str(exc) for words in _CLOSED
    )


# How many times a transient failure is tried (hub.db.retrying; quota_take in PostgreSQL).
RETRY_ATTEMPTS = 5


async def retrying(
    conn: asyncpg.Connection, work: Callable[[], Awaitable[T]], attempts: int = RETRY_ATTEMPTS
) -> T:
    """`work()` in a savepoint, done again after a short random pause when PostgreSQL rolled it
    back as TRANSIENT: the rollback to the savepoint releases what it locked, so the other
    transaction goes on, and the caller's earlier work in its transaction stays."""
    for attempt in range(attempts):
        try:
            async with conn.transaction():
                return await work()
        except TRANSIENT:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(random.uniform(0.005, 0.02 * 2**attempt))
    raise AssertionError("unreachable")


async def create_pool(settings: DbSettings, dsn: str) -> asyncpg.Pool:
    """A pool whose connections open within `connect_timeout` seconds. PostgreSQL unreachable
    at start-up is no reason not to start: the pool then opens its connections as work comes
    (each request answered 503 `unavailable` until PostgreSQL is back).

    Behind a transaction pooler (`pooler = "transaction"`) each transaction may run on another
    server connection, and nothing a session keeps lasts from one to the next (see
    `pooled_options`)."""
    timeout_ms = int(settings.statement_timeout * 1000)
    options: dict[str, Any] = {
        "server_settings": {
            "statement_timeout": str(timeout_ms),
            "timezone": "UTC",
            **calendar.CLOCK.server_settings(),
        },
        "reset": _nothing_to_reset,
    }
    if settings.pooler == "transaction":
        options = {**pooled_options(), "reset": _nothing_to_reset}

    async def pool(min_size: int) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=settings.pool_max,
            timeout=settings.connect_timeout,
            **options,
        )

    try:
        created = await pool(min(settings.pool_min, settings.pool_max))
    except Exception as exc:
        if not unreachable(exc):
            raise
        log.warning("PostgreSQL unreachable at start-up (%r): connecting as work comes", exc)
        return await pool(0)
    if settings.pooler == "transaction":
        await _check_pooled_settings(created, timeout_ms)
    return created


def pooled_options() -> dict[str, Any]:
    """asyncpg's connection options for a DSN that goes through a transaction pooler (PgBouncer
    1.18 in pool_mode = transaction), which hands each transaction whichever server connection
    is free:

    - No statement cache: a statement asyncpg keeps prepared on one server connection is
      missing on the next ("prepared statement __asyncpg_stmt_…__ does not exist"), and one
      left behind on a server connection clashes with another process's of the same name.
      Each statement then goes unnamed, parsed again beside its Bind. `fetch_planned`'s
      `prepare()` goes unnamed too, in its request's transaction.
    - At login only `timezone`, a setting PgBouncer keeps for each client and sets on the
      server connection that serves it. It refuses any other (`unsupported startup
      parameter`), and `ignore_startup_parameters` would drop them silently: statement_timeout
      and the clock's shift (`hub.clock_offset`) come from the role or the database instead
      (`ALTER ROLE hub SET statement_timeout = '30s'`); `create_pool` checks them.
    - (`create_pool` adds:) no reset when a connection goes back to the pool. asyncpg's
      (`RESET ALL`, `UNLISTEN *`, `pg_advisory_unlock_all()`…) would run on whichever server
      connection is free then, not the one the transaction used, and cost a round trip each
      time. The hub keeps no session state (advisory locks are transaction-scoped, SETs are
      LOCAL, the dedup scratch table is created and emptied in the transaction that uses it),
      so there is nothing to undo.
    """
    return {"statement_cache_size": 0, "server_settings": {"timezone": "UTC"}}


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """What a connection going back to the pool needs beyond asyncpg's own rollback of a
    transaction left open (and its dropping of listeners), which runs before this: nothing.

    asyncpg's default reset (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`) costs
    a round trip on every release, three per send (the key check, the send, its enqueue), and
    undoes only session state the hub never makes: its advisory locks are transaction-scoped,
    its SETs are LOCAL, it LISTENs on connections of its own (never pooled ones), its cursors
    live in transactions, and the dedup scratch table is ON COMMIT DELETE ROWS
    (tests/integration/test_pool_release.py holds that). Behind a transaction pooler the session
    is not even the connection's to reset."""


# What a pooled connection finds for the settings it could not send at login. Each process
# computes the clock's shift when it starts (HUB_CLOCK__START): within a second is the same.
_POOLED_SETTINGS = """
SELECT extract(epoch FROM current_setting('statement_timeout')::interval) * 1000 AS timeout_ms,
       abs(extract(epoch FROM coalesce(nullif(current_setting('hub.clock_offset', true), ''),
                                       '0')::interval - $1::text::interval)) < 1 AS same_clock
"""


async def _check_pooled_settings(pool: asyncpg.Pool, timeout_ms: int) -> None:
    """Warn when the role or database behind the pooler does not carry the hub's
    statement_timeout or clock shift (they cannot be sent at login through it)."""
    shift = calendar.CLOCK.server_settings().get(calendar.OFFSET_SETTING, "0")
    async with pool.acquire() as conn:
        found = await conn.fetchrow(_POOLED_SETTINGS, shift)
    assert found is not None
    if int(found["timeout_ms"]) != timeout_ms:
        log.warning(
            "behind the pooler, statement_timeout is %d ms, not the %d ms HUB_DB__STATEMENT_TIMEOUT"
            " says: run ALTER ROLE <the hub's role> SET statement_timeout = '%dms'",
            int(found["timeout_ms"]),
            timeout_ms,
            timeout_ms,
        )
    if not found["same_clock"]:
        log.warning(
            "behind the pooler, the database's %s is not the hub clock's shift (%s): "
            "run ALTER DATABASE <the hub's database> SET %s = '%s'",
            calendar.OFFSET_SETTING,
            shift,
            calendar.OFFSET_SETTING,
            shift,
        )


async def create_read_pool(settings: DbSettings) -> asyncpg.Pool | None:
    """The pool of the hot standby that serves reads which may lag (`HUB_DB__READ_DSN`,
    hub.reads), its connections opened as the primary's are (create_pool: the same timeouts,
    time zone and hub clock); None when no standby is set."""
    if not settings.read_dsn:
        return None
    return await create_pool(settings, settings.read_dsn)


async def fetch_planned(
    conn: asyncpg.Connection, query: str, *args: object
) -> list[asyncpg.Record]:
    """`query`'s rows, planned for these very arguments.

    asyncpg keeps each query as a prepared statement per connection, and PostgreSQL plans a
    prepared statement once for any arguments (a generic plan) from its sixth run on whenever
    it estimates that plan no dearer than the ones it made so far. For a list with optional
    filters (`$4 IS NULL OR actor = $4`, a time window, a tag) that estimate is blind: the
    console's operation log went from 12 ms to 400 ms on a connection that had served a few
    filtered pages first (ops/bench/console_pages.py). Such a list runs here as a statement of
    its own, prepared afresh and so always planned for its arguments: one more round trip and
    a fraction of a millisecond of planning. (Behind a transaction pooler the statement is
    unnamed, `pooled_options`, and lives only in the caller's transaction.)
    """
    statement = await conn.prepare(query)
    return await statement.fetch(*args)


async def provide_connection(state: State) -> AsyncIterator[asyncpg.Connection]:
    """Litestar yield dependency: one transaction per request."""
    db: Database = state.db
    async with db.acquire() as conn, conn.transaction():
        yield conn


def run_script(script: str) -> None:
    """Run a migration's SQL script: several statements at once, on the asyncpg connection.

    SQLAlchemy's asyncpg dialect prepares every statement, and a prepared statement holds one
    command; asyncpg's own `execute` without arguments uses the simple protocol, which takes many.
    """
    from sqlalchemy.util import await_only

    from alembic import op

    raw: Any = op.get_bind().connection.driver_connection
    await_only(raw.execute(script))


def sql_file(relative: str) -> str:
    """The text of an SQL file kept in a domain (e.g. `hub/quota/sql/reserve.sql`)."""
    return (ROOT / relative).read_text(encoding="utf-8")


def with_database(dsn: str, database: str) -> str:
    """The same server's DSN, naming another database (Unix-socket DSNs included)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def create_database(admin_dsn: str, name: str, template: str = "template0") -> str:
    """(Re)create database `name` on the server of `admin_dsn` from `template`; its DSN."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()
    return with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def alembic_config(dsn: str) -> Config:
    cfg = Config(toml_file=str(ROOT / "pyproject.toml"))
    cfg.attributes["dsn"] = dsn
    return cfg


def migrate(dsn: str, revision: str = "head") -> None:
    """Upgrade the database to `revision` (blocking; call from a thread inside an event loop)."""
    command.upgrade(alembic_config(dsn), revision)


def downgrade(dsn: str, revision: str) -> None:
    command.downgrade(alembic_config(dsn), revision)


async def in_turns(rows: Iterable[T], every: int = 250) -> AsyncIterator[T]:
    """`rows`, letting the event loop serve other requests after every `every` of them.

    asyncpg encodes a plain iterable's rows without pause, so a million-row COPY (and the work
    that generates its rows) would stall every other request of the process for seconds; so
    would a walk over a million-recipient body's strings.
    """
    for n, row in enumerate(rows, 1):
        yield row
        if n % every == 0:
            await asyncio.sleep(0)
