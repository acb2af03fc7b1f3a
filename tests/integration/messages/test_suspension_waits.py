"""A suspended subtree's sends wait: parked when due, nothing of them released, expired or
claimed, their quota kept however long it lasts; they go on once the suspension ends."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
import httpx
import msgspec
import pytest

from hub import calendar
from hub.calendar import BUSINESS_TZ
from hub.delivery import repository as delivery_sql
from hub.messages import service as messages
from hub.quota import service as quota
from hub.settings import Settings
from tests.factories import bearer, grant_ahead, make_key, make_small_tree

PHONES = ["13800138000", "18612345678"]


@pytest.fixture
async def keys(conn: asyncpg.Connection) -> dict[str, str]:
    await make_small_tree(conn)
    limits = {"000000": 10_000, "510000": 5_000, "510100": 3_000, "510104": 1_000}
    await grant_ahead(conn, limits | {"510104001": 100, "510105": 100})
    return {c: await make_key(conn, c) for c in ("510000", "510104", "510104001", "510105")}


async def _send(client: httpx.AsyncClient, key: str, **fields: object) -> int:
    body = {"to": PHONES, "body": "通知", "dedup": "off", **fields}
    resp = await client.post("/v1/messages", json=body, headers=bearer(key))
    assert resp.status_code == 202, resp.text
    return int(resp.json()["id"])


async def _status(client: httpx.AsyncClient, key: str, code: str, status: str) -> None:
    resp = await client.patch(f"/v1/tenants/{code}", json={"status": status}, headers=bearer(key))
    assert resp.status_code == 200, resp.text


async def _sends(conn: asyncpg.Connection) -> dict[int, tuple[str, bool]]:
    rows = await conn.fetch("SELECT id, state::text, parked_at IS NOT NULL AS parked FROM sends")
    return {r["id"]: (r["state"], r["parked"]) for r in rows}


async def _reservations(conn: asyncpg.Connection) -> dict[int, tuple[str, datetime]]:
    rows = await conn.fetch(
        "SELECT s.id, r.status::text, r.expires_at FROM sends s "
        "JOIN quota_reservations r ON r.id = s.reservation_id"
    )
    return {r["id"]: (r["status"], r["expires_at"]) for r in rows}


async def test_scheduled_sends_wait_out_a_long_suspension_then_go(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str], settings: Settings
) -> None:
    at = (calendar.now() + timedelta(hours=1)).isoformat()
    county = await _send(client, keys["510104"], send_at=at)
    unit = await _send(client, keys["510104001"], send_at=at)
    sibling = await _send(client, keys["510105"], send_at=at)
    await _status(client, keys["510000"], "510104", "suspended")

    await conn.execute("UPDATE sends SET due_at = hub_now() - interval '1 second'")  # the hour
    assert await messages.park_suspended(conn) == 2
    assert await messages.release_due(conn) == [sibling]
    assert await _sends(conn) == {
        county: ("scheduled", True),
        unit: ("scheduled", True),
        sibling: ("queued", False),
    }
    # Three days pass: nothing of the parked sends expires, their quota stays reserved.
    await conn.execute(
        "UPDATE sends SET due_at = due_at - interval '3 days' WHERE id = ANY($1)", [county, unit]
    )
    assert await quota.expire_due(conn) == 0
    assert await messages.release_due(conn) == []
    assert await messages.unpark_resumed(conn, settings) == []
    assert {s for s, _ in (await _reservations(conn)).values()} == {"pending"}

    await _status(client, keys["510000"], "510104", "active")
    assert sorted(await messages.unpark_resumed(conn, settings)) == [county, unit]
    assert await messages.park_suspended(conn) == 0
    assert await _sends(conn) == {
        county: ("queued", False),
        unit: ("queued", False),
        sibling: ("queued", False),
    }
    # As if due now: their validity and their reservations' timeout start afresh.
    now = await conn.fetchval("SELECT hub_now()")
    due = await conn.fetch("SELECT due_at FROM sends WHERE id = ANY($1)", [county, unit])
    assert {r["due_at"] for r in due} == {now}
    ttl = timedelta(seconds=settings.quota.reservation_ttl_seconds)
    reservations = await _reservations(conn)
    assert reservations[county] == reservations[unit] == ("pending", now + ttl)


async def test_a_cancelled_parked_send_releases_its_quota(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str], settings: Settings
) -> None:
    at = (calendar.now() + timedelta(hours=1)).isoformat()
    send = await _send(client, keys["510104001"], send_at=at)
    await _status(client, keys["510000"], "510104", "suspended")
    await conn.execute("UPDATE sends SET due_at = hub_now() - interval '1 second'")
    assert await messages.park_suspended(conn) == 1
    cancelled = await client.delete(f"/v1/messages/{send}", headers=bearer(keys["510104001"]))
    assert cancelled.status_code == 204, cancelled.text
    assert (await _reservations(conn))[send][0] == "voided"
    await _status(client, keys["510000"], "510104", "active")
    assert await messages.unpark_resumed(conn, settings) == []
    assert await _sends(conn) == {send: ("cancelled", False)}


async def test_after_a_suspension_normal_sends_still_keep_quiet_hours(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str], settings: Settings
) -> None:
    quiet = msgspec.structs.replace(
        settings, messages=msgspec.structs.replace(settings.messages, quiet_hours=True)
    )
    normal = await _send(client, keys["510104"])
    urgent = await _send(client, keys["510104"], priority="urgent")
    await _status(client, keys["510000"], "510104", "suspended")
    # (The test's transaction reads one hub_now(), from before these sends were made.)
    await conn.execute("UPDATE sends SET due_at = hub_now() - interval '1 second'")
    assert await messages.park_suspended(conn) == 2
    await _status(client, keys["510000"], "510104", "active")

    night = datetime(2027, 3, 16, 23, 30, tzinfo=BUSINESS_TZ)
    assert await messages.unpark_resumed(conn, quiet, now=night) == [urgent]
    morning = datetime(2027, 3, 17, 8, 0, tzinfo=BUSINESS_TZ)
    assert await messages.unpark_resumed(conn, quiet, now=morning) == [normal]


async def test_nothing_of_a_suspended_send_is_claimed(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    """Delivery's own checks, per batch and per chunk, for a send queued before the suspension
    (the worker may hold its batch job already)."""
    send = await _send(client, keys["510104001"])
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM messages WHERE send_id = $1", send)]
    carrier = await conn.fetchval("SELECT carrier FROM messages WHERE id = $1", ids[0])

    async def claim() -> list[asyncpg.Record]:
        return await conn.fetch(
            delivery_sql.CLAIM, send, carrier, min(ids), max(ids), "outbox", 60.0, 100, True
        )

    await _status(client, keys["510000"], "510100", "suspended")
    assert await conn.fetchrow(delivery_sql.SEND_INFO, send) is None
    assert await claim() == []
    assert await conn.fetch(delivery_sql.OPEN_SENDS, "urgent", 0, 100) == []

    await _status(client, keys["510000"], "510100", "active")
    assert await conn.fetchrow(delivery_sql.SEND_INFO, send) is not None
    assert len(await claim()) >= 1
