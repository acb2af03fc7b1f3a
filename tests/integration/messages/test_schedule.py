"""Scheduled sends, quiet hours and cancelling, with the clock pinned where it matters."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import asyncpg
import httpx
import msgspec
import pytest

from hub import calendar
from hub.calendar import BUSINESS_TZ, current_period, next_period, period_of
from hub.messages import service as messages
from hub.messages.schemas import SendRequest
from hub.settings import Settings
from tenants.service import Principal, authenticate, get_by_code
from tests.factories import bearer, grant, make_key, make_small_tree

PHONES: list[str | int] = ["13800138000", "18612345678"]
LIMITS = {"000000": 10_000, "510000": 5_000, "510100": 3_000, "510104": 1_000}


@pytest.fixture
async def county(conn: asyncpg.Connection) -> str:
    await make_small_tree(conn)
    month = current_period()
    for _ in range(3):  # this month and the next two: a send scheduled ahead may cross into them
        await grant(conn, LIMITS, month)
        month = next_period(month)
    return await make_key(conn, "510104")


async def test_future_send_is_scheduled_and_charged_to_its_month(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str
) -> None:
    at = (calendar.now() + timedelta(days=32)).replace(hour=2, minute=0)  # 10:00 Shanghai
    resp = await client.post(
        "/v1/messages",
        json={"to": PHONES, "body": "下月例会", "send_at": at.isoformat()},
        headers=bearer(county),
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["state"] == "scheduled"
    assert datetime.fromisoformat(body["due_at"]) == at
    period = await conn.fetchval("SELECT period FROM quota_reservations")
    assert period == period_of(at)


async def test_send_at_must_have_a_timezone_and_not_be_too_far(
    client: httpx.AsyncClient, county: str
) -> None:
    naive = await client.post(
        "/v1/messages",
        json={"to": PHONES, "body": "x", "send_at": "2027-01-01T09:00:00"},
        headers=bearer(county),
    )
    assert naive.status_code == 422
    far = (calendar.now() + timedelta(days=200)).isoformat()
    too_far = await client.post(
        "/v1/messages", json={"to": PHONES, "body": "x", "send_at": far}, headers=bearer(county)
    )
    assert too_far.status_code == 422
    assert too_far.json()["fields"][0]["key"] == "send_at"


async def test_cancel_releases_quota_and_dedup_and_is_once(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str
) -> None:
    at = (calendar.now() + timedelta(hours=3)).isoformat()
    sent = await client.post(
        "/v1/messages",
        json={"to": PHONES, "body": "取消的通知", "send_at": at},
        headers=bearer(county),
    )
    send_id = sent.json()["id"]
    assert (
        await client.delete(f"/v1/messages/{send_id}", headers=bearer(county))
    ).status_code == 204
    view = (await client.get(f"/v1/messages/{send_id}", headers=bearer(county))).json()
    assert (view["state"], view["statuses"]) == ("cancelled", {"cancelled": 2})
    assert await conn.fetchval("SELECT status::text FROM quota_reservations") == "voided"
    assert await conn.fetchval("SELECT count(*) FROM dedup_keys") == 0
    again = await client.delete(f"/v1/messages/{send_id}", headers=bearer(county))
    assert again.status_code == 409
    now = await client.post(
        "/v1/messages", json={"to": PHONES, "body": "取消的通知"}, headers=bearer(county)
    )
    assert now.json()["counts"]["accepted"] == 2  # the cancelled send no longer deduplicates
    queued = await client.delete(f"/v1/messages/{now.json()['id']}", headers=bearer(county))
    assert queued.status_code == 409


async def _principal(conn: asyncpg.Connection, key: str) -> Principal:
    principal = await authenticate(conn, key)
    assert principal is not None
    return principal


async def test_quiet_hours_hold_normal_sends_not_urgent_ones(
    conn: asyncpg.Connection, county: str, settings: Settings
) -> None:
    quiet = msgspec.structs.replace(
        settings, messages=msgspec.structs.replace(settings.messages, quiet_hours=True)
    )
    tenant = await get_by_code(conn, "510104")
    assert tenant is not None
    who = f"key:{(await _principal(conn, county)).key_prefix}"
    night = datetime(2026, 12, 31, 23, 30, tzinfo=BUSINESS_TZ)  # and the year ends tonight
    await grant(conn, LIMITS, date(2026, 12, 1))  # December's quota only: January has none yet
    normal = await messages.create_send(
        conn, tenant, who, SendRequest(to=PHONES, body="夜间通知"), quiet, now=night
    )
    assert normal.state == "held"
    assert normal.held_until == (night + timedelta(days=1)).replace(hour=8, minute=0)
    assert normal.due_at == normal.held_until
    urgent = await messages.create_send(
        conn,
        tenant,
        who,
        SendRequest(to=PHONES, body="紧急通知", priority="urgent"),
        quiet,
        now=night,
    )
    assert (urgent.state, urgent.held_until) == ("queued", None)
    # Held into January, the normal send still uses the month it was sent in.
    periods = await conn.fetch("SELECT period FROM quota_reservations ORDER BY id")
    assert [r["period"] for r in periods] == [date(2026, 12, 1), date(2026, 12, 1)]


async def test_a_tenant_can_switch_quiet_hours_off(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str
) -> None:
    shown = (await client.get("/v1/tenants/510104/quiet-hours", headers=bearer(county))).json()
    assert shown["source"] == "operator"
    put = await client.put(
        "/v1/tenants/510104/quiet-hours", json={"enabled": False}, headers=bearer(county)
    )
    assert put.json() == {
        "tenant": "510104",
        "enabled": False,
        "starts": "22:00",
        "ends": "08:00",
        "source": "tenant",
    }
    bad = await client.put(
        "/v1/tenants/510104/quiet-hours",
        json={"enabled": True, "starts": "25:00"},
        headers=bearer(county),
    )
    assert bad.status_code == 422


async def test_due_sends_are_released(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str
) -> None:
    at = (calendar.now() + timedelta(hours=1)).isoformat()
    sent = await client.post(
        "/v1/messages",
        json={"to": PHONES, "body": "一小时后", "send_at": at},
        headers=bearer(county),
    )
    assert await messages.release_due(conn) == []
    await conn.execute(
        "UPDATE sends SET due_at = hub_now() - interval '1 second' WHERE id = $1", sent.json()["id"]
    )
    assert await messages.release_due(conn) == [sent.json()["id"]]
    view = (await client.get(f"/v1/messages/{sent.json()['id']}", headers=bearer(county))).json()
    assert view["state"] == "queued"
