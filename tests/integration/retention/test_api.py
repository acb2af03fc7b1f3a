"""GET/PUT /v1/tenants/{code}/retention: a tenant's own, shorter period for its messages."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from tenants.scopes import Scope
from tests.factories import bearer, make_key, make_small_tree

URL = "/v1/tenants/{}/retention"


@pytest.fixture
async def keys(conn: asyncpg.Connection) -> dict[str, str]:
    await make_small_tree(conn)
    return {
        "city": await make_key(conn, "510100"),
        "county": await make_key(conn, "510104"),
        "guizhou": await make_key(conn, "520000"),
        "reader": await make_key(conn, "510100", frozenset({Scope.TENANTS_READ})),
    }


async def test_the_hubs_period_holds_until_a_tenant_chooses_shorter(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    got = await client.get(URL.format("510104"), headers=bearer(keys["county"]))
    assert got.status_code == 200, got.text
    assert got.json() == {
        "tenant": "510104",
        "messages_days": 180,
        "source": "hub",
        "own_days": None,
        "subtree": False,
        "max_days": 180,
    }
    put = await client.put(
        URL.format("510104"), json={"messages_days": 30}, headers=bearer(keys["county"])
    )
    assert put.status_code == 200, put.text
    assert put.json()["messages_days"] == 30
    assert put.json()["source"] == "own"


async def test_a_city_sets_it_for_its_subtree_and_a_county_may_choose_shorter_still(
    client: httpx.AsyncClient, conn: asyncpg.Connection, keys: dict[str, str]
) -> None:
    city = await client.put(
        URL.format("510100"),
        json={"messages_days": 60, "subtree": True},
        headers=bearer(keys["city"]),
    )
    assert city.status_code == 200, city.text
    county = (await client.get(URL.format("510104"), headers=bearer(keys["county"]))).json()
    assert (county["messages_days"], county["source"]) == (60, "ancestor")
    # Longer than the city's: the city's still holds.
    longer = await client.put(
        URL.format("510104"), json={"messages_days": 90}, headers=bearer(keys["county"])
    )
    assert (longer.json()["messages_days"], longer.json()["source"]) == (60, "ancestor")
    assert longer.json()["own_days"] == 90
    shorter = await client.put(
        URL.format("510104"), json={"messages_days": 20}, headers=bearer(keys["county"])
    )
    assert (shorter.json()["messages_days"], shorter.json()["source"]) == (20, "own")
    # Null drops the county's own: the city's holds again.
    dropped = await client.put(
        URL.format("510104"), json={"messages_days": None}, headers=bearer(keys["county"])
    )
    assert (dropped.json()["messages_days"], dropped.json()["own_days"]) == (60, None)
    entries = await conn.fetch(
        "SELECT o.action, t.code FROM operation_log o JOIN tenants t ON t.id = o.tenant_id"
        " WHERE o.action = 'retention.set' ORDER BY o.id"
    )
    assert [e["code"] for e in entries] == ["510100", "510104", "510104", "510104"]


async def test_longer_than_the_hubs_period_is_422_naming_the_most(
    client: httpx.AsyncClient, conn: asyncpg.Connection, keys: dict[str, str]
) -> None:
    put = await client.put(
        URL.format("510104"), json={"messages_days": 181}, headers=bearer(keys["county"])
    )
    assert put.status_code == 422, put.text
    assert put.json()["error"] == "invalid"
    assert put.json()["max_days"] == 180
    assert "180" in put.json()["detail"]
    assert await conn.fetchval("SELECT count(*) FROM retention_periods") == 0


async def test_another_subtree_is_404_and_a_reader_is_403(
    client: httpx.AsyncClient, conn: asyncpg.Connection, keys: dict[str, str]
) -> None:
    for method in ("GET", "PUT"):
        # Guizhou's key on a Sichuan county; a county's key on its own city (above it).
        for key, code in (("guizhou", "510104"), ("county", "510100")):
            answer = await client.request(
                method, URL.format(code), json={"messages_days": 10}, headers=bearer(keys[key])
            )
            assert answer.status_code == 404, (method, key, answer.text)
            assert answer.json()["error"] == "not_found"
    refused = await client.put(
        URL.format("510104"), json={"messages_days": 10}, headers=bearer(keys["reader"])
    )
    assert refused.status_code == 403, refused.text
    assert await conn.fetchval("SELECT count(*) FROM retention_periods") == 0


@pytest.mark.parametrize(
    "body",
    [
        {"messages_days": 0},
        {"messages_days": 1.5},
        {"messages_days": 30, "subtree": "yes"},
        {"messages_days": 30, "extra": 1},
        {"subtree": True},
        {"messages_days": 10**20},
    ],
)
async def test_bad_bodies_are_422(
    client: httpx.AsyncClient, keys: dict[str, str], body: dict[str, object]
) -> None:
    put = await client.put(URL.format("510104"), json=body, headers=bearer(keys["county"]))
    assert put.status_code in (400, 422), put.text
    assert "error" in put.json()


async def test_malformed_json_and_nul_codes_are_4xx(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    broken = await client.put(
        URL.format("510104"),
        content=b'{"messages_days": 3\x00}',
        headers={**bearer(keys["county"]), "Content-Type": "application/json"},
    )
    assert broken.status_code == 400, broken.text
    nul = await client.get(URL.format("5101%00"), headers=bearer(keys["county"]))
    assert 400 <= nul.status_code < 500
