"""POST /v1/messages and the reads of a send, on the real database."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from hub.messages.service import INSERTED
from tenants.service import get_by_code
from tests.factories import bearer, grant, make_key, make_small_tree

PHONES = ["13800138000", "18612345678", "13311112222"]


@pytest.fixture
async def county_key(conn: asyncpg.Connection) -> str:
    await make_small_tree(conn)
    await grant(
        conn, {"000000": 10_000, "510000": 5_000, "510100": 3_000, "510104": 1_000, "510105": 1_000}
    )
    return await make_key(conn, "510104")


async def test_send_counts_rejects_repeats_and_reserves_once(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county_key: str
) -> None:
    resp = await client.post(
        "/v1/messages",
        json={"to": [*PHONES, 13800138000, "12345", "+85291234567", ""], "body": "今晚七点开会"},
        headers=bearer(county_key),
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["counts"] == {
        "accepted": 3,
        "deduplicated": 0,
        "opted_out": 0,
        "rejected": 3,
        "repeated": 1,  # 13800138000 as a JSON number is PHONES[0] again
    }
    assert body["rejected"] == [
        {"to": "12345", "reason": "invalid"},
        {"to": "+85291234567", "reason": "not_mainland"},
        {"to": "", "reason": "malformed"},
    ]
    assert (body["segments_per_message"], body["segments"]) == (1, 3)
    assert body["list_price_micros"] == 3 * 60_000
    reservations = await conn.fetch("SELECT amount, cause FROM quota_reservations")
    assert [(r["amount"], r["cause"]) for r in reservations] == [(3, f"send:{body['id']}")]


async def test_every_recipient_bad_still_answers_and_reserves_nothing(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county_key: str
) -> None:
    resp = await client.post(
        "/v1/messages", json={"to": ["1", "2"], "body": "x"}, headers=bearer(county_key)
    )
    assert resp.status_code == 202
    assert resp.json()["counts"]["accepted"] == 0
    assert await conn.fetchval("SELECT count(*) FROM quota_reservations") == 0


async def test_long_body_is_segmented_and_over_500_is_422(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county_key: str
) -> None:
    # 【锦江区】 is 5 units: 5 + 195 = 200 → ceil(200 / 67) = 3 segments.
    resp = await client.post(
        "/v1/messages", json={"to": PHONES[:1], "body": "会" * 195}, headers=bearer(county_key)
    )
    assert resp.json()["segments_per_message"] == 3
    too_long = await client.post(
        "/v1/messages", json={"to": PHONES[:1], "body": "会" * 496}, headers=bearer(county_key)
    )
    assert too_long.status_code == 422
    assert too_long.json()["fields"][0]["key"] == "body"


async def test_quota_shortfall_is_429_and_stores_nothing(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county_key: str
) -> None:
    await grant(conn, {"510104": 2})
    resp = await client.post(
        "/v1/messages", json={"to": PHONES, "body": "通知"}, headers=bearer(county_key)
    )
    assert resp.status_code == 429
    answer = resp.json()
    assert (answer["error"], answer["tenant"], answer["requested"], answer["limit"]) == (
        "quota_exhausted",
        "510104",
        3,
        2,
    )
    for table in ("sends", "messages", "dedup_keys", "quota_reservations"):
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_the_same_notice_from_two_tiers_reaches_a_phone_once(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county_key: str
) -> None:
    city_key = await make_key(conn, "510100")
    first = await client.post(
        "/v1/messages",
        json={"to": PHONES[:2], "body": "请于周五前 提交材料"},
        headers=bearer(city_key),
    )
    second = await client.post(
        "/v1/messages",
        json={"to": PHONES, "body": "请于周五前  提交材料"},  # same text, other spacing
        headers=bearer(county_key),
    )
    counts = second.json()["counts"]
    assert (counts["accepted"], counts["deduplicated"]) == (1, 2)
    assert second.json()["segments"] == 1
    page = (
        await client.get(
            f"/v1/messages/{second.json()['id']}/recipients",
            params={"status": "deduplicated"},
            headers=bearer(county_key),
        )
    ).json()
    # The city is above the county, outside its subtree: the county learns only that another
    # sender's copy reached those phones — not who, not which message.
    assert [
        (m["duplicate_source"], m["duplicate_tenant"], m["duplicate_of"]) for m in page["items"]
    ] == [("another_sender", None, None)] * 2
    originals = [
        r["id"]
        for r in await conn.fetch("SELECT id FROM messages WHERE send_id = $1", first.json()["id"])
    ]
    raw = (
        await client.get(
            f"/v1/messages/{second.json()['id']}/recipients", headers=bearer(county_key)
        )
    ).text
    assert "510100" not in raw
    assert not any(f'"duplicate_of":{i}' in raw for i in originals)


async def test_dedup_names_the_copy_only_within_the_callers_subtree(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county_key: str
) -> None:
    city_key = await make_key(conn, "510100")
    await grant(conn, {"520000": 100})
    other_key = await make_key(conn, "520000")
    first = await client.post(
        "/v1/messages", json={"to": PHONES[:1], "body": "周五开会"}, headers=bearer(county_key)
    )
    original = await conn.fetchval("SELECT id FROM messages WHERE send_id = $1", first.json()["id"])
    views = {}
    for who, key in (("city", city_key), ("province elsewhere", other_key)):
        sent = await client.post(
            "/v1/messages", json={"to": PHONES[:1], "body": "周五开会"}, headers=bearer(key)
        )
        assert sent.json()["counts"]["deduplicated"] == 1, who
        page = await client.get(f"/v1/messages/{sent.json()['id']}/recipients", headers=bearer(key))
        [views[who]] = page.json()["items"]
    # The county is in the city's subtree: the city may follow the link.
    city = views["city"]
    assert (city["duplicate_source"], city["duplicate_tenant"], city["duplicate_of"]) == (
        "subtree",
        "510104",
        original,
    )
    # 贵州省 is told only that the same notice reached the phone from another sender.
    other = views["province elsewhere"]
    assert (other["duplicate_source"], other["duplicate_tenant"], other["duplicate_of"]) == (
        "another_sender",
        None,
        None,
    )


async def test_dedup_off_sends_anyway(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county_key: str
) -> None:
    for _ in range(2):
        resp = await client.post(
            "/v1/messages",
            json={"to": PHONES[:1], "body": "提醒", "dedup": "off"},
            headers=bearer(county_key),
        )
        assert resp.json()["counts"]["accepted"] == 1


async def test_opted_out_phones_are_kept_but_not_reserved(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county_key: str
) -> None:
    tenant = await get_by_code(conn, "510104")
    assert tenant is not None
    await conn.execute(
        "INSERT INTO opt_outs (tenant_id, phone) VALUES ($1, '+8613800138000')", tenant.id
    )
    resp = await client.post(
        "/v1/messages", json={"to": PHONES, "body": "通知"}, headers=bearer(county_key)
    )
    assert resp.json()["counts"]["opted_out"] == 1
    assert resp.json()["segments"] == 2
    view = await client.get(f"/v1/messages/{resp.json()['id']}", headers=bearer(county_key))
    assert view.json()["statuses"] == {"accepted": 2, "opted_out": 1}


async def test_idempotency_key_replays_and_guards(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county_key: str
) -> None:
    headers = {**bearer(county_key), "Idempotency-Key": "send-2026-11-26-001"}
    payload = {"to": PHONES, "body": "重试也只发一次"}
    first = await client.post("/v1/messages", json=payload, headers=headers)
    again = await client.post("/v1/messages", json=payload, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await conn.fetchval("SELECT count(*) FROM sends") == 1
    other = await client.post("/v1/messages", json={**payload, "body": "别的"}, headers=headers)
    assert other.status_code == 422
    # Another tenant may use the same key for its own request.
    sibling = await make_key(conn, "510105")
    theirs = await client.post(
        "/v1/messages",
        json={**payload, "dedup": "off"},
        headers={**bearer(sibling), "Idempotency-Key": "send-2026-11-26-001"},
    )
    assert theirs.status_code == 202
    assert theirs.json()["id"] != first.json()["id"]


async def test_reads_are_limited_to_the_subtree(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county_key: str
) -> None:
    sent = await client.post(
        "/v1/messages", json={"to": PHONES, "body": "通知"}, headers=bearer(county_key)
    )
    send_id = sent.json()["id"]
    city = await make_key(conn, "510100")
    sibling = await make_key(conn, "510105")
    assert (await client.get(f"/v1/messages/{send_id}", headers=bearer(city))).status_code == 200
    hidden = await client.get(f"/v1/messages/{send_id}", headers=bearer(sibling))
    assert hidden.status_code == 404
    assert (await client.get("/v1/messages/999999", headers=bearer(city))).status_code == 404


async def test_recipients_are_paged(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county_key: str
) -> None:
    phones = [f"1380013{n:04d}" for n in range(7)]
    sent = await client.post(
        "/v1/messages", json={"to": phones, "body": "分页"}, headers=bearer(county_key)
    )
    seen: list[str] = []
    after = 0
    while True:
        page = (
            await client.get(
                f"/v1/messages/{sent.json()['id']}/recipients",
                params={"after": after, "limit": 3},
                headers=bearer(county_key),
            )
        ).json()
        seen += [m["phone"] for m in page["items"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == [f"+86{p}" for p in phones]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"to": [], "body": "x"}, "to"),
        ({"body": "x"}, "to"),
        ({"to": ["13800138000"]}, "body"),
        ({"to": ["13800138000"], "body": "a\x00b"}, "body"),
        ({"to": ["13800138000"], "body": ""}, "body"),
        ({"to": ["13800138000"], "body": "x", "priority": "asap"}, "priority"),
        ({"to": ["13800138000"], "body": "x", "cc": []}, "cc"),
    ],
)
async def test_invalid_send_is_422(
    client: httpx.AsyncClient, county_key: str, payload: dict[str, object], field: str
) -> None:
    resp = await client.post("/v1/messages", json=payload, headers=bearer(county_key))
    assert resp.status_code == 422
    assert resp.json()["fields"][0]["key"] == field


@pytest.mark.parametrize("extra", [0, 1])
async def test_inserted_and_copied_messages_are_the_same_rows(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county_key: str, extra: int
) -> None:
    """A send of at most INSERTED recipients writes its messages by INSERT, a larger one by
    COPY: the same rows either way, their ids in the order the recipients were given."""
    tenant = await get_by_code(conn, "510104")
    assert tenant is not None
    phones = [f"{('138', '150', '186')[n % 3]}{n:08d}" for n in range(INSERTED + extra)]
    for phone in phones[::7]:
        await conn.execute(
            "INSERT INTO opt_outs (tenant_id, phone) VALUES ($1, $2)", tenant.id, f"+86{phone}"
        )
    resp = await client.post(
        "/v1/messages",
        json={"to": phones, "body": f"今晚七点开会 {extra}"},
        headers=bearer(county_key),
    )
    assert resp.status_code == 202, resp.text
    rows = await conn.fetch(
        "SELECT send_id, tenant_id, phone, carrier, status::text AS status, segments, body"
        " FROM messages WHERE send_id = $1 ORDER BY id",
        resp.json()["id"],
    )
    assert [r["phone"] for r in rows] == [f"+86{p}" for p in phones]
    assert {(r["send_id"], r["tenant_id"], r["segments"], r["body"]) for r in rows} == {
        (resp.json()["id"], tenant.id, 1, None)
    }
    statuses = [r["status"] for r in rows]
    assert statuses == ["opted_out" if n % 7 == 0 else "accepted" for n in range(len(phones))]
    assert all(r["carrier"] for r in rows)
