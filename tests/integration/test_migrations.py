"""Migrations go up, all the way down, and up again on a fresh database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from hub.db import create_database, downgrade, drop_database, migrate
from tests.conftest import RUN_ID, WORKER


@pytest.fixture
async def empty_db(pg_admin_dsn: str) -> AsyncIterator[str]:
    name = f"hub_mig_{RUN_ID}_{WORKER}"
    yield await create_database(pg_admin_dsn, name)
    await drop_database(pg_admin_dsn, name)


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_up_down_up(empty_db: str) -> None:
    await asyncio.to_thread(migrate, empty_db)
    up = await _tables(empty_db)
    assert {"tenants", "api_keys", "alembic_version"} <= up

    await asyncio.to_thread(downgrade, empty_db, "base")
    assert await _tables(empty_db) == {"alembic_version"}

    await asyncio.to_thread(migrate, empty_db)
    assert await _tables(empty_db) == up
