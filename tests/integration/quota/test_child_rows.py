"""A parent's list of its children says of each child's account what the child's own view says:
one reading of an account (`get_quota`'s) serves both, so a strict child's grants to its own
children count against what it has available, and a child whose month has not opened shows the
limit it will open with."""

from __future__ import annotations

import asyncpg
import httpx

from hub import calendar
from hub.quota import service as quota
from tenants.service import get_by_code
from tests.factories import bearer, grant, make_key, make_small_tree

SAME = ("opened", "policy", "limit", "used", "reserved", "allocated", "available")


async def test_a_childs_row_is_its_own_view(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    period = calendar.current_period()
    # Every level strict: 成都市 has 100 and grants 锦江区 80 of them.
    await grant(conn, {"000000": 1000, "510000": 500, "510100": 100, "510104": 80})
    chengdu, zigong = await get_by_code(conn, "510100"), await get_by_code(conn, "510300")
    assert chengdu is not None
    assert zigong is not None
    # 成都市's own sends: 4 used, 7 held; 自贡市 has not opened this month, with a default of 60.
    sent = await quota.reserve(conn, chengdu, 4, "send:1", "t", ttl_seconds=3600)
    assert await quota.post(conn, sent.id, 4, "t")
    await quota.reserve(conn, chengdu, 7, "send:2", "t", ttl_seconds=3600)
    await quota.set_defaults(conn, zigong, 60, "strict", "test")
    key = await make_key(conn, "510000")
    month = calendar.period_text(period)

    listed = (await client.get(f"/v1/tenants/510000/quota/{month}", headers=bearer(key))).json()
    rows = {c["code"]: c for c in listed["children"]}
    for code in ("510100", "510300"):
        own = (await client.get(f"/v1/tenants/{code}/quota/{month}", headers=bearer(key))).json()
        assert {f: rows[code].get(f) for f in SAME} == {f: own[f] for f in SAME}, code
    # 100, less 4 used, 7 held and 80 granted to 锦江区; 自贡市 as it will open.
    assert (rows["510100"]["limit"], rows["510100"]["available"]) == (100, 9)
    assert (rows["510300"]["opened"], rows["510300"]["limit"]) == (False, 60)
    assert rows["510300"]["available"] == 60
