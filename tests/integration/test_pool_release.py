"""A pooled connection goes back without asyncpg's reset query (hub.db._nothing_to_reset): no
request leaves anything in its session for the next one to find."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis

from hub.app import create_app
from hub.db import PoolDatabase, create_pool
from hub.settings import Settings
from tests.factories import bearer, grant, make_key, make_small_tree

# Session state a request could leave behind, each counted on the connection itself. (asyncpg
# sets `jit` off while it introspects a type, and back as it was: a session setting of the
# value it had, which is no difference.)
LEFT_BEHIND = """
SELECT (SELECT count(*) FROM pg_settings WHERE source = 'session' AND setting <> reset_val)
           AS settings,
       (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())
           AS advisory_locks,
       (SELECT count(*) FROM pg_cursors) AS cursors,  -- this query's own portal among them
       (SELECT count(*) FROM pg_listening_channels()) AS channels,
       (SELECT count(*) FROM pg_prepared_xacts) AS prepared,
       pg_backend_pid() AS pid
"""


@pytest.fixture
async def one_connection(settings: Settings, fresh_db: str) -> AsyncIterator[PoolDatabase]:
    """The hub's pool on the committed database, one connection: every request reuses it."""
    db = msgspec.structs.replace(settings.db, dsn=fresh_db, pool_min=1, pool_max=1)
    pool = PoolDatabase(await create_pool(db, fresh_db))
    try:
        yield pool
    finally:
        await pool.close()


async def _state(db: PoolDatabase) -> dict[str, int]:
    async with db.acquire() as conn:
        assert not conn.is_in_transaction()
        found = await conn.fetchrow(LEFT_BEHIND)
        assert found is not None
        if await conn.fetchval("SELECT to_regclass('pg_temp.send_content_keys')") is not None:
            left = await conn.fetchval("SELECT count(*) FROM pg_temp.send_content_keys")
            assert left == 0, "the dedup scratch table kept rows"
        return dict(found)


async def test_requests_leave_no_session_state_on_the_pooled_connection(
    one_connection: PoolDatabase, settings: Settings, fresh_db: str, redis: ArqRedis
) -> None:
    setup = await asyncpg.connect(fresh_db)
    try:
        await make_small_tree(setup)
        await grant(setup, {"000000": 100, "510000": 100, "510100": 100, "510104": 3})
        key = await make_key(setup, "510104")
    finally:
        await setup.close()
    before = await _state(one_connection)
    app = create_app(settings, db=one_connection, redis=redis)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI typing differs
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        headers = {**bearer(key), "Idempotency-Key": "first"}
        sent = await client.post(
            "/v1/messages", json={"to": ["13800138000"], "body": "明早八点开会"}, headers=headers
        )
        assert sent.status_code == 202, sent.text
        replayed = await client.post(
            "/v1/messages", json={"to": ["13800138000"], "body": "明早八点开会"}, headers=headers
        )
        assert replayed.headers.get("Idempotent-Replayed") == "true"
        # A send that fails after it wrote (quota runs out at its reservation): rolled back.
        refused = await client.post(
            "/v1/messages",
            json={"to": [f"1380013{n:04d}" for n in range(5)], "body": "通知"},
            headers=bearer(key),
        )
        assert refused.status_code == 429, refused.text
        listed = await client.get("/v1/messages", headers=bearer(key))
        assert listed.status_code == 200
    after = await _state(one_connection)
    # The same session served them all (nothing replaced it), and it is as it was.
    assert after == before
    assert after == {**after, "settings": 0, "advisory_locks": 0, "channels": 0}


async def test_a_transaction_left_open_is_rolled_back_before_the_next_borrower(
    one_connection: PoolDatabase,
) -> None:
    async def fail_inside_a_transaction() -> None:
        async with one_connection.acquire() as conn:
            await conn.execute("BEGIN")  # unmanaged, as a bug would leave it
            await conn.execute("SELECT pg_advisory_xact_lock(42)")
            await conn.execute("CREATE TEMP TABLE left_behind (x int)")
            await conn.execute("SET LOCAL statement_timeout = '1ms'")
            raise ZeroDivisionError

    before = await _state(one_connection)
    with pytest.raises(ZeroDivisionError):
        await fail_inside_a_transaction()
    async with one_connection.acquire() as conn:
        assert await conn.fetchval("SELECT to_regclass('pg_temp.left_behind')") is None
        assert await conn.fetchval("SHOW statement_timeout") != "1ms"
    assert await _state(one_connection) == before


async def test_release_sends_no_reset_query(one_connection: PoolDatabase) -> None:
    """What the round trip saved means: a session setting made outside any transaction (which
    the hub never makes) would outlive its borrower. The test above holds that none is made."""
    async with one_connection.acquire() as conn:
        await conn.execute("SET application_name = 'borrower one'")
    async with one_connection.acquire() as conn:
        assert await conn.fetchval("SHOW application_name") == "borrower one"
        await conn.execute("RESET application_name")
