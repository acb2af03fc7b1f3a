"""POST/GET /v1/billing/rate-cards: the operator's tiered cards, refused with reasons."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from tests.factories import bearer, make_key, make_small_tree

CARD = {
    "carrier": "中国移动",
    "valid_from": "2026-12-01",
    "mode": "graduated",
    "bands": [
        {"from": 0, "to": 1_000_000, "price_micros": 45_000},
        {"from": 1_000_000, "to": None, "price_micros": 40_000},
    ],
}


@pytest.fixture
async def operator(conn: asyncpg.Connection) -> str:
    await make_small_tree(conn)
    return await make_key(conn, "000000")


async def test_the_operator_adds_and_lists_cards(
    conn: asyncpg.Connection, client: httpx.AsyncClient, operator: str
) -> None:
    resp = await client.post("/v1/billing/rate-cards", json=CARD, headers=bearer(operator))
    assert resp.status_code == 201, resp.text
    card = resp.json()
    logged = await conn.fetchrow(
        "SELECT actor, object FROM operation_log WHERE action = 'billing.rate_card'"
    )
    assert logged is not None
    assert dict(logged) == {
        "actor": f"key:{operator.split('_')[1]}",
        "object": f"rate_card:{card['id']}",
    }
    assert card["bands"] == CARD["bands"]
    assert card["list_price_micros"] == 60_000  # the default: 0.06 yuan
    listed = await client.get(
        "/v1/billing/rate-cards", params={"carrier": "中国移动"}, headers=bearer(operator)
    )
    assert [c["id"] for c in listed.json()["items"]] == [card["id"]]


async def test_the_same_carrier_and_month_twice_is_a_conflict(
    client: httpx.AsyncClient, operator: str
) -> None:
    assert (
        await client.post("/v1/billing/rate-cards", json=CARD, headers=bearer(operator))
    ).status_code == 201
    again = await client.post("/v1/billing/rate-cards", json=CARD, headers=bearer(operator))
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {
                "bands": [
                    {"from": 0, "to": 10, "price_micros": 5},
                    {"from": 20, "to": None, "price_micros": 4},
                ]
            },
            "gap",
        ),
        (
            {
                "bands": [
                    {"from": 0, "to": 10, "price_micros": 5},
                    {"from": 10, "to": None, "price_micros": 6},
                ]
            },
            "prices may only fall",
        ),
        ({"bands": [{"from": 0, "to": None, "price_micros": -1}]}, "price_micros"),
        ({"valid_from": "2026-12-15"}, "first day of a month"),
        ({"mode": "tiered"}, "mode"),
        ({"carrier": "某运营商"}, "carrier"),
    ],
)
async def test_invalid_cards_are_422_with_the_reason(
    client: httpx.AsyncClient, operator: str, change: dict[str, object], reason: str
) -> None:
    resp = await client.post(
        "/v1/billing/rate-cards", json={**CARD, **change}, headers=bearer(operator)
    )
    assert resp.status_code == 422, resp.text
    assert reason in resp.text


async def test_only_the_operator_manages_cards(
    client: httpx.AsyncClient, conn: asyncpg.Connection, operator: str
) -> None:
    province = await make_key(conn, "510000")
    resp = await client.post("/v1/billing/rate-cards", json=CARD, headers=bearer(province))
    assert resp.status_code == 403
