"""The operation log itself: append-only in the database, read page by page with filters by
whoever administers the tenant (管理), and nobody else."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import httpx
import pytest

from hub.calendar import business_day
from hub.oplog import service as oplog
from tenants.scopes import ALL_SCOPES, Scope
from tenants.service import get_by_code
from tests.factories import bearer, make_key

ADMIN = frozenset({Scope.TENANTS_READ, Scope.TENANTS_WRITE})


async def _tenant_id(conn: asyncpg.Connection, code: str) -> int:
    tenant = await get_by_code(conn, code)
    assert tenant is not None
    return tenant.id


async def test_the_table_refuses_update_delete_and_truncate(
    conn: asyncpg.Connection, tree: None
) -> None:
    county = await _tenant_id(conn, "510104")
    await oplog.record(conn, "cli:root", "quota.set", tenant_id=county, before={"limit": 1})
    # The test's connection is the app's database user (a superuser, even): still refused.
    for statement in (
        "UPDATE operation_log SET actor = 'cli:someone-else'",
        "DELETE FROM operation_log",
        "TRUNCATE operation_log",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            async with conn.transaction():
                await conn.execute(statement)
    assert await conn.fetchval("SELECT actor FROM operation_log") == "cli:root"


async def test_an_entry_keeps_who_when_where_and_the_values(
    conn: asyncpg.Connection, tree: None
) -> None:
    county = await _tenant_id(conn, "510104")
    await oplog.record(
        conn,
        "system:test",
        "quiet_hours.set",
        tenant_id=county,
        object="tenant:510104",
        before={"starts": "22:00"},
        after={"starts": "21:00"},
        detail={"note": "=cmd"},
    )
    row = await conn.fetchrow("SELECT * FROM operation_log")
    assert row is not None
    assert (row["actor"], row["actor_tenant_id"], row["address"]) == ("system:test", None, None)
    assert row["at"] == await conn.fetchval("SELECT hub_now()")


async def _seed(conn: asyncpg.Connection, code: str, n: int) -> None:
    tenant_id = await _tenant_id(conn, code)
    for i in range(n):
        action = "quota.set" if i % 2 else "key.create"
        await oplog.record(conn, f"cli:u{i % 3}", action, tenant_id=tenant_id, object=f"x:{i}")


async def test_the_api_pages_newest_first_and_filters(
    conn: asyncpg.Connection, client: httpx.AsyncClient, tree: None
) -> None:
    await _seed(conn, "510104", 7)
    key = await make_key(conn, "510100", ADMIN)
    url = "/v1/tenants/510104/operations"
    seen: list[str] = []
    after: int | None = None
    while True:
        params = {"limit": 3, **({"after": after} if after else {})}
        page = (await client.get(url, params=params, headers=bearer(key))).json()
        seen += [item["object"] for item in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == [f"x:{i}" for i in reversed(range(7))]

    quota = (await client.get(url, params={"action": "quota."}, headers=bearer(key))).json()
    assert {i["action"] for i in quota["items"]} == {"quota.set"}
    assert len(quota["items"]) == 3
    by_actor = (await client.get(url, params={"actor": "cli:u0"}, headers=bearer(key))).json()
    assert [i["object"] for i in by_actor["items"]] == ["x:6", "x:3", "x:0"]
    # Today in Beijing, whatever the clock says.
    today = business_day()
    day = today.isoformat()
    on = (await client.get(url, params={"from": day, "to": day}, headers=bearer(key))).json()
    assert len(on["items"]) == 7
    yesterday = (today - timedelta(days=1)).isoformat()
    before = (await client.get(url, params={"to": yesterday}, headers=bearer(key))).json()
    assert before["items"] == []


async def test_a_sibling_gets_404_and_a_key_without_tenants_write_403(
    conn: asyncpg.Connection, client: httpx.AsyncClient, tree: None
) -> None:
    await _seed(conn, "510104", 1)
    sibling = await make_key(conn, "510105", ALL_SCOPES)
    reader = await make_key(conn, "510104", ALL_SCOPES - {Scope.TENANTS_WRITE})
    url = "/v1/tenants/510104/operations"
    assert (await client.get(url, headers=bearer(sibling))).status_code == 404
    assert (await client.get(url + ".xlsx", headers=bearer(sibling))).status_code == 404
    refused = await client.get(url, headers=bearer(reader))
    assert refused.status_code == 403
    assert refused.json()["scope"] == "tenants:write"
    own = await make_key(conn, "510104", ADMIN)
    assert (await client.get(url, headers=bearer(own))).status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"actor": "cli:\x00"},
        {"actor": "cli:" + "a" * 5000},
        {"action": "quota." + "x" * 5000},
        {"action": "QUOTA"},
        {"from": "2027-13-01"},
        {"from": "2027-03-17", "to": "2027-03-16"},
        {"after": str(2**64)},
        {"limit": "100000"},
    ],
)
async def test_bad_filters_are_a_clear_4xx(
    conn: asyncpg.Connection, client: httpx.AsyncClient, tree: None, params: dict[str, str]
) -> None:
    key = await make_key(conn, "510104", ADMIN)
    answer = await client.get("/v1/tenants/510104/operations", params=params, headers=bearer(key))
    assert answer.status_code in (400, 422), answer.text
    assert "error" in answer.json()
