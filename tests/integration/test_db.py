"""One transaction per request: a handler that writes and then fails leaves nothing behind."""

from __future__ import annotations

import asyncpg
import httpx
from litestar import Litestar, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from hub.db import SingleConnectionDatabase, provide_connection
from hub.errors import Conflict, exception_handlers

Conn = NamedDependency[asyncpg.Connection]


@post("/write-then-fail")
async def write_then_fail(conn: Conn) -> None:
    await conn.execute(
        "INSERT INTO tenants (code, name, level, path, depth, signature) "
        "VALUES ('999000', 'x', 'hub', '999000/', 0, 'xx')"
    )
    raise Conflict("changed my mind")


@post("/write")
async def write(conn: Conn) -> None:
    await conn.execute(
        "INSERT INTO tenants (code, name, level, path, depth, signature) "
        "VALUES ('999001', 'x', 'hub', '999001/', 0, 'xx')"
    )


def _app(conn: asyncpg.Connection) -> Litestar:
    return Litestar(
        [write_then_fail, write],
        dependencies={"conn": Provide(provide_connection)},
        exception_handlers=exception_handlers(),
        state=State({"db": SingleConnectionDatabase(conn)}),
    )


async def _client(conn: asyncpg.Connection) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=_app(conn))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://hub.test")


async def test_error_after_a_write_rolls_the_write_back(conn: asyncpg.Connection) -> None:
    async with await _client(conn) as client:
        resp = await client.post("/write-then-fail")
    assert resp.status_code == 409
    assert resp.json() == {"error": "conflict", "detail": "changed my mind"}
    assert await conn.fetchval("SELECT count(*) FROM tenants WHERE code = '999000'") == 0


async def test_success_commits(conn: asyncpg.Connection) -> None:
    async with await _client(conn) as client:
        resp = await client.post("/write")
    assert resp.status_code == 201
    assert await conn.fetchval("SELECT count(*) FROM tenants WHERE code = '999001'") == 1
