"""Tenant codes cannot be claimed: a unit's code lies inside its parent's space, a refused
creation uses no SMS extension, running out of extensions is a clear 503, and a taken code's
409 tells nothing about tenants outside the caller's subtree."""

from __future__ import annotations

import asyncpg
import httpx
import msgspec
import pytest
from litestar import Litestar

from hub.settings import Settings, TenantsSettings
from tests.factories import bearer, make_key, make_small_tree, make_tenant

CHILDREN = "/v1/tenants/510104/children"


async def _tenants(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM tenants"))


async def _sequence(conn: asyncpg.Connection) -> tuple[int, bool]:
    row = await conn.fetchrow("SELECT last_value, is_called FROM tenant_sms_extension_seq")
    assert row is not None
    return row["last_value"], row["is_called"]


@pytest.mark.parametrize(
    "code",
    [
        "510199",  # 6 digits: a code GB/T 2260 could give a county of 成都市
        "510105",  # the sibling county's own code
        "520000001",  # inside another province's space
        "510105001",  # inside the sibling county's space
        "510100001",  # inside the parent city's space, not 锦江区's
        "5101040011",  # 锦江区's prefix, but not three digits more
        "510104001001",  # 锦江区's prefix, but a grandchild's width
        "510104002\n",  # a trailing line break (Python's `$` would let it through)
    ],
)
async def test_a_unit_code_lies_inside_its_parents_space(
    conn: asyncpg.Connection, client: httpx.AsyncClient, code: str
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510104")
    before, sequence = await _tenants(conn), await _sequence(conn)
    resp = await client.post(CHILDREN, json={"code": code, "name": "某单位"}, headers=bearer(key))
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "invalid"
    assert "code" in body["detail"]
    assert [f["key"] for f in body["fields"]] == ["code"]
    assert (await _tenants(conn), await _sequence(conn)) == (before, sequence)


async def test_units_nest_three_digits_at_a_time_up_to_twelve(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510104")
    unit = await client.post(
        "/v1/tenants/510104001/children",
        json={"code": "510104001002", "name": "春熙路社区党委"},
        headers=bearer(key),
    )
    assert unit.status_code == 201, unit.text
    assert unit.json()["parent_code"] == "510104001"
    below = await client.post(
        "/v1/tenants/510104001002/children",
        json={"code": "510104001002", "name": "没有位置"},
        headers=bearer(key),
    )
    assert below.status_code == 422
    assert "no room for units below 510104001002" in below.json()["detail"]


async def test_a_foreign_code_is_refused_alike_whether_it_exists_or_not(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    """No existence oracle: 贵州省's unit 520000001 exists, 520000002 does not."""
    await make_small_tree(conn)
    await make_tenant(conn, "520000001", "贵州某单位", parent="520000")
    key = await make_key(conn, "510104")
    answers = [
        await client.post(CHILDREN, json={"code": code, "name": "冒名"}, headers=bearer(key))
        for code in ("520000001", "520000002")
    ]
    assert [a.status_code for a in answers] == [422, 422]
    assert answers[0].content == answers[1].content


async def test_a_taken_code_says_nothing_of_its_holder(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    """Codes made before units had to lie in their parent's space can sit anywhere: one in
    锦江区's space held under 贵州省 answers exactly as one held in 锦江区's own subtree."""
    await make_small_tree(conn)
    await conn.execute(
        "INSERT INTO tenants (code, name, level, parent_id, path, depth, signature) "
        "SELECT '510104777', '贵州的旧单位', 'unit', id, path || '510104777/', depth + 1, '旧单位' "
        "FROM tenants WHERE code = '520000'"
    )
    key = await make_key(conn, "510104")
    own = await client.post(
        CHILDREN, json={"code": "510104001", "name": "重复"}, headers=bearer(key)
    )
    foreign = await client.post(
        CHILDREN, json={"code": "510104777", "name": "重复"}, headers=bearer(key)
    )
    assert (own.status_code, foreign.status_code) == (409, 409)
    assert foreign.json() == {k: v.replace("510104001", "510104777") for k, v in own.json().items()}
    assert "520000" not in foreign.text
    assert "贵州" not in foreign.text


async def test_a_refused_creation_draws_no_extension(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510104")
    last, _ = await _sequence(conn)
    for _ in range(3):
        taken = await client.post(
            CHILDREN, json={"code": "510104001", "name": "重复"}, headers=bearer(key)
        )
        assert taken.status_code == 409
    assert await _sequence(conn) == (last, True)
    made = await client.post(
        CHILDREN, json={"code": "510104002", "name": "新单位"}, headers=bearer(key)
    )
    assert made.status_code == 201
    assert made.json()["sms_extension"] == str(last + 1)


async def test_running_out_of_extensions_is_a_clear_503(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510104")
    last, _ = await _sequence(conn)
    # As if 999999 were given out: ALTER SEQUENCE is transactional, so the test's rollback
    # restores it (setval would not).
    await conn.execute(f"ALTER SEQUENCE tenant_sms_extension_seq MAXVALUE {last}")
    before = await _tenants(conn)
    resp = await client.post(
        CHILDREN, json={"code": "510104002", "name": "新单位"}, headers=bearer(key)
    )
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"] == "extensions_exhausted"
    assert "SMS extension" in resp.json()["detail"]
    assert await _tenants(conn) == before
    # The request's transaction is intact: the same key goes on working.
    assert (await client.get("/v1/tenants/510104", headers=bearer(key))).status_code == 200


@pytest.mark.parametrize("name", ["新单位\n", "新单位\r", "\n", " 新单位", "新\x00单位"])
async def test_a_name_with_a_line_break_or_control_is_refused(
    conn: asyncpg.Connection, client: httpx.AsyncClient, name: str
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510104")
    before, sequence = await _tenants(conn), await _sequence(conn)
    resp = await client.post(
        CHILDREN, json={"code": "510104002", "name": name}, headers=bearer(key)
    )
    assert resp.status_code == 422, resp.text
    assert [f["key"] for f in resp.json()["fields"]] == ["name"]
    assert (await _tenants(conn), await _sequence(conn)) == (before, sequence)


async def test_a_division_holds_a_bounded_number_of_units(
    conn: asyncpg.Connection, client: httpx.AsyncClient, app: Litestar, settings: Settings
) -> None:
    """A county cannot draw every SMS extension: its whole subtree (units of units too) holds
    at most max_units_per_division units; the refusal draws no extension, and another
    division (even its sibling) is not held back by it."""
    await make_small_tree(conn)  # 锦江区 holds one unit already: 510104001
    app.state.settings = msgspec.structs.replace(
        settings, tenants=TenantsSettings(max_units_per_division=3)
    )
    key = await make_key(conn, "510104")
    for code in ("510104002", "510104001001"):
        made = await client.post(
            f"/v1/tenants/{code[:-3]}/children",
            json={"code": code, "name": "单位"},
            headers=bearer(key),
        )
        assert made.status_code == 201, made.text
    before, sequence = await _tenants(conn), await _sequence(conn)
    for parent, code in (("510104", "510104003"), ("510104001", "510104001002")):
        full = await client.post(
            f"/v1/tenants/{parent}/children",
            json={"code": code, "name": "单位"},
            headers=bearer(key),
        )
        assert full.status_code == 409, full.text
        assert full.json()["error"] == "units_exhausted"
        assert full.json()["max_units"] == 3
    assert (await _tenants(conn), await _sequence(conn)) == (before, sequence)
    sibling = await make_key(conn, "510105")
    other = await client.post(
        "/v1/tenants/510105/children",
        json={"code": "510105001", "name": "单位"},
        headers=bearer(sibling),
    )
    assert other.status_code == 201, other.text
