"""Dedup follows when a copy goes out (layer 3 of DESIGN.md): a copy due later never suppresses
one due earlier, windows run from due times, and a cancelled original hands its phones on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from hub import calendar
from hub.calendar import current_period, next_period
from hub.messages import service as messages
from tests.factories import bearer, grant, make_key, make_small_tree

PHONE = "+8613800138000"
BODY = "请于明日九时参加理论学习中心组集体学习"
LIMITS = {"000000": 10_000, "510000": 5_000, "510100": 3_000, "510104": 1_000, "520000": 1_000}


@pytest.fixture
async def county(conn: asyncpg.Connection) -> str:
    await make_small_tree(conn)
    month = current_period()
    for _ in range(2):  # a copy scheduled for tomorrow may fall in next month
        await grant(conn, LIMITS, month)
        month = next_period(month)
    return await make_key(conn, "510104")


def _at(hours: float) -> str:
    return (calendar.now() + timedelta(hours=hours)).isoformat()


async def _send(
    client: httpx.AsyncClient, key: str, *, hours: float | None = None, **extra: str
) -> Any:
    payload: dict[str, object] = {"to": [PHONE], "body": BODY, **extra}
    if hours is not None:
        payload["send_at"] = _at(hours)
    answer = await client.post("/v1/messages", json=payload, headers=bearer(key))
    assert answer.status_code == 202, answer.text
    return answer.json()


async def _message(conn: asyncpg.Connection, send_id: object) -> asyncpg.Record:
    record = await conn.fetchrow(
        "SELECT id, status::text AS status, duplicate_of, done_at FROM messages WHERE send_id = $1",
        send_id,
    )
    assert record is not None
    return record


async def _reserved(conn: asyncpg.Connection, send_id: object) -> tuple[int, str] | None:
    record = await conn.fetchrow(
        "SELECT r.amount, r.status::text AS status FROM quota_reservations r"
        " JOIN sends s ON s.reservation_id = r.id WHERE s.id = $1",
        send_id,
    )
    return None if record is None else (record["amount"], record["status"])


async def test_an_urgent_notice_now_is_not_swallowed_by_the_copy_scheduled_for_tomorrow(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str
) -> None:
    tomorrow = await _send(client, county, hours=20)
    assert tomorrow["counts"]["accepted"] == 1
    # The city above sends the same text as an urgent notice, now.
    city = await make_key(conn, "510100")
    urgent = await _send(client, city, priority="urgent")
    assert (urgent["state"], urgent["counts"]["accepted"]) == ("queued", 1)
    assert urgent["counts"]["deduplicated"] == 0

    # The copy due tomorrow is the duplicate now: it relies on the urgent one and is not sent,
    # and its segment stays reserved until the urgent one has gone out.
    now_copy = await _message(conn, urgent["id"])
    later = await _message(conn, tomorrow["id"])
    assert now_copy["status"] == "accepted"
    assert (later["status"], later["duplicate_of"], later["done_at"]) == (
        "deduplicated",
        now_copy["id"],
        None,
    )
    assert await _reserved(conn, tomorrow["id"]) == (1, "pending")
    holder = await conn.fetchval("SELECT message_id FROM dedup_keys")
    assert holder == now_copy["id"]
    # The county learns only that another sender's copy reaches the phone, nothing of the city.
    page = await client.get(f"/v1/messages/{tomorrow['id']}/recipients", headers=bearer(county))
    [item] = page.json()["items"]
    assert (item["status"], item["duplicate_source"], item["duplicate_tenant"]) == (
        "deduplicated",
        "another_sender",
        None,
    )
    assert item["duplicate_of"] is None
    assert "510100" not in page.text


async def test_the_window_runs_from_the_due_time(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str
) -> None:
    first = await _send(client, county, hours=1)
    # Due 23 h after the first: within its 24 h window, a duplicate.
    within = await _send(client, county, hours=24)
    assert within["counts"]["deduplicated"] == 1
    # Due 25 h after the first: outside it, the phone gets this one too.
    beyond = await _send(client, county, hours=26)
    assert beyond["counts"] == {
        "accepted": 1,
        "deduplicated": 0,
        "opted_out": 0,
        "rejected": 0,
        "repeated": 0,
    }
    first_message = await _message(conn, first["id"])
    assert (await _message(conn, within["id"]))["duplicate_of"] == first_message["id"]
    key = await conn.fetchrow("SELECT message_id, due_at, expires_at FROM dedup_keys")
    assert key is not None
    assert key["message_id"] == (await _message(conn, beyond["id"]))["id"]
    assert key["expires_at"] - key["due_at"] == timedelta(hours=24)


async def test_cancelling_the_original_hands_the_phone_to_the_next_copy(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str
) -> None:
    original = await _send(client, county, hours=1)
    city = await make_key(conn, "510100")
    second = await _send(client, city, hours=2)
    third = await _send(client, county, hours=3)
    assert second["counts"]["deduplicated"] == third["counts"]["deduplicated"] == 1
    assert await _reserved(conn, second["id"]) == (1, "pending")

    cancelled = await client.delete(f"/v1/messages/{original['id']}", headers=bearer(county))
    assert cancelled.status_code == 204

    # The copy due next goes out instead: accepted again, still reserved, holding the key; the
    # one after it now relies on that copy.
    heir = await _message(conn, second["id"])
    assert (heir["status"], heir["duplicate_of"]) == ("accepted", None)
    assert await _reserved(conn, second["id"]) == (1, "pending")
    assert await conn.fetchval("SELECT message_id FROM dedup_keys") == heir["id"]
    last = await _message(conn, third["id"])
    assert (last["status"], last["duplicate_of"]) == ("deduplicated", heir["id"])
    # When its time comes, it is released to delivery like any send.
    await conn.execute(
        "UPDATE sends SET due_at = hub_now() - interval '1 second' WHERE id = $1", second["id"]
    )
    assert second["id"] in await messages.release_due(conn)
    batches = await conn.fetch(
        "SELECT m.id FROM messages m JOIN sends s ON s.id = m.send_id"
        " WHERE s.state = 'queued' AND m.status = 'accepted'"
    )
    assert [r["id"] for r in batches] == [heir["id"]]


async def test_cancelling_a_relying_copy_lets_go_of_its_reservation_and_nothing_else(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str
) -> None:
    original = await _send(client, county, hours=1)
    copy = await _send(client, county, hours=2)
    assert (
        await client.delete(f"/v1/messages/{copy['id']}", headers=bearer(county))
    ).status_code == 204
    assert await _reserved(conn, copy["id"]) == (1, "voided")
    # Cancelling the original afterwards hands nothing to the cancelled copy.
    assert (
        await client.delete(f"/v1/messages/{original['id']}", headers=bearer(county))
    ).status_code == 204
    assert (await _message(conn, copy["id"]))["status"] == "deduplicated"
    assert await conn.fetchval("SELECT count(*) FROM dedup_keys") == 0


async def test_a_copy_the_carrier_reported_undelivered_suppresses_nothing(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str
) -> None:
    first = await _send(client, county)
    # Its receipt said it never reached the phone.
    await conn.execute(
        "UPDATE messages SET status = 'undelivered', done_at = hub_now() WHERE send_id = $1",
        first["id"],
    )
    again = await _send(client, county)
    assert (again["counts"]["accepted"], again["counts"]["deduplicated"]) == (1, 0)
