"""GET /v1/usage: the month so far at the blended rate the whole hub's volume earns."""

from __future__ import annotations

import asyncpg
import httpx

from hub.billing import service as billing
from hub.billing.schemas import Band, RateCardIn
from hub.calendar import business_day, current_period
from tests.factories import bearer, make_key, make_small_tree


async def test_each_tenant_pays_its_share_of_the_tiered_hub_cost(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    month = current_period()
    # 中国移动: 0.040 yuan for the hub's first 5 segments of the month, 0.030 beyond.
    card = RateCardIn(
        carrier="中国移动",
        valid_from=month,
        mode="graduated",
        bands=[Band(0, 5, 40_000), Band(5, None, 30_000)],
    )
    await billing.add_card(conn, card, "test")
    ids = {r["code"]: r["id"] for r in await conn.fetch("SELECT code, id FROM tenants")}
    day = business_day()
    mobile = "中国移动"
    await billing.record_usage(
        conn, "billable", {(ids["510104"], mobile, day): 4, (ids["510105"], mobile, day): 4}
    )
    await billing.record_usage(conn, "billable", {(ids["510105"], "中国联通", day): 2})
    await billing.record_usage(conn, "dedup", {(ids["510104"], mobile, day): 1})
    key = await make_key(conn, "510000")

    resp = await client.get(
        "/v1/usage", params={"period": f"{month:%Y-%m}", "subtree": "true"}, headers=bearer(key)
    )
    assert resp.status_code == 200, resp.text
    view = resp.json()
    # Hub-wide 中国移动: 8 segments = 5 x 40,000 + 3 x 30,000 = 290,000 micro-yuan.
    rates = {r["carrier"]: r for r in view["rates"]}
    assert (rates["中国移动"]["hub_segments"], rates["中国移动"]["hub_cost_micros"]) == (8, 290_000)
    assert rates["中国联通"]["rate_card"] is None  # no card: list price
    tenants = {t["tenant"]: t for t in view["items"]}
    jinjiang = tenants["510104"]
    assert jinjiang["segments"] == 4
    assert jinjiang["cost_micros"] == 145_000  # 4 / 8 of 290,000
    assert jinjiang["list_price_micros"] == 240_000  # 4 x 0.06 yuan
    assert jinjiang["savings_micros"] == 95_000
    assert (jinjiang["dedup_segments"], jinjiang["dedup_savings_micros"]) == (1, 36_250)
    qingyang = tenants["510105"]
    assert qingyang["segments"] == 6
    assert qingyang["cost_micros"] == 145_000 + 2 * 60_000  # 联通 at list price
    assert qingyang["savings_micros"] == 95_000
    # Without subtree the province sees only itself (it sent nothing).
    alone = await client.get("/v1/usage", params={"period": f"{month:%Y-%m}"}, headers=bearer(key))
    assert alone.json()["items"] == []


async def test_a_bad_period_is_422(conn: asyncpg.Connection, client: httpx.AsyncClient) -> None:
    await make_small_tree(conn)
    key = await make_key(conn, "510000")
    resp = await client.get("/v1/usage", params={"period": "2026-13"}, headers=bearer(key))
    assert resp.status_code == 422
    assert resp.json()["error"] == "invalid"


async def test_usage_of_several_kinds_goes_in_at_once_each_kept_apart(
    conn: asyncpg.Connection,
) -> None:
    await make_small_tree(conn)
    ids = {r["code"]: r["id"] for r in await conn.fetch("SELECT code, id FROM tenants")}
    day = business_day()
    county, mobile = ids["510104"], "中国移动"
    await billing.record_usages(
        conn,
        {
            "delivered": {(county, mobile, day): 3},
            "undelivered": {(county, mobile, day): 0},  # nothing: no entry
            "billable": {(county, mobile, day): 3, (ids["510105"], mobile, day): 2},
        },
    )
    rows = await conn.fetch(
        "SELECT tenant_id, kind::text AS kind, segments FROM usage_entries ORDER BY 2, 1"
    )
    assert [(r["tenant_id"], r["kind"], r["segments"]) for r in rows] == [
        (county, "billable", 3),
        (ids["510105"], "billable", 2),
        (county, "delivered", 3),
    ]
