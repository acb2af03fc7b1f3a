"""Alembic environment: hand-written SQL migrations run over asyncpg.

The DSN comes from `config.attributes["dsn"]` (set by `hub.db.migrate`) or from the `HUB_DB__DSN`
setting. SQLAlchemy is only the carrier Alembic needs; the connection itself is asyncpg's, so any
DSN asyncpg accepts (Unix sockets included) works here.
"""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from hub.settings import load_settings

config = context.config


def _dsn() -> str:
    dsn = config.attributes.get("dsn") or load_settings().db.dsn
    if not dsn:
        raise SystemExit("no database: set HUB_DB__DSN or run migrations through `hub migrate`")
    return str(dsn)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    dsn = _dsn()

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    engine = create_async_engine("postgresql+asyncpg://", async_creator=connect)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: the migrations are plain SQL already")
asyncio.run(_run_async())
