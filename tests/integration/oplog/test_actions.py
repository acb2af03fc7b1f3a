"""Every family of change writes one entry, in the change's own transaction: who (the key or
the person), from which address, what, and for settings the value before and after."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from hub import calendar
from hub.calendar import current_period, period_text
from tenants.scopes import ALL_SCOPES
from tests.factories import bearer, make_key

# httpx's ASGI transport presents every request as coming from this address.
ADDRESS = "127.0.0.1"


async def _entries(conn: asyncpg.Connection, action: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT o.*, t.code AS tenant, a.code AS actor_tenant FROM operation_log o "
        "JOIN tenants t ON t.id = o.tenant_id LEFT JOIN tenants a ON a.id = o.actor_tenant_id "
        "WHERE o.action = $1 ORDER BY o.id",
        action,
    )
    return [dict(r) for r in rows]


async def _one(conn: asyncpg.Connection, action: str, key: str, tenant: str) -> dict[str, Any]:
    entries = await _entries(conn, action)
    assert len(entries) == 1, entries
    entry = entries[0]
    assert entry["actor"] == f"key:{key.split('_')[1]}"
    assert entry["address"] == ADDRESS
    assert entry["tenant"] == tenant
    return entry


@pytest.fixture
async def city(conn: asyncpg.Connection, tree: None) -> str:
    return await make_key(conn, "510100", ALL_SCOPES)


async def test_tenant_create_suspend_resume_and_rename(
    conn: asyncpg.Connection, client: httpx.AsyncClient, city: str
) -> None:
    made = await client.post(
        "/v1/tenants/510104/children",
        json={"code": "510104002", "name": "书院街街道"},
        headers=bearer(city),
    )
    assert made.status_code == 201, made.text
    entry = await _one(conn, "tenant.create", city, "510104")
    assert entry["object"] == "tenant:510104002"
    assert entry["actor_tenant"] == "510100"

    for status, action in (("suspended", "tenant.suspend"), ("active", "tenant.resume")):
        changed = await client.patch(
            "/v1/tenants/510104", json={"status": status}, headers=bearer(city)
        )
        assert changed.status_code == 200, changed.text
        entry = await _one(conn, action, city, "510104")
        assert entry["before"] != entry["after"]
        assert entry["after"] == f'{{"status": "{status}"}}'
    renamed = await client.patch("/v1/tenants/510104", json={"name": "锦江"}, headers=bearer(city))
    assert renamed.status_code == 200
    entry = await _one(conn, "tenant.rename", city, "510104")
    assert (entry["before"], entry["after"]) == ('{"name": "锦江区"}', '{"name": "锦江"}')


async def test_key_create_and_revoke_never_log_the_secret(
    conn: asyncpg.Connection, client: httpx.AsyncClient, city: str
) -> None:
    made = await client.post(
        "/v1/tenants/510104/keys", json={"scopes": ["tenants:read"]}, headers=bearer(city)
    )
    assert made.status_code == 201
    new = made.json()
    entry = await _one(conn, "key.create", city, "510104")
    assert entry["object"] == f"key:{new['info']['prefix']}"
    assert new["key"].split("_")[2] not in str(entry)
    gone = await client.delete(f"/v1/keys/{new['info']['prefix']}", headers=bearer(city))
    assert gone.status_code == 204
    await _one(conn, "key.revoke", city, "510104")


async def test_quota_set_and_default_carry_before_and_after(
    conn: asyncpg.Connection, client: httpx.AsyncClient, city: str
) -> None:
    month = period_text(current_period())
    put = await client.put(
        f"/v1/tenants/510104/quota/{month}", json={"limit": 80}, headers=bearer(city)
    )
    assert put.status_code == 200, put.text
    entry = await _one(conn, "quota.set", city, "510104")
    assert entry["object"] == f"quota:510104:{month}"
    assert entry["before"] == '{"limit": 100, "policy": "strict"}'
    assert entry["after"] == '{"limit": 80, "policy": "strict"}'
    put = await client.put(
        "/v1/tenants/510104/quota/default", json={"monthly_limit": 50}, headers=bearer(city)
    )
    assert put.status_code == 200, put.text
    entry = await _one(conn, "quota.default", city, "510104")
    assert entry["before"] == '{"policy": "strict", "monthly_limit": null}'
    assert entry["after"] == '{"policy": "strict", "monthly_limit": 50}'


def _in_an_hour() -> str:
    return (calendar.now() + timedelta(hours=1)).isoformat()


async def test_a_send_and_its_cancel(
    conn: asyncpg.Connection, client: httpx.AsyncClient, tree: None
) -> None:
    county = await make_key(conn, "510104", ALL_SCOPES)
    sent = await client.post(
        "/v1/messages",
        json={"to": ["13800138000"], "body": "开会", "send_at": _in_an_hour()},
        headers=bearer(county),
    )
    assert sent.status_code == 202, sent.text
    send_id = sent.json()["id"]
    entry = await _one(conn, "send.create", county, "510104")
    assert entry["object"] == f"send:{send_id}"
    assert "13800138000" not in str(entry)
    assert "开会" not in str(entry)
    cancelled = await client.delete(f"/v1/messages/{send_id}", headers=bearer(county))
    assert cancelled.status_code == 204, cancelled.text
    await _one(conn, "send.cancel", county, "510104")


async def test_settings_quiet_hours_webhook_and_limits(
    conn: asyncpg.Connection, client: httpx.AsyncClient, tree: None
) -> None:
    county = await make_key(conn, "510104", ALL_SCOPES)
    quiet = {"enabled": True, "starts": "21:00", "ends": "07:00"}
    put = await client.put("/v1/tenants/510104/quiet-hours", json=quiet, headers=bearer(county))
    assert put.status_code == 200, put.text
    entry = await _one(conn, "quiet_hours.set", county, "510104")
    assert '"starts": "21:00"' in entry["after"]
    assert '"starts": "21:00"' not in entry["before"]

    hook = {"url": "http://127.0.0.1:9/hook", "secret": "s3cret-s3cret-s3cret"}
    put = await client.put("/v1/tenants/510104/webhook", json=hook, headers=bearer(county))
    assert put.status_code == 204, put.text
    entry = await _one(conn, "webhook.set", county, "510104")
    assert (entry["before"], entry["after"]) == (None, '{"url": "http://127.0.0.1:9/hook"}')
    assert "s3cret" not in str(entry)
    gone = await client.delete("/v1/tenants/510104/webhook", headers=bearer(county))
    assert gone.status_code == 204
    await _one(conn, "webhook.delete", county, "510104")

    operator = await make_key(conn, "000000", ALL_SCOPES)
    put = await client.put(
        "/v1/tenants/510104/rate-limits", json={"key_rate": 5}, headers=bearer(operator)
    )
    assert put.status_code == 200, put.text
    entry = await _one(conn, "limits.set", operator, "510104")
    assert '"key_rate": 5.0' in entry["after"]
    assert '"key_rate": 5.0' not in entry["before"]


async def test_users_invite_roles_and_disable(
    conn: asyncpg.Connection, client: httpx.AsyncClient, city: str
) -> None:
    person = {"login": "zhang3", "display_name": "张三", "phone": "13800138001", "roles": ["查看"]}
    made = await client.post("/v1/tenants/510104/users", json=person, headers=bearer(city))
    assert made.status_code == 201, made.text
    entry = await _one(conn, "user.invite", city, "510104")
    assert entry["object"] == "user:zhang3"
    assert "13800138001" not in str(entry)
    assert "invite" not in (entry["after"] or "")
    changed = await client.patch(
        "/v1/users/zhang3", json={"roles": ["查看", "发送"]}, headers=bearer(city)
    )
    assert changed.status_code == 200, changed.text
    entry = await _one(conn, "user.roles", city, "510104")
    assert (entry["before"], entry["after"]) == (
        '{"roles": ["查看"]}',
        '{"roles": ["查看", "发送"]}',
    )
    off = await client.patch("/v1/users/zhang3", json={"disabled": True}, headers=bearer(city))
    assert off.status_code == 200
    await _one(conn, "user.disable", city, "510104")


async def test_a_refused_change_leaves_no_entry(
    conn: asyncpg.Connection, client: httpx.AsyncClient, city: str
) -> None:
    # Over what 510100 has left to grant: refused, and its entry rolled back with it.
    put = await client.put(
        f"/v1/tenants/510104/quota/{period_text(current_period())}",
        json={"limit": 10_000},
        headers=bearer(city),
    )
    assert put.status_code == 409
    assert await _entries(conn, "quota.set") == []
