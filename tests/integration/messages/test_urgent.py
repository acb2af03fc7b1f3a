"""Jumping the queue: `priority: "urgent"` (past quiet hours, ahead of every bulk send) needs
the messages:urgent scope, which only a key holding it can grant."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from tenants.scopes import ALL_SCOPES, Scope
from tests.factories import bearer, grant, make_key, make_small_tree

URGENT = {"to": ["13800138000"], "body": "紧急：山洪预警", "priority": "urgent"}
SENDER = frozenset({Scope.MESSAGES_WRITE, Scope.MESSAGES_READ, Scope.KEYS_WRITE})


@pytest.fixture
async def tree(conn: asyncpg.Connection) -> None:
    await make_small_tree(conn)
    await grant(conn, {"000000": 1000, "510000": 500, "510100": 300, "510104": 100})


async def test_an_urgent_send_without_the_scope_is_403_and_stores_nothing(
    conn: asyncpg.Connection, client: httpx.AsyncClient, tree: None
) -> None:
    county = await make_key(conn, "510104", SENDER)
    refused = await client.post(
        "/v1/messages", json=URGENT, headers={**bearer(county), "Idempotency-Key": "flood-1"}
    )
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "forbidden"
    assert refused.json()["scope"] == "messages:urgent"
    assert await conn.fetchval("SELECT count(*) FROM sends") == 0
    assert await conn.fetchval("SELECT count(*) FROM quota_reservations") == 0
    assert await conn.fetchval("SELECT count(*) FROM idempotency_keys") == 0
    # The same key sends normal notices as before.
    normal = await client.post(
        "/v1/messages", json={**URGENT, "priority": "normal"}, headers=bearer(county)
    )
    assert normal.status_code == 202, normal.text


async def test_a_key_with_the_scope_sends_urgent_past_quiet_hours(
    conn: asyncpg.Connection, client: httpx.AsyncClient, tree: None
) -> None:
    county = await make_key(conn, "510104", SENDER | {Scope.MESSAGES_URGENT})
    # Quiet all day long: only an urgent send goes at once.
    quiet = {"enabled": True, "starts": "00:00", "ends": "23:59"}
    admin = await make_key(conn, "510104")
    await client.put("/v1/tenants/510104/quiet-hours", json=quiet, headers=bearer(admin))
    sent = await client.post("/v1/messages", json=URGENT, headers=bearer(county))
    assert sent.status_code == 202, sent.text
    assert (sent.json()["state"], sent.json()["held_until"]) == ("queued", None)
    view = await client.get(f"/v1/messages/{sent.json()['id']}", headers=bearer(county))
    assert view.json()["priority"] == "urgent"


async def test_only_a_key_holding_the_scope_grants_it(
    conn: asyncpg.Connection, client: httpx.AsyncClient, tree: None
) -> None:
    county = await make_key(conn, "510104", SENDER)
    grants = {"scopes": ["messages:write", "messages:urgent"]}
    refused = await client.post("/v1/tenants/510104001/keys", json=grants, headers=bearer(county))
    assert refused.status_code == 403
    assert refused.json()["scopes"] == ["messages:urgent"]
    city = await make_key(conn, "510100", ALL_SCOPES)
    granted = await client.post("/v1/tenants/510104/keys", json=grants, headers=bearer(city))
    assert granted.status_code == 201, granted.text
    sent = await client.post("/v1/messages", json=URGENT, headers=bearer(granted.json()["key"]))
    assert sent.status_code == 202, sent.text


async def test_campaigns_cannot_ask_for_urgent(
    conn: asyncpg.Connection, client: httpx.AsyncClient, tree: None
) -> None:
    county = await make_key(conn, "510104", SENDER)
    resp = await client.post(
        "/v1/campaigns",
        json={"kind": "anniversary", "field": "joined_on", "template": 1, "priority": "urgent"},
        headers=bearer(county),
    )
    assert resp.status_code == 422
    assert resp.json()["fields"][0]["key"] == "priority"
