"""Keys kept by each API process (tenants.key_cache) never outlive a change to them: a revoked
key, changed scopes or a suspended tenant is dropped on every process as PostgreSQL's NOTIFY
arrives (migration 0044). Real PostgreSQL, committed changes; the cache's expiry is set far
longer than any test, so only the notifications can make these pass."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis

from hub.app import create_app, key_cache
from hub.settings import Settings
from tenants.key_cache import KeyCache, follow_changes
from tenants.keys import parse_token
from tests.factories import bearer, grant, make_key, make_small_tree

LONG = 3600.0  # seconds: longer than any test, so expiry never does the notification's work


@pytest.fixture
async def live_db(fresh_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(fresh_db)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def keys(live_db: asyncpg.Connection) -> dict[str, str]:
    await make_small_tree(live_db)
    await grant(live_db, {"000000": 1000, "510000": 1000, "510100": 1000, "510104": 1000})
    return {code: await make_key(live_db, code) for code in ("000000", "510104", "510105")}


@pytest.fixture
def cached_settings(settings: Settings, fresh_db: str) -> Settings:
    db = msgspec.structs.replace(settings.db, dsn=fresh_db)
    http = msgspec.structs.replace(settings.http, key_cache_seconds=LONG)
    return msgspec.structs.replace(settings, db=db, http=http)


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait (a bounded while) for a notification's effect; not a timing assertion."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


@contextlib.asynccontextmanager
async def _app_client(
    cached_settings: Settings, redis: ArqRedis
) -> AsyncIterator[tuple[httpx.AsyncClient, KeyCache]]:
    """The app with its own pool and key cache (its lifespan opens both), listener connected.
    (Entered in the test's own task: the lifespan's cancel scope must be left where it began.)"""
    app = create_app(cached_settings, redis=redis)
    async with app.lifespan():
        cache: KeyCache = app.state.key_cache
        await _until(lambda: cache.live, "the listener connects")
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
            yield client, cache


@pytest.fixture
async def other_process(fresh_db: str) -> AsyncIterator[KeyCache]:
    """Another API process's cache, following the same channel."""
    cache = KeyCache(LONG)
    ready = asyncio.Event()
    task = asyncio.create_task(follow_changes(fresh_db, cache, retry_seconds=0.05, ready=ready))
    await asyncio.wait_for(ready.wait(), 30)
    try:
        yield cache
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _prefix(key: str) -> str:
    token = parse_token(key)
    assert token is not None
    return token.prefix


async def _cached_on_both(
    client: httpx.AsyncClient, cache: KeyCache, other: KeyCache, key: str
) -> None:
    resp = await client.get("/v1/tenants/510104", headers=bearer(key))
    assert resp.status_code == 200, resp.text
    token = parse_token(key)
    assert token is not None
    who = cache.get(token)
    assert who is not None  # this process keeps it now
    other.put(token, who, other.generation)
    assert other.get(token) is not None


async def test_a_revoked_key_is_refused_on_this_process_and_dropped_on_another(
    cached_settings: Settings, redis: ArqRedis, other_process: KeyCache, keys: dict[str, str]
) -> None:
    async with _app_client(cached_settings, redis) as (client, cache):
        await _revoked(client, cache, other_process, keys)


async def _revoked(
    client: httpx.AsyncClient, cache: KeyCache, other_process: KeyCache, keys: dict[str, str]
) -> None:
    county = keys["510104"]
    await _cached_on_both(client, cache, other_process, county)
    token = parse_token(county)
    assert token is not None
    resp = await client.delete(f"/v1/keys/{_prefix(county)}", headers=bearer(keys["000000"]))
    assert resp.status_code == 204, resp.text
    await _until(lambda: cache.get(token) is None, "this process drops the key")
    await _until(lambda: other_process.get(token) is None, "the other process drops the key")
    refused = await client.get("/v1/tenants/510104", headers=bearer(county))
    assert refused.status_code == 401
    # The other county's key was not touched, and is still served from the cache.
    sibling = parse_token(keys["510105"])
    assert sibling is not None
    assert (
        await client.get("/v1/tenants/510105", headers=bearer(keys["510105"]))
    ).status_code == 200
    assert cache.get(sibling) is not None


async def test_changed_scopes_and_a_suspension_reach_a_cached_key(
    cached_settings: Settings, redis: ArqRedis, live_db: asyncpg.Connection, keys: dict[str, str]
) -> None:
    async with _app_client(cached_settings, redis) as (client, cache):
        await _changed(client, cache, live_db, keys)


async def _changed(
    client: httpx.AsyncClient, cache: KeyCache, live_db: asyncpg.Connection, keys: dict[str, str]
) -> None:
    county = keys["510104"]
    token = parse_token(county)
    assert token is not None
    send = {"to": ["13800138000"], "body": "明早八点开会"}
    sent = await client.post("/v1/messages", json=send, headers=bearer(county))
    assert sent.status_code == 202, sent.text
    assert cache.get(token) is not None
    # Its city suspended: every key below it is dropped ('*'), and the send is refused.
    await live_db.execute("UPDATE tenants SET status = 'suspended' WHERE code = '510100'")
    await _until(lambda: cache.get(token) is None, "the suspension drops the key")
    refused = await client.post("/v1/messages", json=send, headers=bearer(county))
    assert refused.status_code == 403
    assert refused.json()["error"] == "suspended"
    await live_db.execute("UPDATE tenants SET status = 'active' WHERE code = '510100'")
    await _until(lambda: cache.get(token) is None, "the resumption drops the key")
    assert (await client.post("/v1/messages", json=send, headers=bearer(county))).status_code == 202
    # Scopes narrowed behind the API's back: the next request sees them.
    await live_db.execute(
        "UPDATE api_keys SET scopes = '{messages:read}' WHERE prefix = $1", token.prefix
    )
    await _until(lambda: cache.get(token) is None, "the scope change drops the key")
    forbidden = await client.post("/v1/messages", json=send, headers=bearer(county))
    assert forbidden.status_code == 403
    assert forbidden.json()["error"] == "forbidden"


async def test_recording_use_does_not_drop_a_key(
    other_process: KeyCache, live_db: asyncpg.Connection, keys: dict[str, str]
) -> None:
    from tenants.service import Principal

    county, sibling = parse_token(keys["510104"]), parse_token(keys["510105"])
    assert county is not None
    assert sibling is not None
    who = Principal(tenant_id=1, tenant_code="510104", tenant_path="x/", scopes=frozenset())
    other_process.put(county, who, other_process.generation)
    before = other_process.generation
    await live_db.execute(
        "UPDATE api_keys SET last_used_at = now() WHERE prefix = $1", county.prefix
    )
    # Notifications arrive in commit order: once the sibling's revocation is seen, the touch
    # before it would have been too.
    await live_db.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE prefix = $1", sibling.prefix
    )
    await _until(lambda: other_process.generation > before, "the revocation arrives")
    assert other_process.generation == before + 1
    assert other_process.get(county) == who


async def test_a_lost_listener_empties_the_cache_until_it_is_back(
    other_process: KeyCache, live_db: asyncpg.Connection, keys: dict[str, str]
) -> None:
    from tenants.service import Principal

    token = parse_token(keys["510104"])
    assert token is not None
    who = Principal(tenant_id=1, tenant_code="510104", tenant_path="x/", scopes=frozenset())
    other_process.put(token, who, other_process.generation)
    gone = await live_db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )
    assert gone == 1
    await _until(lambda: not other_process.live, "the loss is seen")
    assert other_process.get(token) is None
    await _until(lambda: other_process.live, "the listener is back")
    # Nothing from before the loss survived it.
    assert other_process.get(token) is None


def test_the_cache_expires_checks_the_secret_and_ignores_a_stale_lookup() -> None:
    from tenants.keys import Token
    from tenants.service import Principal

    now = [100.0]
    cache = KeyCache(10, clock=lambda: now[0])
    token = Token(prefix="0" * 12, secret="a" * 48)
    who = Principal(tenant_id=1, tenant_code="510104", tenant_path="x/", scopes=frozenset())
    cache.put(token, who, cache.generation)
    assert cache.get(token) is None  # not live: nothing is kept or served
    cache.connected()
    cache.put(token, who, cache.generation)
    assert cache.get(token) == who
    assert cache.get(Token(prefix=token.prefix, secret="b" * 48)) is None
    now[0] += 10
    assert cache.get(token) is None
    # A lookup that began before a change does not store what it read.
    began = cache.generation
    cache.forget(token.prefix)
    cache.put(token, who, began)
    assert cache.get(token) is None


def test_no_cache_behind_a_transaction_pooler_or_when_switched_off(settings: Settings) -> None:
    assert key_cache(settings) is not None
    pooled = msgspec.structs.replace(settings.db, pooler="transaction")
    assert key_cache(msgspec.structs.replace(settings, db=pooled)) is None
    off = msgspec.structs.replace(settings.http, key_cache_seconds=0)
    assert key_cache(msgspec.structs.replace(settings, http=off)) is None
