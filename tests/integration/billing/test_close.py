"""POST /v1/billing/{period}/close: the hub's cost per carrier, allocated to the fen, exactly."""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg
import httpx
import pytest

from hub.billing import service as billing
from hub.errors import Conflict
from tests.factories import bearer, make_key
from tests.integration.billing.conftest import OCTOBER, close, usage


async def test_close_allocates_the_hub_cost_to_the_fen_and_is_idempotent(
    conn: asyncpg.Connection, client: httpx.AsyncClient, operator: str
) -> None:
    resp = await client.post("/v1/billing/2026-10/close", headers=bearer(operator))
    assert resp.status_code == 200, resp.text
    summary = resp.json()
    # 7 segments: 5 x 0.040 + 2 x 0.030 = 0.26 yuan = 26 fen; 联通 2 x 0.06 = 12 fen.
    assert [(c["carrier"], c["segments"], c["cost_micros"]) for c in summary["carriers"]] == [
        ("中国移动", 7, 260_000),
        ("中国联通", 2, 120_000),
    ]
    assert summary["cost_micros"] == 380_000  # the lines add up to the carriers' costs exactly
    lines = await conn.fetch(
        "SELECT t.code, l.carrier, l.segments, l.cost_micros FROM billing_lines l"
        " JOIN tenants t ON t.id = l.tenant_id ORDER BY l.carrier, t.code"
    )
    # 26 fen over 3 : 3 : 1 = 11.14 + 11.14 + 3.71: floors 11 + 11 + 3, the last fen to 3.71.
    assert [(r["code"], r["carrier"], r["segments"], r["cost_micros"]) for r in lines] == [
        ("510104", "中国移动", 3, 110_000),
        ("510105", "中国移动", 3, 110_000),
        ("510300", "中国移动", 1, 40_000),
        ("510104", "中国联通", 2, 120_000),
    ]
    again = await client.post("/v1/billing/2026-10/close", headers=bearer(operator))
    assert again.json() == summary
    assert await conn.fetchval("SELECT count(*) FROM billing_lines") == 4
    logged = await conn.fetch(
        "SELECT object, detail FROM operation_log WHERE action = 'billing.close' ORDER BY id"
    )
    assert [r["object"] for r in logged] == ["period:2026-10", "period:2026-10"]
    assert '"cost_micros": 380000' in logged[0]["detail"]


async def test_a_closed_month_is_never_written_again(
    conn: asyncpg.Connection, client: httpx.AsyncClient, operator: str
) -> None:
    assert (await client.post("/v1/billing/2026-10/close", headers=bearer(operator))).is_success
    card = {
        "carrier": "中国电信",
        "valid_from": "2026-10-01",
        "mode": "volume",
        "bands": [{"from": 0, "to": None, "price_micros": 1}],
    }
    resp = await client.post("/v1/billing/rate-cards", json=card, headers=bearer(operator))
    assert resp.status_code == 409
    # Usage for October that arrives now leaves October's bill as it was.
    await usage(conn, date(2026, 10, 20), "510104", "中国移动", 5)
    await billing.roll_up(conn)
    october = await conn.fetchval(
        "SELECT sum(segments) FROM billing_lines WHERE period = '2026-10-01'"
    )
    assert october == 9
    again = await client.post("/v1/billing/2026-10/close", headers=bearer(operator))
    assert again.json()["cost_micros"] == 380_000


async def test_late_usage_is_billed_by_the_next_close_as_adjustment_lines(
    conn: asyncpg.Connection, client: httpx.AsyncClient, operator: str
) -> None:
    assert (await client.post("/v1/billing/2026-10/close", headers=bearer(operator))).is_success
    # Receipts after the close: 4 more October segments of 移动 (2 each for two counties), and
    # November's own usage.
    await usage(conn, date(2026, 10, 30), "510104", "中国移动", 2)
    await usage(conn, date(2026, 10, 31), "510300", "中国移动", 2)
    await usage(conn, date(2026, 11, 3), "510105", "中国移动", 10)
    november = await close(conn, date(2026, 11, 1))
    carriers = [(c.origin, c.carrier, c.segments, c.cost_micros) for c in november.carriers]
    # November: 10 segments, 5 x 0.040 + 5 x 0.030 = 35 fen. The late 4 cost what October's
    # segments cost: 26 fen / 7 segments each, 4 x 26 / 7 = 14.86, so 15 fen.
    assert carriers == [("2026-11", "中国移动", 10, 350_000), ("2026-10", "中国移动", 4, 150_000)]

    province = await make_key(conn, "510000")
    statement = (await client.get("/v1/billing/2026-11/statement", headers=bearer(province))).json()
    lines = [
        (x["tenant"], x["origin"], x["adjustment"], x["segments"], x["cost_micros"])
        for x in statement["lines"]
    ]
    # 15 fen over 2 : 2 = 7.5 + 7.5: 7 + 7, the last fen to the first.
    assert lines == [
        ("510104", "2026-10", True, 2, 80_000),
        ("510105", "2026-11", False, 10, 350_000),
        ("510300", "2026-10", True, 2, 70_000),
    ]
    assert statement["totals"]["cost_micros"] == 350_000 + 150_000
    # Closing December finds nothing late any more: each segment is billed once.
    assert (await close(conn, date(2026, 12, 1))).carriers == []


async def test_months_close_in_order(conn: asyncpg.Connection, operator: str) -> None:
    with pytest.raises(Conflict, match="close 2026-10 first"):
        await close(conn, date(2026, 11, 1))
    await close(conn, OCTOBER)
    await close(conn, date(2026, 11, 1))
    with pytest.raises(Conflict, match=r"closed up to 2026-11"):
        await close(conn, date(2026, 9, 1))


async def test_a_month_closes_only_after_its_grace_window(
    conn: asyncpg.Connection, operator: str
) -> None:
    early = datetime(2026, 11, 2, 12, tzinfo=UTC)  # October + 3 days ends 4 Nov, Shanghai time
    with pytest.raises(Conflict, match="can be closed from 2026-11-04"):
        await billing.close_period(
            conn, OCTOBER, "t", grace_days=3, default_list_price=60_000, now=early
        )


async def test_only_the_operator_closes(
    conn: asyncpg.Connection, client: httpx.AsyncClient, operator: str
) -> None:
    province = await make_key(conn, "510000")
    resp = await client.post("/v1/billing/2026-10/close", headers=bearer(province))
    assert resp.status_code == 403


async def test_a_statement_rolls_the_closed_month_up_per_level(
    client: httpx.AsyncClient, conn: asyncpg.Connection, operator: str
) -> None:
    province = await make_key(conn, "510000")
    early = await client.get("/v1/billing/2026-10/statement", headers=bearer(province))
    assert early.status_code == 404  # not closed yet
    assert (await client.post("/v1/billing/2026-10/close", headers=bearer(operator))).is_success

    resp = await client.get("/v1/billing/2026-10/statement", headers=bearer(province))
    assert resp.status_code == 200, resp.text
    statement = resp.json()
    assert [(line["tenant"], line["carrier"]) for line in statement["lines"]] == [
        ("510104", "中国移动"),
        ("510104", "中国联通"),
        ("510105", "中国移动"),
        ("510300", "中国移动"),
    ]
    levels = {level["level"]: level for level in statement["levels"]}
    assert list(levels) == ["prefecture", "county"]
    assert (levels["county"]["tenants"], levels["county"]["totals"]["segments"]) == (2, 8)
    assert levels["county"]["totals"]["cost_micros"] == 110_000 + 110_000 + 120_000
    assert levels["prefecture"]["totals"]["cost_micros"] == 40_000
    assert statement["totals"]["cost_micros"] == 380_000
    assert statement["totals"]["list_price_micros"] == 9 * 60_000
    assert statement["totals"]["savings_micros"] == 9 * 60_000 - 380_000
    # A county sees only its own lines.
    county = await make_key(conn, "510105")
    own = (await client.get("/v1/billing/2026-10/statement", headers=bearer(county))).json()
    assert [line["tenant"] for line in own["lines"]] == ["510105"]
