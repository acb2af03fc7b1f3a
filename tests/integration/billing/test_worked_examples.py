"""docs/BILLING.md's worked example, computed by hand there and checked here against the real
estimate, close and statement: three carriers, both tier modes, tier boundaries crossed in the
middle of September, and a late receipt billed in October."""

from __future__ import annotations

from datetime import date

import asyncpg
import pytest

from hub.billing import service as billing
from hub.billing.schemas import Band, RateCardIn
from tenants.service import Principal, authenticate
from tests.factories import make_key, make_small_tree
from tests.integration.billing.conftest import close, usage

SEPTEMBER, OCTOBER = date(2026, 9, 1), date(2026, 10, 1)
YUAN = 1_000_000


async def _usage_of(conn: asyncpg.Connection, code: str) -> tuple[int, int]:
    """(segments, estimated cost) of a tenant in September so far."""
    path = await conn.fetchval("SELECT path FROM tenants WHERE code = $1", code)
    view = await billing.estimate(conn, path, SEPTEMBER, subtree=False, default_list_price=60_000)
    return view.items[0].segments, view.items[0].cost_micros


async def _principal(conn: asyncpg.Connection, code: str) -> Principal:
    who = await authenticate(conn, await make_key(conn, code))
    assert who is not None
    return who


@pytest.fixture
async def cards(conn: asyncpg.Connection) -> None:
    await make_small_tree(conn)
    await make_key(conn, "000000")
    mobile = [Band(0, 1_000, 40_000), Band(1_000, None, 30_000)]
    unicom = [Band(0, 1_000, 45_000), Band(1_000, None, 35_000)]
    for card in (
        RateCardIn(carrier="中国移动", valid_from=SEPTEMBER, mode="graduated", bands=mobile),
        RateCardIn(carrier="中国联通", valid_from=SEPTEMBER, mode="volume", bands=unicom),
    ):
        await billing.add_card(conn, card, "test")  # 中国电信 has none: list price


async def test_september_by_hand(conn: asyncpg.Connection, cards: None) -> None:
    await usage(conn, date(2026, 9, 5), "510105", "中国电信", 100)
    await usage(conn, date(2026, 9, 10), "510104", "中国移动", 500)
    await usage(conn, date(2026, 9, 10), "510105", "中国移动", 300)
    await usage(conn, date(2026, 9, 12), "510104", "中国联通", 700)
    # Mid-month, before any boundary: 移动 800 x 0.040 = 32 yuan, 锦江区's 500/800 of it is
    # 20.00; 联通 700 x 0.045 = 31.50, all 锦江区's.
    assert await _usage_of(conn, "510104") == (1_200, 20 * YUAN + 31_500_000)

    await usage(conn, date(2026, 9, 20), "510300", "中国移动", 400)  # 移动 crosses 1,000
    await usage(conn, date(2026, 9, 25), "510105", "中国联通", 1)
    await usage(conn, date(2026, 9, 25), "510300", "中国联通", 499)  # 联通 crosses 1,000
    # 移动 1,200 graduated: 1,000 x 0.040 + 200 x 0.030 = 46 yuan, 500/1,200 of it 19.166667;
    # 联通 1,200 volume: all at 0.035 = 42 yuan, 700/1,200 of it 24.50.
    assert await _usage_of(conn, "510104") == (1_200, 19_166_667 + 24_500_000)

    summary = await close(conn, SEPTEMBER)
    assert [(c.carrier, c.segments, c.cost_micros) for c in summary.carriers] == [
        ("中国电信", 100, 6 * YUAN),
        ("中国移动", 1_200, 46 * YUAN),
        ("中国联通", 1_200, 42 * YUAN),
    ]
    assert summary.cost_micros == 94 * YUAN

    province = await _principal(conn, "510000")
    head = await billing.statement_head(conn, province, SEPTEMBER)
    lines = [
        (x.tenant, x.carrier, x.segments, x.cost_micros // 10_000, x.list_price_micros // 10_000)
        async for x in billing.statement_lines(conn, province, SEPTEMBER)
    ]
    assert lines == [  # fen
        ("510104", "中国移动", 500, 1917, 3000),  # 1916.67: the fen left over
        ("510104", "中国联通", 700, 2450, 4200),
        ("510105", "中国电信", 100, 600, 600),
        ("510105", "中国移动", 300, 1150, 1800),
        ("510105", "中国联通", 1, 4, 6),  # 3.5, tied with 自贡市's 1746.5: the earlier line
        ("510300", "中国移动", 400, 1533, 2400),
        ("510300", "中国联通", 499, 1746, 2994),
    ]
    levels = {level.level: level.totals for level in head.levels}
    assert levels["county"].cost_micros == 61_210_000  # 43.67 + 17.54
    assert levels["prefecture"].cost_micros == 32_790_000
    assert (head.totals.cost_micros, head.totals.list_price_micros) == (94 * YUAN, 150 * YUAN)
    assert head.totals.savings_micros == 56 * YUAN

    # A receipt after the close: 3 more 移动 segments of 锦江区 from 28 September. October's
    # close bills them at September's 移动 rate, 46 yuan / 1,200: 3 x 3.8333 = 11.5 -> 12 fen.
    await usage(conn, date(2026, 9, 28), "510104", "中国移动", 3)
    october = await close(conn, OCTOBER)
    assert [(c.origin, c.carrier, c.segments, c.cost_micros) for c in october.carriers] == [
        ("2026-09", "中国移动", 3, 120_000)
    ]
    adjustments = [
        (x.tenant, x.origin, x.adjustment, x.cost_micros)
        async for x in billing.statement_lines(conn, province, OCTOBER)
    ]
    assert adjustments == [("510104", "2026-09", True, 120_000)]
