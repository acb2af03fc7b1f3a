"""Suspension covers the subtree: the suspended tenant and every tenant below it may read, but
not send, create keys or units, or change quota (403 naming the suspended tenant)."""

from __future__ import annotations

import re
from datetime import timedelta

import asyncpg
import httpx
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute

from hub import calendar
from hub.calendar import period_text
from tenants.auth import READS
from tests.factories import bearer, grant_ahead, make_key, make_small_tree

CHAIN = ["510000", "510100", "510104", "510104001"]  # 四川省 and three levels below it
PHONES = ["13800138000", "18612345678"]


@pytest.fixture
async def keys(conn: asyncpg.Connection) -> dict[str, str]:
    """Keys with every scope for the root, the chain under 四川省, and 贵州省."""
    await make_small_tree(conn)
    await grant_ahead(
        conn,
        {"000000": 100_000, "510000": 50_000, "510100": 20_000, "510104": 10_000}
        | {"510104001": 1_000, "520000": 5_000},
    )
    return {code: await make_key(conn, code) for code in ["000000", *CHAIN, "520000"]}


async def _set_status(client: httpx.AsyncClient, key: str, code: str, status: str) -> None:
    resp = await client.patch(f"/v1/tenants/{code}", json={"status": status}, headers=bearer(key))
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == status


def _suspended(resp: httpx.Response, code: str) -> bool:
    if resp.status_code != 403:
        return False
    body = resp.json()
    return body["error"] == "suspended" and body["suspended"] == code and code in body["detail"]


def _child_of(code: str) -> str:
    return code + "009" if len(code) <= 9 else code  # the last has no room (422 if it got that far)


async def test_suspension_covers_three_levels_below_and_reads_stay(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await _set_status(client, keys["000000"], "510000", "suspended")
    period = period_text(calendar.current_period())
    for code in CHAIN:
        key = bearer(keys[code])
        below = {"510000": "510100", "510100": "510104", "510104": "510104001"}.get(code, code)
        writes = [
            await client.post("/v1/messages", json={"to": PHONES, "body": "通知"}, headers=key),
            await client.post(
                f"/v1/tenants/{code}/keys", json={"scopes": ["tenants:read"]}, headers=key
            ),
            await client.post(
                f"/v1/tenants/{code}/children",
                json={"code": _child_of(code), "name": "新单位"},
                headers=key,
            ),
            await client.put(
                f"/v1/tenants/{below}/quota/{period}", json={"limit": 10}, headers=key
            ),
        ]
        assert all(_suspended(r, "510000") for r in writes), (code, [r.text for r in writes])
        reads = [
            await client.get("/v1/me", headers=key),
            await client.get(f"/v1/tenants/{code}", headers=key),
            await client.get(f"/v1/tenants/{code}/tree", headers=key),
            await client.get(f"/v1/tenants/{code}/quota/{period}", headers=key),
            await client.get(f"/v1/tenants/{code}/keys", headers=key),
            await client.get("/v1/inbound", headers=key),
        ]
        assert [r.status_code for r in reads] == [200] * len(reads), code
        assert reads[0].json()["tenant"]["code"] == code

    # Another province is not touched; the root, above the suspension, still administers it.
    other = await client.post(
        "/v1/messages", json={"to": PHONES, "body": "通知"}, headers=bearer(keys["520000"])
    )
    assert other.status_code == 202, other.text
    limit = await client.put(
        f"/v1/tenants/510104/quota/{period}", json={"limit": 9_000}, headers=bearer(keys["000000"])
    )
    assert limit.status_code == 200, limit.text

    await _set_status(client, keys["000000"], "510000", "active")
    sent = await client.post(
        "/v1/messages", json={"to": PHONES, "body": "恢复后"}, headers=bearer(keys["510104001"])
    )
    assert sent.status_code == 202, sent.text


async def test_the_highest_suspended_tenant_is_named(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await _set_status(client, keys["510000"], "510104", "suspended")
    send = {"to": PHONES, "body": "通知"}
    unit = bearer(keys["510104001"])
    assert _suspended(await client.post("/v1/messages", json=send, headers=unit), "510104")
    await _set_status(client, keys["000000"], "510000", "suspended")
    assert _suspended(await client.post("/v1/messages", json=send, headers=unit), "510000")
    # Above the suspension nothing changes: 成都市 still reads 锦江区, and its sibling sends.
    await _set_status(client, keys["000000"], "510000", "active")
    assert (await client.post("/v1/messages", json=send, headers=bearer(keys["510100"]))).is_success
    assert _suspended(await client.post("/v1/messages", json=send, headers=unit), "510104")


async def test_only_a_tenant_above_suspends_or_resumes(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    own = await client.patch(
        "/v1/tenants/510104", json={"status": "suspended"}, headers=bearer(keys["510104"])
    )
    assert own.status_code == 403
    await _set_status(client, keys["510100"], "510104", "suspended")
    for code in ("510104", "510104001"):  # the suspended tenant cannot lift it, nor below it
        resp = await client.patch(
            "/v1/tenants/510104", json={"status": "active"}, headers=bearer(keys[code])
        )
        assert _suspended(resp, "510104"), resp.text
    unrelated = await client.patch(
        "/v1/tenants/510104", json={"status": "active"}, headers=bearer(keys["520000"])
    )
    assert unrelated.status_code == 404


def _writes(app: Litestar) -> list[tuple[str, str, bool]]:
    """Every API route that writes: (method, path, whether it only stops something)."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith("/v1/"):
            continue
        if route.path.startswith("/v1/gateways/"):  # gateways' callbacks, not API keys
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods - READS:
                found.append((method, route.path, bool(handler.opt.get("stops"))))
    return sorted(found)


def _fill(path: str, code: str, prefix: str) -> str:
    values = {"code": code, "prefix": prefix, "period": "2027-03"}
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m[1], "1"), path)


async def test_every_write_route_refuses_a_suspended_subtree(
    app: Litestar, client: httpx.AsyncClient, keys: dict[str, str], conn: asyncpg.Connection
) -> None:
    """Any route that writes — today's and any added later — refuses before it reads its body,
    except those that only stop something (revoke a key, cancel a send …)."""
    await _set_status(client, keys["510000"], "510100", "suspended")
    routes = _writes(app)
    assert len(routes) >= 15
    assert {(m, p) for m, p, stops in routes if stops} == {
        ("DELETE", "/v1/keys/{prefix:str}"),
        ("DELETE", "/v1/messages/{send_id:int}"),
        ("DELETE", "/v1/campaigns/{campaign_id:int}"),
        ("DELETE", "/v1/tenants/{code:str}/webhook"),
        ("POST", "/v1/reviews/{send_id:int}/reject"),  # a waiting send stopped
    }
    prefix = (await make_key(conn, "510104001")).split("_")[1]
    for method, path, stops in routes:
        resp = await client.request(
            method, _fill(path, "510104001", prefix), headers=bearer(keys["510104"])
        )
        assert _suspended(resp, "510100") != stops, (method, path, resp.status_code, resp.text)


async def test_stopping_stays_allowed(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    county = bearer(keys["510104"])
    at = (calendar.now() + timedelta(hours=2)).isoformat()
    scheduled = await client.post(
        "/v1/messages", json={"to": PHONES, "body": "两小时后", "send_at": at}, headers=county
    )
    assert scheduled.status_code == 202
    leaked = (await make_key(conn, "510104001")).split("_")[1]
    await _set_status(client, keys["510000"], "510100", "suspended")

    cancelled = await client.delete(f"/v1/messages/{scheduled.json()['id']}", headers=county)
    assert cancelled.status_code == 204, cancelled.text
    assert await conn.fetchval("SELECT status::text FROM quota_reservations") == "voided"
    revoked = await client.delete(f"/v1/keys/{leaked}", headers=county)
    assert revoked.status_code == 204, revoked.text
