"""The tenant and key endpoints: what they answer, what they store, how they reject bad input."""

from __future__ import annotations

import hashlib

import asyncpg
import httpx
import pytest

from tenants.scopes import Scope
from tests.factories import bearer, make_key, make_small_tree, make_tenant


async def _count_tenants(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM tenants"))


async def test_get_tenant_shows_signature_and_extension(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510100")
    resp = await client.get("/v1/tenants/510104", headers=bearer(key))
    assert resp.status_code == 200
    body = resp.json()
    assert body["code"] == "510104"
    assert body["parent_code"] == "510100"
    assert body["signature"] == "【锦江区】"
    assert len(body["sms_extension"]) == 6


async def test_me_names_tenant_and_scopes(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510104", frozenset({Scope.TENANTS_READ, Scope.MESSAGES_WRITE}))
    body = (await client.get("/v1/me", headers=bearer(key))).json()
    assert body["tenant"]["code"] == "510104"
    assert body["scopes"] == ["messages:write", "tenants:read"]
    assert body["key_prefix"] == key.split("_")[1]


async def test_children_are_paged_in_code_order(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    for n in range(5):
        await make_tenant(conn, f"51010400{n + 2}", f"单位{n}", parent="510104")
    key = await make_key(conn, "510104")
    seen: list[str] = []
    after = ""
    while True:
        page = (
            await client.get(
                "/v1/tenants/510104/children",
                params={"limit": 2, "after": after},
                headers=bearer(key),
            )
        ).json()
        seen += [t["code"] for t in page["items"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == sorted(seen)
    assert seen == ["510104001", *[f"51010400{n + 2}" for n in range(5)]]


async def test_tree_is_depth_limited_and_marks_truncation(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510000")
    one = (await client.get("/v1/tenants/510000/tree?depth=1", headers=bearer(key))).json()
    assert [c["code"] for c in one["children"]] == ["510100", "510300"]
    chengdu = one["children"][0]
    assert chengdu["children"] == []
    assert chengdu["truncated"] is True
    assert one["children"][1]["truncated"] is False  # 自贡市 has no children here

    full = (await client.get("/v1/tenants/510000/tree?depth=6", headers=bearer(key))).json()
    jinjiang = full["children"][0]["children"][0]
    assert jinjiang["code"] == "510104"
    assert [c["code"] for c in jinjiang["children"]] == ["510104001"]


async def test_tree_depth_out_of_range_is_422(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510000")
    resp = await client.get("/v1/tenants/510000/tree?depth=99", headers=bearer(key))
    assert resp.status_code == 422
    assert resp.json()["fields"][0]["key"] == "depth"


async def test_create_child_makes_a_unit_with_default_signature(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510104")
    resp = await client.post(
        "/v1/tenants/510104/children",
        json={"code": "510104100", "name": "锦江区教育局党委"},
        headers=bearer(key),
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["level"] == "unit"
    assert body["parent_code"] == "510104"
    # The county proposed it (its name); a tenant above the county approves it.
    assert body["signature"] is None
    review = (await client.get("/v1/tenants/510104100/signature", headers=bearer(key))).json()
    assert review["pending"]["signature"] == "【锦江区教育局党委】"
    assert review["pending"]["awaiting"] == "510100"
    path = await conn.fetchval("SELECT path FROM tenants WHERE code = '510104100'")
    assert path == "000000/510000/510100/510104/510104100/"


async def test_create_child_with_its_own_signature(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    county, operator = await make_key(conn, "510104"), await make_key(conn, "000000")
    body = {"code": "510104101", "name": "锦江区某街道党工委", "signature": "锦江街道"}
    by_county = await client.post("/v1/tenants/510104/children", json=body, headers=bearer(county))
    assert by_county.json()["signature"] is None  # proposed, not yet approved
    # The operator has no one above it: what it gives is approved at once.
    body = {"code": "510104102", "name": "锦江区另一街道党工委", "signature": "锦江另一街道"}
    by_operator = await client.post(
        "/v1/tenants/510104/children", json=body, headers=bearer(operator)
    )
    assert by_operator.json()["signature"] == "【锦江另一街道】"


async def test_duplicate_code_is_409_and_writes_nothing(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510104")
    before = await _count_tenants(conn)
    # 510104001 (春熙路街道) already holds the code.
    resp = await client.post(
        "/v1/tenants/510104/children",
        json={"code": "510104001", "name": "重复的单位"},
        headers=bearer(key),
    )
    assert resp.status_code == 409
    assert resp.json() == {
        "error": "conflict",
        "detail": "tenant code 510104001 is already taken",
        "code_taken": "510104001",
    }
    assert await _count_tenants(conn) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"code": "12345", "name": "x"}, "code"),
        ({"code": "1234567890123", "name": "x"}, "code"),
        ({"code": "12345a", "name": "x"}, "code"),
        ({"code": "510104200"}, "name"),
        ({"name": "x"}, "code"),
        ({"code": "510104200", "name": "x", "colour": "red"}, "colour"),
        ({"code": "510104200", "name": ""}, "name"),
        ({"code": "510104200", "name": "x", "signature": "【x】"}, "signature"),
        ({"code": 510104200, "name": "x"}, "code"),
    ],
)
async def test_invalid_child_is_422_naming_the_field(
    conn: asyncpg.Connection, client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510104")
    before = await _count_tenants(conn)
    resp = await client.post("/v1/tenants/510104/children", json=body, headers=bearer(key))
    assert resp.status_code == 422, resp.text
    answer = resp.json()
    assert answer["error"] == "invalid"
    assert field in answer["detail"]
    assert any(f["key"] == field for f in answer["fields"])
    assert await _count_tenants(conn) == before


@pytest.mark.parametrize("raw", [b"{bad", b"", b"[1,", b"\xff\xfe"])
async def test_malformed_json_is_400(
    conn: asyncpg.Connection, client: httpx.AsyncClient, raw: bytes
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510104")
    resp = await client.post(
        "/v1/tenants/510104/children",
        content=raw,
        headers={**bearer(key), "Content-Type": "application/json"},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "malformed"


async def test_oversized_body_is_413_and_writes_nothing(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510104")
    before = await _count_tenants(conn)
    huge = b'{"code":"510104300","name":"' + b"x" * 2_000_000 + b'"}'
    resp = await client.post(
        "/v1/tenants/510104/children",
        content=huge,
        headers={**bearer(key), "Content-Type": "application/json"},
    )
    assert resp.status_code == 413
    assert resp.json()["error"] == "too_large"
    assert await _count_tenants(conn) == before


async def test_key_secret_is_shown_once_and_only_its_hash_stored(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    admin = await make_key(conn, "510100")
    resp = await client.post(
        "/v1/tenants/510104/keys",
        json={"scopes": ["tenants:read"], "name": "锦江区 API"},
        headers=bearer(admin),
    )
    assert resp.status_code == 201
    new = resp.json()
    token = new["key"]
    _, prefix, secret = token.split("_")
    assert new["info"]["prefix"] == prefix

    stored = await conn.fetchrow("SELECT * FROM api_keys WHERE prefix = $1", prefix)
    assert stored is not None
    assert stored["secret_sha256"] == hashlib.sha256(secret.encode()).digest()
    assert secret not in str(dict(stored))

    listing = await client.get("/v1/tenants/510104/keys", headers=bearer(admin))
    assert prefix in listing.text
    assert secret not in listing.text
    assert "key" not in listing.json()["items"][0]

    assert (await client.get("/v1/me", headers=bearer(token))).json()["tenant"]["code"] == "510104"
    used = await conn.fetchval("SELECT last_used_at FROM api_keys WHERE prefix = $1", prefix)
    assert used is not None


async def test_revocation_holds_from_the_next_request(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510104")
    assert (await client.get("/v1/me", headers=bearer(key))).status_code == 200
    prefix = key.split("_")[1]
    assert (await client.delete(f"/v1/keys/{prefix}", headers=bearer(key))).status_code == 204
    assert (await client.get("/v1/me", headers=bearer(key))).status_code == 401
    revoked = await conn.fetchval("SELECT revoked_at FROM api_keys WHERE prefix = $1", prefix)
    assert revoked is not None


async def test_a_key_cannot_grant_scopes_it_lacks(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510100", frozenset({Scope.KEYS_WRITE, Scope.TENANTS_READ}))
    resp = await client.post(
        "/v1/tenants/510104/keys", json={"scopes": ["billing:read"]}, headers=bearer(key)
    )
    assert resp.status_code == 403
    assert resp.json()["scopes"] == ["billing:read"]
    assert await conn.fetchval("SELECT count(*) FROM api_keys WHERE name = ''") == 0


async def test_unknown_scope_is_422(conn: asyncpg.Connection, client: httpx.AsyncClient) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510100")
    resp = await client.post(
        "/v1/tenants/510104/keys", json={"scopes": ["root:everything"]}, headers=bearer(key)
    )
    assert resp.status_code == 422
    assert resp.json()["fields"][0]["key"].startswith("scopes")


async def test_a_name_unfit_for_a_signature_needs_one(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510104")
    resp = await client.post(
        "/v1/tenants/510104/children", json={"code": "510104400", "name": "党"}, headers=bearer(key)
    )
    assert resp.status_code == 422
    assert resp.json()["fields"][0]["key"] == "signature"
    ok = await client.post(
        "/v1/tenants/510104/children",
        json={"code": "510104400", "name": "党", "signature": "锦江党委"},
        headers=bearer(key),
    )
    assert ok.status_code == 201


async def test_a_tenant_proposes_its_signature_and_its_parent_changes_its_status(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    county = await make_key(conn, "510104")
    city = await make_key(conn, "510100")

    renamed = await client.patch(
        "/v1/tenants/510104", json={"signature": "锦江区委组织部"}, headers=bearer(county)
    )
    assert renamed.status_code == 200
    # A proposal: the approved signature stays until the city (or above) approves the new one.
    assert renamed.json()["signature"] == "【锦江区】"
    assert renamed.json()["name"] == "锦江区"
    proposal = (await client.get("/v1/signatures/pending", headers=bearer(city))).json()["items"]
    assert [p["signature"] for p in proposal] == ["【锦江区委组织部】"]
    approved = await client.post(
        f"/v1/signatures/{proposal[0]['id']}/review",
        json={"decision": "approve"},
        headers=bearer(city),
    )
    assert approved.status_code == 200, approved.text
    after = await client.get("/v1/tenants/510104", headers=bearer(county))
    assert after.json()["signature"] == "【锦江区委组织部】"

    own_status = await client.patch(
        "/v1/tenants/510104", json={"status": "suspended"}, headers=bearer(county)
    )
    assert own_status.status_code == 403

    suspended = await client.patch(
        "/v1/tenants/510104", json={"status": "suspended"}, headers=bearer(city)
    )
    assert suspended.json()["status"] == "suspended"
    # Its keys still read, and may no longer write (tests/integration/tenants/test_suspension.py).
    assert (await client.get("/v1/me", headers=bearer(county))).status_code == 200
    again = await client.patch(
        "/v1/tenants/510104", json={"signature": "锦江组工"}, headers=bearer(county)
    )
    assert (again.status_code, again.json()["error"]) == (403, "suspended")


async def test_bad_status_is_422(conn: asyncpg.Connection, client: httpx.AsyncClient) -> None:
    await make_small_tree(conn)
    city = await make_key(conn, "510100")
    resp = await client.patch("/v1/tenants/510104", json={"status": "gone"}, headers=bearer(city))
    assert resp.status_code == 422
    assert resp.json()["fields"][0]["key"] == "status"
