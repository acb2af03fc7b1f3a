"""A large send's numbers are normalised as its messages are written (hub.messages.service,
STREAM_FROM): the same send, counts, rejects and review as when they are checked first."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest

from hub.dedup.service import keyer
from hub.messages import service
from hub.messages.schemas import SendRequest
from tenants.service import get_by_code
from tests.factories import bearer, grant_ahead, make_key, make_small_tree

NOTICE = "今晚七点在党员活动室召开支部大会"
OPTED_OUT = ["+8613300000007", "+8613300000070"]
# Held by 青羊区's copy of the notice: 锦江区's is deduplicated (its content key is computed as
# the numbers are checked, after the opted-out ones, which have none).
HELD = "13300005003"
SHARED = ("state", "counts", "rejected", "segments", "list_price_micros")


def numbers(unique: int) -> list[str]:
    """`unique` distinct mobiles, every other one written as people paste it, each third one
    repeated, and a bad number after every thousandth."""
    raws: list[str] = []
    for i in range(unique):
        phone = f"133{i:08d}"
        raws.append(f"+86 {phone[:3]} {phone[3:7]} {phone[7:]}" if i % 2 else phone)
        if i % 3 == 0:
            raws.append(phone)
        if i % 1000 == 0:
            raws.append(f"1{i // 1000:05d}")
    return raws


@pytest.fixture
async def keys(conn: asyncpg.Connection) -> dict[str, str]:
    await make_small_tree(conn)
    await grant_ahead(
        conn,
        {
            "000000": 200_000,
            "510000": 100_000,
            "510100": 60_000,
            "510104": 20_000,
            "510105": 20_000,
        },
    )
    jinjiang = await get_by_code(conn, "510104")
    assert jinjiang is not None
    await conn.executemany(
        "INSERT INTO opt_outs (tenant_id, phone) VALUES ($1, $2)",
        [(jinjiang.id, p) for p in OPTED_OUT],
    )
    return {"jinjiang": await make_key(conn, "510104"), "qingyang": await make_key(conn, "510105")}


async def _keys_held(conn: asyncpg.Connection, send_id: int) -> int:
    """How many content keys the send's messages hold, each checked to be its own message's:
    a large send claims them with the ids its COPY gave their messages, not by phone."""
    rows = await conn.fetch(
        "SELECT d.key, m.phone FROM dedup_keys d JOIN messages m ON m.id = d.message_id"
        " WHERE m.send_id = $1",
        send_id,
    )
    key = keyer(NOTICE)
    assert [r["phone"] for r in rows if r["key"] != key(r["phone"])] == []
    return len(rows)


async def _send(client: httpx.AsyncClient, key: str, path: str, body: dict[str, Any]) -> Any:
    answer = await client.post(path, json=body, headers=bearer(key))
    assert answer.status_code in (200, 202), answer.text
    return answer.json()


async def test_a_large_send_checked_as_it_is_written_agrees_with_its_preview(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await _send(client, keys["qingyang"], "/v1/messages", {"to": [HELD], "body": NOTICE})
    to = numbers(service.STREAM_FROM)
    body = {"to": to, "to_contacts": [999_999], "body": NOTICE}
    # The preview checks every number first; the send, while it writes them.
    seen = await _send(client, keys["jinjiang"], "/v1/messages/preview", body)
    sent = await _send(client, keys["jinjiang"], "/v1/messages", body)
    assert {k: sent[k] for k in SHARED} == {k: seen[k] for k in SHARED}
    unique = service.STREAM_FROM
    assert sent["counts"] == {
        "accepted": unique - 2 - 1,
        "deduplicated": 1,
        "opted_out": 2,
        "rejected": unique // 1000 + 1,
        "repeated": len(range(0, unique, 3)),
    }
    assert sent["rejected"][-1] == {"to": "contact:999999", "reason": "unknown_contact"}
    assert [r["to"] for r in sent["rejected"][:2]] == ["100000", "100001"]

    # What was written says the same: the send's counts, its rejects and each message.
    row = await conn.fetchrow(
        "SELECT recipients, repeats, rejects FROM sends WHERE id = $1", sent["id"]
    )
    assert row is not None
    assert (row["recipients"], row["repeats"]) == (len(to) + 1, sent["counts"]["repeated"])
    assert json.loads(row["rejects"]) == sent["rejected"]
    statuses = {
        r["status"]: r["n"]
        for r in await conn.fetch(
            "SELECT status::text, count(*) AS n FROM messages WHERE send_id = $1 GROUP BY status",
            sent["id"],
        )
    }
    assert statuses == {"accepted": unique - 3, "deduplicated": 1, "opted_out": 2}
    opted = await conn.fetch(
        "SELECT phone FROM messages WHERE send_id = $1 AND status = 'opted_out' ORDER BY phone",
        sent["id"],
    )
    assert [r["phone"] for r in opted] == OPTED_OUT
    duplicate = await conn.fetchval(
        "SELECT phone FROM messages WHERE send_id = $1 AND status = 'deduplicated'", sent["id"]
    )
    assert duplicate == "+86" + HELD
    # Each key claimed (the opted-out phones, which come early, have none) is its message's.
    assert await _keys_held(conn, sent["id"]) == unique - 3


async def test_a_large_send_caught_by_a_review_rule_waits_unclaimed(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    rule = {"rule": "above", "above": service.STREAM_FROM // 2}
    put = await client.put(
        "/v1/tenants/510104/review-rule", json=rule, headers=bearer(keys["jinjiang"])
    )
    assert put.status_code == 200, put.text
    body = {"to": numbers(service.STREAM_FROM), "body": NOTICE}
    sent = await _send(client, keys["jinjiang"], "/v1/messages", body)
    assert sent["state"] == "review"
    row = await conn.fetchrow(
        "SELECT state::text, review_reason, review_due_at IS NOT NULL AS due FROM sends"
        " WHERE id = $1",
        sent["id"],
    )
    assert row is not None
    assert (row["state"], row["review_reason"] is not None, row["due"]) == ("review", True, True)
    # Its keys are claimed when it is approved, as if sent then.
    claimed = await conn.fetchval(
        "SELECT count(*) FROM dedup_keys d JOIN messages m ON m.id = d.message_id"
        " WHERE m.send_id = $1",
        sent["id"],
    )
    assert claimed == 0


async def test_which_sends_are_checked_as_they_are_written(
    conn: asyncpg.Connection, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await get_by_code(conn, "510104")
    assert tenant is not None
    large = numbers(service.STREAM_FROM)

    async def unchecked(to: list[str], body: str = NOTICE) -> bool:
        request = SendRequest(to=list[str | int](to), body=body)
        gathered = await service._gather(conn, tenant, request)
        return await service._unchecked(conn, tenant, gathered, body, None) is not None

    assert await unchecked(large)
    assert not await unchecked(large[: service.STREAM_FROM - 1])
    # A personal body needs each recipient's roster values first.
    assert not await unchecked(large, "{姓名}同志：" + NOTICE)
    # More opt-outs than are read whole.
    monkeypatch.setattr(service, "OPT_OUTS_READ_WHOLE", len(OPTED_OUT) - 1)
    assert not await unchecked(large)
    monkeypatch.setattr(service, "OPT_OUTS_READ_WHOLE", len(OPTED_OUT))
    assert await unchecked(large)
    # Once a phone was erased, each phone is checked against the erased ones first.
    await conn.execute("INSERT INTO erased_phones (hash, reason) VALUES ($1, 'x')", bytes(32))
    assert not await unchecked(large)


async def test_a_large_send_every_copy_of_which_relies_on_another_reserves_them_all(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    """青羊区 sends the notice to 10,000 phones first; 锦江区's copies all rely on its
    originals (not delivered yet), and stay reserved until they are. (Their segments were once
    summed against a set rebuilt per recipient: quadratic, hours of CPU for a million.)"""
    to = [f"133{i:08d}" for i in range(service.STREAM_FROM)]
    first = await _send(client, keys["qingyang"], "/v1/messages", {"to": to, "body": NOTICE})
    assert first["counts"]["accepted"] == service.STREAM_FROM
    assert await _keys_held(conn, first["id"]) == service.STREAM_FROM  # none held: all free
    sent = await _send(client, keys["jinjiang"], "/v1/messages", {"to": to, "body": NOTICE})
    unique = service.STREAM_FROM - len(OPTED_OUT)
    assert (sent["counts"]["accepted"], sent["counts"]["deduplicated"]) == (0, unique)
    reserved = await conn.fetchval(
        "SELECT r.amount FROM quota_reservations r JOIN sends s ON s.reservation_id = r.id"
        " WHERE s.id = $1",
        sent["id"],
    )
    assert reserved == unique
