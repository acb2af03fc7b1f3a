"""A server gone: PostgreSQL stopped answers 503 `unavailable` with Retry-After on every route
(never a 500) and the hub recovers when it is back; Redis stopped still takes sends (202), and
they go out once Redis is back.

Each test starts servers of its own (an embedded PostgreSQL, an embedded Valkey) and stops them
for real: no fake connection errors.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis
from litestar.testing import AsyncTestClient

from hub.app import create_app
from hub.db import PoolDatabase, create_pool, migrate
from hub.embedded import EmbeddedPostgres
from hub.settings import Settings
from tests.factories import bearer, grant, make_key, make_small_tree

ORIGIN = "http://hub.test"


@pytest.fixture
def own_postgres() -> Iterator[tuple[EmbeddedPostgres, str]]:
    """An embedded PostgreSQL of this test's own (stopping the shared one would stop every
    other test), migrated; the server and the DSN of its `hub` database."""
    with tempfile.TemporaryDirectory(prefix="hub-test-gone-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        dsn = server.start()
        try:
            migrate(dsn)
            yield server, dsn
        finally:
            server.stop()


def _on(settings: Settings, dsn: str) -> Settings:
    return msgspec.structs.replace(settings, db=msgspec.structs.replace(settings.db, dsn=dsn))


@pytest.fixture
async def hub_on_own_postgres(
    own_postgres: tuple[EmbeddedPostgres, str], settings: Settings, redis: ArqRedis
) -> AsyncIterator[tuple[EmbeddedPostgres, httpx.AsyncClient, str, str]]:
    """The app on a real pool to that server; the server, a client, a key and a session."""
    server, dsn = own_postgres
    conn = await asyncpg.connect(dsn)
    try:
        await make_small_tree(conn)
        await grant(conn, {"000000": 1000, "510000": 500, "510100": 300, "510104": 100})
        key = await make_key(conn, "510104")
        operator = await make_key(conn, "000000")  # the console takes the operator's keys only
    finally:
        await conn.close()
    local = _on(settings, dsn)
    assert local.db.dsn
    pool = PoolDatabase(await create_pool(local.db, local.db.dsn))
    app = create_app(local, db=pool, redis=redis)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI typing differs
    try:
        async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
            signed = await client.post(
                "/dashboard/login", data={"key": operator}, headers={"Origin": ORIGIN}
            )
            assert signed.status_code == 303, signed.text
            yield server, client, key, signed.cookies["hub_dashboard"]
    finally:
        await pool.close()


async def _answers(client: httpx.AsyncClient, key: str, cookie: str) -> list[httpx.Response]:
    auth = bearer(key)
    client.cookies.set("hub_dashboard", cookie)
    return [
        await client.get("/v1/me", headers=auth),
        await client.get("/v1/tenants/510104", headers=auth),
        await client.get("/v1/tenants/510104/quota/" + _month(), headers=auth),
        await client.post(
            "/v1/messages", json={"to": ["13800138000"], "body": "通知"}, headers=auth
        ),
        await client.get("/readyz"),
        await client.get("/dashboard/t/510104"),
    ]


def _month() -> str:
    from hub.calendar import current_period, period_text

    return period_text(current_period())


async def test_postgres_gone_is_503_everywhere_and_the_hub_recovers(
    hub_on_own_postgres: tuple[EmbeddedPostgres, httpx.AsyncClient, str, str],
) -> None:
    server, client, key, cookie = hub_on_own_postgres
    before = await _answers(client, key, cookie)
    assert [r.status_code for r in before] == [200, 200, 200, 202, 200, 200]

    # The pool holds open connections: the server going away breaks them too.
    await asyncio.to_thread(server.stop)
    gone = await _answers(client, key, cookie)
    assert [r.status_code for r in gone] == [503] * 6, [r.text for r in gone]
    assert all(r.headers.get("Retry-After") for r in gone)
    for api in gone[:4]:
        assert api.json()["error"] == "unavailable", api.text
        assert "PostgreSQL" in api.json()["detail"]
    assert gone[4].json()["checks"]["postgres"] != "ok"
    page = gone[5]
    assert page.headers["content-type"].startswith("text/html")
    assert "暂时无法服务" in page.text

    await asyncio.to_thread(server.start)
    after = await _answers(client, key, cookie)
    assert [r.status_code for r in after] == [200, 200, 200, 202, 200, 200], [r.text for r in after]


async def test_the_hub_starts_while_postgres_is_down_and_answers_503_until_it_is_up(
    own_postgres: tuple[EmbeddedPostgres, str], settings: Settings
) -> None:
    server, dsn = own_postgres
    await asyncio.to_thread(server.stop)
    assert settings.redis.dsn
    app = create_app(_on(settings, dsn))  # its own pool and Redis, opened at start-up
    async with AsyncTestClient(app) as client:
        down = await client.get("/v1/tenants/510104", headers=bearer("hub_x_y"))
        assert down.status_code == 503, down.text
        assert down.json()["error"] == "unavailable"
        assert down.headers.get("Retry-After")
        assert (await client.get("/readyz")).status_code == 503

        await asyncio.to_thread(server.start)
        conn = await asyncpg.connect(dsn)
        try:
            await make_small_tree(conn)
            key = await make_key(conn, "510104")
        finally:
            await conn.close()
        up = await client.get("/v1/tenants/510104", headers=bearer(key))
        assert up.status_code == 200, up.text


def test_stop_finds_the_server_an_interrupted_start_left(
    own_postgres: tuple[EmbeddedPostgres, str],
) -> None:
    """A start() cut short (Ctrl-C or SIGTERM while `hub up` starts) after the package started
    the server never marked it started: stop() still stops it, as the data dir's owner."""
    server, _ = own_postgres
    assert server.running()
    EmbeddedPostgres(server.pgdata.parent).stop()  # knows nothing but the data dir
    assert not server.running()
