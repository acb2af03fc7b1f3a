"""The quota routes: who may read and set what, and what they answer."""

from __future__ import annotations

from datetime import date

import asyncpg
import httpx
import pytest

from hub.quota import service as quota
from tenants.scopes import Scope
from tenants.service import get_by_code
from tests.factories import bearer, make_key, make_small_tree

NOV = date(2026, 11, 1)


async def _root_limit(conn: asyncpg.Connection, limit: int, policy: str = "strict") -> None:
    root = await get_by_code(conn, "000000")
    assert root is not None
    await quota.set_limit(conn, root, NOV, "test", limit=limit, policy=policy)


@pytest.fixture
async def keys(conn: asyncpg.Connection) -> dict[str, str]:
    await make_small_tree(conn)
    await _root_limit(conn, 10_000)
    return {code: await make_key(conn, code) for code in ("000000", "510000", "510100", "510104")}


async def test_parent_sets_child_limit_and_reads_it_back(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    resp = await client.put(
        "/v1/tenants/510000/quota/2026-11",
        json={"limit": 5000, "policy": "pooled"},
        headers=bearer(keys["000000"]),
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["limit"], body["policy"], body["available"], body["opened"]) == (
        5000,
        "pooled",
        5000,
        True,
    )
    grant = await client.put(
        "/v1/tenants/510100/quota/2026-11", json={"limit": 3000}, headers=bearer(keys["510000"])
    )
    assert grant.status_code == 200
    province = (
        await client.get("/v1/tenants/510000/quota/2026-11", headers=bearer(keys["510000"]))
    ).json()
    assert province["allocated"] == 3000
    chengdu = next(c for c in province["children"] if c["code"] == "510100")
    assert (chengdu["limit"], chengdu["opened"], chengdu["policy"]) == (3000, True, "strict")
    zigong = next(c for c in province["children"] if c["code"] == "510300")
    assert (zigong["opened"], zigong["limit"]) == (False, 0)


async def test_a_county_cannot_raise_its_own_limit_or_touch_a_sibling(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    own = await client.put(
        "/v1/tenants/510104/quota/2026-11", json={"limit": 100}, headers=bearer(keys["510104"])
    )
    assert own.status_code == 403
    sibling = await client.put(
        "/v1/tenants/510105/quota/2026-11", json={"limit": 100}, headers=bearer(keys["510104"])
    )
    assert sibling.status_code == 404
    assert sibling.json() == {"error": "not_found", "detail": "tenant not found"}
    parent = await client.get("/v1/tenants/510100/quota/2026-11", headers=bearer(keys["510104"]))
    assert parent.status_code == 404
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM quota_accounts a JOIN tenants t ON t.id = a.tenant_id "
            "WHERE t.code IN ('510104', '510105')"
        )
        == 0
    )


async def test_a_tenant_may_choose_its_own_policy_for_an_unopened_month(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    resp = await client.put(
        "/v1/tenants/510000/quota/2026-11",
        json={"policy": "pooled"},
        headers=bearer(keys["510000"]),
    )
    assert resp.status_code == 200
    assert resp.json()["policy"] == "pooled"
    loosen = await client.put(
        "/v1/tenants/000000/quota/2026-11",
        json={"policy": "pooled"},
        headers=bearer(keys["000000"]),
    )
    assert loosen.status_code == 409  # the root's month is open and strict


async def test_strict_overgrant_answers_409_with_the_numbers(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    resp = await client.put(
        "/v1/tenants/510000/quota/2026-11", json={"limit": 10_001}, headers=bearer(keys["000000"])
    )
    assert resp.status_code == 409
    body = resp.json()
    assert body["error"] == "conflict"
    assert (body["tenant"], body["limit"], body["allocated"], body["requested"]) == (
        "000000",
        10_000,
        0,
        10_001,
    )


@pytest.mark.parametrize(
    "period", ["2026-13", "2026-1", "26-11", "november", "2026-00", "0000-01", "1999-12"]
)
async def test_bad_period_is_422(
    client: httpx.AsyncClient, keys: dict[str, str], period: str
) -> None:
    resp = await client.get(f"/v1/tenants/510000/quota/{period}", headers=bearer(keys["510000"]))
    assert resp.status_code == 422
    assert resp.json()["fields"][0]["key"] == "period"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"limit": -1}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"policy": "loose"}, "policy"),
        ({"limit": 1, "extra": 1}, "extra"),
    ],
)
async def test_bad_body_is_422(
    client: httpx.AsyncClient, keys: dict[str, str], body: dict[str, object], field: str
) -> None:
    resp = await client.put(
        "/v1/tenants/510000/quota/2026-11", json=body, headers=bearer(keys["000000"])
    )
    assert resp.status_code == 422
    assert resp.json()["fields"][0]["key"] == field


async def test_quota_scopes_are_enforced(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    reader = await make_key(conn, "510000", frozenset({Scope.QUOTA_READ}))
    assert (
        await client.get("/v1/tenants/510100/quota/2026-11", headers=bearer(reader))
    ).status_code == 200
    write = await client.put(
        "/v1/tenants/510100/quota/2026-11", json={"limit": 1}, headers=bearer(reader)
    )
    assert write.status_code == 403


async def test_entries_are_paged_oldest_first(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    for limit in (100, 200, 300, 400):
        resp = await client.put(
            "/v1/tenants/510000/quota/2026-11",
            json={"limit": limit},
            headers=bearer(keys["000000"]),
        )
        assert resp.status_code == 200
    seen: list[tuple[str, int]] = []
    after = 0
    while True:
        page = (
            await client.get(
                "/v1/tenants/510000/quota/2026-11/entries",
                params={"after": after, "limit": 2},
                headers=bearer(keys["510000"]),
            )
        ).json()
        seen += [(e["kind"], e["limit_after"]) for e in page["items"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == [("open", 0), ("limit", 100), ("limit", 200), ("limit", 300), ("limit", 400)]
    actors = await conn.fetch(
        "SELECT DISTINCT actor FROM quota_entries "
        "WHERE kind = 'limit' AND cause LIKE 'limit:510000%'"
    )
    assert [r["actor"] for r in actors] == [f"key:{keys['000000'].split('_')[1]}"]


async def test_defaults_are_set_by_an_ancestor_only(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    own = await client.put(
        "/v1/tenants/510100/quota/default",
        json={"monthly_limit": 10},
        headers=bearer(keys["510100"]),
    )
    assert own.status_code == 403
    resp = await client.put(
        "/v1/tenants/510100/quota/default",
        json={"monthly_limit": 800, "policy": "pooled"},
        headers=bearer(keys["510000"]),
    )
    assert resp.status_code == 200
    read = await client.get("/v1/tenants/510100/quota/default", headers=bearer(keys["510100"]))
    assert read.json() == {"tenant": "510100", "monthly_limit": 800, "policy": "pooled"}
    month = await client.get("/v1/tenants/510100/quota/2027-01", headers=bearer(keys["510100"]))
    body = month.json()
    assert (body["opened"], body["limit"], body["policy"]) == (False, 800, "pooled")


async def test_quota_shows_real_subtree_use_and_alerts(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    for code, limit in (("510000", 100), ("510100", 100), ("510104", 100)):
        tenant = await get_by_code(conn, code)
        assert tenant is not None
        await quota.set_limit(conn, tenant, NOV, "test", limit=limit, policy="pooled")
    county = await get_by_code(conn, "510104")
    assert county is not None
    await quota.reserve(conn, county, 85, "send:1", "test", ttl_seconds=60, period=NOV)
    body = (
        await client.get("/v1/tenants/510100/quota/2026-11", headers=bearer(keys["510100"]))
    ).json()
    assert body["subtree"] == {"used": 0, "reserved": 85}
    assert [a["threshold"] for a in body["alerts"]] == [80]
    assert body["reserved"] == 85  # pooled: charged for its county
    county_body = (
        await client.get("/v1/tenants/510104/quota/2026-11", headers=bearer(keys["510104"]))
    ).json()
    assert (county_body["available"], county_body["reserved"]) == (15, 85)
