"""The operation log's tests: the small tree with quota, webhooks to loopback allowed."""

from __future__ import annotations

import asyncpg
import pytest

from hub.settings import Settings, load_settings
from tests.factories import grant_ahead, make_small_tree


@pytest.fixture
def settings(db_dsn: str, redis_dsn: str) -> Settings:
    return load_settings(
        {
            "HUB_DB__DSN": db_dsn,
            "HUB_REDIS__DSN": redis_dsn,
            "HUB_MESSAGES__QUIET_HOURS": "false",
            "HUB_DELIVERY__WEBHOOKS_PRIVATE_OK": "true",
        }
    )


@pytest.fixture
async def tree(conn: asyncpg.Connection) -> None:
    await make_small_tree(conn)
    await grant_ahead(conn, {"000000": 10_000, "510000": 1_000, "510100": 500, "510104": 100})
