from __future__ import annotations

import asyncpg
import httpx

from tests.factories import bearer, make_key, make_small_tree


async def test_me(conn: asyncpg.Connection, client: httpx.AsyncClient) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510100")
    resp = await client.get("/v1/me", headers=bearer(key))
    assert resp.status_code == 200, resp.text
    assert resp.json()["tenant"]["code"] == "510100"
