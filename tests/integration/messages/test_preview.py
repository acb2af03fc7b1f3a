"""POST /v1/messages/preview: the answer POST /v1/messages then gives, written nowhere."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from hub import calendar
from tenants.scopes import ALL_SCOPES, Scope
from tenants.service import get_by_code
from tests.factories import bearer, grant_ahead, make_key, make_small_tree

# The fields a preview shares with a send's 202 (due_at too when scheduled: "now" moves on).
SHARED = (
    "state",
    "held_until",
    "counts",
    "rejected",
    "encoding",
    "segments_per_message",
    "segments",
    "list_price_micros",
)
TABLES = ("sends", "messages", "dedup_keys", "quota_reservations", "quota_entries")


@pytest.fixture
async def keys(conn: asyncpg.Connection) -> tuple[str, str]:
    await make_small_tree(conn)
    await grant_ahead(
        conn, {"000000": 10_000, "510000": 5_000, "510100": 3_000, "510104": 1_000, "510105": 1_000}
    )
    return await make_key(conn, "510104"), await make_key(conn, "510105")


async def _rows(conn: asyncpg.Connection) -> dict[str, int]:
    return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


def _shared(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: answer[k] for k in SHARED}


async def test_preview_agrees_with_the_send_and_writes_nothing(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: tuple[str, str]
) -> None:
    jinjiang, qingyang = keys
    # 青羊区 reaches two phones first: 锦江区's same notice to them is deduplicated.
    first = await client.post(
        "/v1/messages",
        json={"to": ["13800138000", "18612345678"], "body": "今晚七点开会"},
        headers=bearer(qingyang),
    )
    assert first.status_code == 202, first.text
    tenant = await get_by_code(conn, "510104")
    assert tenant is not None
    await conn.execute(
        "INSERT INTO opt_outs (tenant_id, phone) VALUES ($1, '+8613311112222')", tenant.id
    )
    body = {
        "to": [
            "13800138000",
            "18612345678",
            "13311112222",
            "13900001111",
            "139 0000 1111",
            "12345",
            "+85291234567",
        ],
        "body": "今晚七点开会",
    }
    before = await _rows(conn)
    preview = await client.post("/v1/messages/preview", json=body, headers=bearer(jinjiang))
    assert preview.status_code == 200, preview.text
    assert await _rows(conn) == before
    seen = preview.json()
    assert seen["counts"] == {
        "accepted": 1,
        "deduplicated": 2,
        "opted_out": 1,
        "rejected": 2,
        "repeated": 1,
    }
    assert seen["rejected"] == [
        {"to": "12345", "reason": "invalid"},
        {"to": "+85291234567", "reason": "not_mainland"},
    ]
    assert (seen["signature"], seen["text"]) == ("【锦江区】", "【锦江区】今晚七点开会")
    assert (seen["segments"], seen["list_price_micros"]) == (1, 60_000)
    # No usage yet this month and no rate card: the current price is the list price.
    assert seen["cost_micros"] == 60_000
    assert seen["quota_available"] == 1_000

    sent = await client.post("/v1/messages", json=body, headers=bearer(jinjiang))
    assert sent.status_code == 202, sent.text
    assert _shared(sent.json()) == _shared(seen)
    again = await client.post("/v1/messages/preview", json=body, headers=bearer(jinjiang))
    # The one accepted, and the two copies relying on 青羊区's originals (not delivered yet).
    assert again.json()["quota_available"] == 1_000 - 3


async def test_preview_of_a_long_text_scheduled(
    client: httpx.AsyncClient, keys: tuple[str, str]
) -> None:
    jinjiang, _ = keys
    body = {"to": ["13800138000"], "body": "会" * 195, "send_at": "2099-01-01T00:00:00+08:00"}
    preview = await client.post("/v1/messages/preview", json=body, headers=bearer(jinjiang))
    # send_at too far ahead: the same 422 as the send's.
    sent = await client.post("/v1/messages", json=body, headers=bearer(jinjiang))
    assert (preview.status_code, sent.status_code) == (422, 422)
    assert preview.json()["fields"] == sent.json()["fields"]
    body["send_at"] = (calendar.now() + timedelta(hours=3)).isoformat()
    preview = await client.post("/v1/messages/preview", json=body, headers=bearer(jinjiang))
    sent = await client.post("/v1/messages", json=body, headers=bearer(jinjiang))
    assert (preview.json()["state"], preview.json()["segments_per_message"]) == ("scheduled", 3)
    assert _shared(preview.json()) == _shared(sent.json())
    assert preview.json()["due_at"] == sent.json()["due_at"]


async def test_urgent_preview_needs_the_urgent_scope(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: tuple[str, str]
) -> None:
    plain = await make_key(conn, "510104", ALL_SCOPES - {Scope.MESSAGES_URGENT})
    body = {"to": ["13800138000"], "body": "急", "priority": "urgent"}
    preview = await client.post("/v1/messages/preview", json=body, headers=bearer(plain))
    assert preview.status_code == 403
    reader = await make_key(conn, "510104", frozenset({Scope.MESSAGES_READ}))
    body["priority"] = "normal"
    refused = await client.post("/v1/messages/preview", json=body, headers=bearer(reader))
    assert refused.status_code == 403
