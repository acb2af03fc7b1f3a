"""Every tenant endpoint against every kind of caller.

The caller is a key of 成都市 (510100). It may read and administer itself and its subtree; its
parent (四川省), its sibling (自贡市) and an unknown code answer one identical 404; a missing,
garbled or revoked key 401; a key without the endpoint's scope 403.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from tenants.scopes import ALL_SCOPES, Scope
from tests.factories import bearer, make_key, make_small_tree

OWN, CHILD, PARENT, SIBLING, UNKNOWN = "510100", "510104", "510000", "510300", "999999"
_codes = itertools.count(1)


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str  # {code} is the target tenant, {prefix} a key of the target tenant
    scope: Scope
    ok: int
    body: bool = False


ENDPOINTS = [
    Endpoint("get", "GET", "/v1/tenants/{code}", Scope.TENANTS_READ, 200),
    Endpoint("update", "PATCH", "/v1/tenants/{code}", Scope.TENANTS_WRITE, 200, True),
    Endpoint("children", "GET", "/v1/tenants/{code}/children", Scope.TENANTS_READ, 200),
    Endpoint("tree", "GET", "/v1/tenants/{code}/tree", Scope.TENANTS_READ, 200),
    Endpoint("create_child", "POST", "/v1/tenants/{code}/children", Scope.TENANTS_WRITE, 201, True),
    Endpoint("create_key", "POST", "/v1/tenants/{code}/keys", Scope.KEYS_WRITE, 201, True),
    Endpoint("list_keys", "GET", "/v1/tenants/{code}/keys", Scope.KEYS_WRITE, 200),
    Endpoint("revoke_key", "DELETE", "/v1/keys/{prefix}", Scope.KEYS_WRITE, 204),
    Endpoint("signature", "GET", "/v1/tenants/{code}/signature", Scope.TENANTS_READ, 200),
    Endpoint("propose", "PUT", "/v1/tenants/{code}/signature", Scope.TENANTS_WRITE, 200, True),
]
TARGETS = {"own": OWN, "child": CHILD, "parent": PARENT, "sibling": SIBLING, "unknown": UNKNOWN}
CALLERS = ["no_key", "garbled_key", "revoked_key", "wrong_scope"]


def _body(endpoint: Endpoint, code: str) -> dict[str, object] | None:
    if endpoint.name == "create_child":  # a unit's code lies inside its parent's
        return {"code": f"{code}{next(_codes) % 1000:03d}", "name": "测试单位"}
    if endpoint.name in ("update", "propose"):
        return {"signature": "组织部测试"}
    if endpoint.name == "create_key":
        return {"scopes": ["tenants:read"], "name": "matrix"}
    return None


async def _call(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    code: str,
    prefix: str,
    headers: dict[str, str],
) -> httpx.Response:
    return await client.request(
        endpoint.method,
        endpoint.path.format(code=code, prefix=prefix),
        json=_body(endpoint, code),
        headers=headers,
    )


async def _target_prefix(conn: asyncpg.Connection, code: str) -> str:
    """A key prefix of the target tenant (a random one for the unknown tenant)."""
    if code == UNKNOWN:
        return "0123456789ab"
    return (await make_key(conn, code, frozenset({Scope.TENANTS_READ}))).split("_")[1]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
@pytest.mark.parametrize("target", list(TARGETS))
async def test_subtree_only(
    conn: asyncpg.Connection, client: httpx.AsyncClient, endpoint: Endpoint, target: str
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, OWN)
    code = TARGETS[target]
    prefix = await _target_prefix(conn, code)

    resp = await _call(client, endpoint, code, prefix, bearer(key))

    if target in ("own", "child"):
        assert resp.status_code == endpoint.ok, resp.text
    else:
        assert resp.status_code == 404, resp.text
        expected = "API key not found" if endpoint.name == "revoke_key" else "tenant not found"
        assert resp.json() == {"error": "not_found", "detail": expected}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
@pytest.mark.parametrize("caller", CALLERS)
async def test_bad_callers(
    conn: asyncpg.Connection, client: httpx.AsyncClient, endpoint: Endpoint, caller: str
) -> None:
    await make_small_tree(conn)
    prefix = await _target_prefix(conn, CHILD)
    headers: dict[str, str] = {}
    if caller == "garbled_key":
        headers = bearer("hub_not_a_key")
    elif caller == "revoked_key":
        key = await make_key(conn, OWN)
        admin = await make_key(conn, OWN)
        revoked = await client.delete(f"/v1/keys/{key.split('_')[1]}", headers=bearer(admin))
        assert revoked.status_code == 204
        headers = bearer(key)
    elif caller == "wrong_scope":
        headers = bearer(await make_key(conn, OWN, ALL_SCOPES - {endpoint.scope}))

    resp = await _call(client, endpoint, CHILD, prefix, headers)

    expected = 403 if caller == "wrong_scope" else 401
    assert resp.status_code == expected, resp.text
    assert resp.json()["error"] == ("forbidden" if expected == 403 else "unauthorized")


async def test_not_found_bodies_are_identical_for_parent_sibling_and_unknown(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, OWN)
    answers = [
        (await client.get(f"/v1/tenants/{code}", headers=bearer(key))).content
        for code in (PARENT, SIBLING, UNKNOWN, "520000")
    ]
    assert len(set(answers)) == 1
