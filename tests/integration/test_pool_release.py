"""A pooled connection goes back without asyncpg's reset query (hub.db._nothing_to_reset): no
request leaves anything in its session for the next one to find."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis

from hub.app import create_app
from hub.db import PoolDatabase, create_pool
from hub.exports import files
from hub.settings import Settings
from tests.factories import asgi_scope, bearer, grant, make_key, make_small_tree

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


async def test_a_client_that_stops_reading_an_export_holds_no_connection(
    one_connection: PoolDatabase, settings: Settings, fresh_db: str, redis: ArqRedis
) -> None:
    """An export is written whole before its first byte goes (hub/exports/files.py): a client
    that stops reading mid-download leaves the pool's one connection free. (Streamed as it was
    read, twenty stalled roster downloads took a whole pool from every tenant.) It keeps its
    unit's download slot (and its file) until it goes: its unit's third download at once is
    429, and a slot is free again when a stalled client leaves."""
    setup = await asyncpg.connect(fresh_db)
    try:
        await make_small_tree(setup)
        key = await make_key(setup, "510104")
    finally:
        await setup.close()
    app = create_app(settings, db=one_connection, redis=redis)
    roster = "姓名,手机\n" + "".join(f"党员{n},1380013{n:04d}\n" for n in range(3000))
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI typing differs
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        imported = await client.post(
            "/v1/contacts/import",
            content=roster.encode(),
            headers={**bearer(key), "Content-Type": "text/csv"},
        )
        assert imported.status_code == 200, imported.text

        stalled = [await _stalled_download(app, key) for _ in range(files.EXPORTS_PER_TENANT)]
        try:
            for download in stalled:
                assert b"".join(download.chunks).decode("utf-8-sig").startswith("姓名,手机")
            async with asyncio.timeout(30), one_connection.acquire() as conn:
                assert await conn.fetchval("SELECT count(*) FROM contacts") == 3000
            refused = await client.get("/v1/contacts/export.csv", headers=bearer(key))
            assert refused.status_code == 429, refused.text
            await stalled.pop().leave()
            again = await client.get("/v1/contacts/export.csv", headers=bearer(key))
            assert again.status_code == 200, again.text
            assert again.text.startswith("\ufeff姓名,手机")
        finally:
            for download in stalled:
                await download.leave()


class Stalled(NamedTuple):
    """A roster download whose client took its first chunk and reads no more until it leaves."""

    chunks: list[bytes]
    gone: asyncio.Event
    serving: asyncio.Task[None]

    async def leave(self) -> None:
        """The client goes away: the rest of the answer is dropped, as uvicorn drops what is
        sent to a closed connection, and the answer ends."""
        self.gone.set()
        await asyncio.wait_for(self.serving, 30)


async def _stalled_download(app: Any, key: str) -> Stalled:
    chunks: list[bytes] = []
    stalled, gone = asyncio.Event(), asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not gone.is_set():
            chunks.append(message.get("body", b""))
            stalled.set()
            await gone.wait()  # the answer is still being read from its file

    scope = asgi_scope("GET", "/v1/contacts/export.csv", key)
    serving = asyncio.create_task(app(scope, receive, send))
    await asyncio.wait_for(stalled.wait(), 60)
    return Stalled(chunks, gone, serving)
