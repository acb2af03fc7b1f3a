"""The compose page's tag counts (hub.contacts.service.tag_counts) read from `contact_tags`,
which statement triggers keep (migration 0035): after every kind of roster change they equal
the distinct phones counted from the rows, for a tenant and for its subtree, phones shared by
several rosters counted once."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from hub.contacts import service as contacts
from tenants.repository import TenantRow
from tenants.service import get_by_code
from tests.factories import bearer, make_key, make_small_tree

# The phones a tag reaches in the roster of path $1 (with $2, its subtree), from the rows.
COUNTED = """
SELECT tag, count(DISTINCT c.phone)::bigint AS phones
FROM contacts c JOIN tenants t ON t.id = c.tenant_id, unnest(c.tags) AS tag
WHERE (CASE WHEN $2 THEN t.path >= $1 AND t.path < $1 || '~' ELSE t.path = $1 END)
GROUP BY tag ORDER BY tag
"""


async def _import(client: httpx.AsyncClient, key: str, csv: str) -> None:
    answer = await client.post(
        "/v1/contacts/import",
        content=csv.encode(),
        headers={**bearer(key), "Content-Type": "text/csv"},
    )
    assert answer.status_code == 200, answer.text


async def _agree(conn: asyncpg.Connection, codes: tuple[str, ...]) -> dict[str, int]:
    """Every tenant's and subtree's counts equal the rows'; the county's subtree counts."""
    for code in codes:
        tenant = await get_by_code(conn, code)
        assert tenant is not None
        for subtree in (False, True):
            read = await contacts.tag_counts(conn, tenant, subtree)
            rows = [
                (r["tag"], r["phones"]) for r in await conn.fetch(COUNTED, tenant.path, subtree)
            ]
            assert read == rows, (code, subtree)
    county = await get_by_code(conn, "510104")
    assert county is not None
    return dict(await contacts.tag_counts(conn, county, subtree=True))


@pytest.fixture
async def keys(conn: asyncpg.Connection) -> dict[str, str]:
    await make_small_tree(conn)
    return {code: await make_key(conn, code) for code in ("510104", "510104001", "510105")}


CODES = ("510000", "510100", "510104", "510104001", "510105")


async def test_counts_follow_imports_edits_and_deletes(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await _import(
        client,
        keys["510104"],
        "姓名,手机,标签\n"
        "张三,13800138000,书记、书记、副科级以上\n"  # a tag listed twice counts once
        "李四,13800138001,书记\n"
        "王五,13800138002,\n",
    )
    # The street office holds 张三 too (shared: counted once in the county's subtree), and the
    # sibling county holds 李四 (outside the county's subtree).
    await _import(
        client, keys["510104001"], "姓名,手机,标签\n张三,13800138000,书记\n赵六,13900139000,书记\n"
    )
    await _import(client, keys["510105"], "姓名,手机,标签\n李四,13800138001,书记\n")
    assert await _agree(conn, CODES) == {"书记": 3, "副科级以上": 1}

    # Re-importing changes tags in place (the upsert's UPDATE) and adds a contact (its INSERT).
    await _import(
        client,
        keys["510104"],
        "姓名,手机,标签\n张三,13800138000,大学生村官\n孙七,13700137000,书记、大学生村官\n",
    )
    assert await _agree(conn, CODES) == {"书记": 4, "大学生村官": 2}  # 李四 stays

    found = await contacts.list_contacts(
        conn, await _tenant(conn, "510104001"), 0, 10, None, "张三"
    )
    shared_id = found.items[0].id
    edited = await client.patch(
        f"/v1/contacts/{shared_id}",
        json={"tags": ["副科级以上"]},
        headers=bearer(keys["510104001"]),
    )
    assert edited.status_code == 200, edited.text
    assert await _agree(conn, CODES) == {"书记": 3, "大学生村官": 2, "副科级以上": 1}

    gone = await client.delete(f"/v1/contacts/{shared_id}", headers=bearer(keys["510104001"]))
    assert gone.status_code == 204
    assert await _agree(conn, CODES) == {"书记": 3, "大学生村官": 2}


async def test_a_tag_no_contact_carries_any_more_is_not_listed(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await _import(client, keys["510104"], "姓名,手机,标签\n张三,13800138000,流动党员\n")
    await _import(client, keys["510104"], "姓名,手机,标签\n张三,13800138000,书记\n")
    assert await _agree(conn, CODES) == {"书记": 1}
    zero = await conn.fetchval("SELECT contacts FROM contact_tags WHERE tag = '流动党员'")
    assert zero == 0  # kept at 0, never listed


async def _tenant(conn: asyncpg.Connection, code: str) -> TenantRow:
    tenant = await get_by_code(conn, code)
    assert tenant is not None
    return tenant
