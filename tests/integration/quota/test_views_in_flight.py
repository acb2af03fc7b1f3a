"""Quota numbers are true while sends are in flight: delivery settles a reservation chunk by
chunk, a reservation may expire having used part of it, and every view — the API's `subtree`
block and its children, the dashboard's bars — says what the audit (`hub audit quota`) holds
true at each step, never a pending reservation's whole amount as reserved and nothing used.
Under pooled ancestors with leases too: a pooled account's own `reserved` then holds whole
blocks, but no view's subtree numbers count a lease."""

from __future__ import annotations

from datetime import date

import asyncpg
import httpx
import pytest

from hub import calendar
from hub.dashboard import service as dashboard
from hub.quota import service as quota
from hub.settings import QuotaSettings
from tenants.service import authenticate, get_by_code
from tests.factories import bearer, grant, make_key, make_small_tree

UNIT = "510104001"


async def _truth(conn: asyncpg.Connection, top: str, period: date) -> dict[str, tuple[int, int]]:
    """(used, reserved) per child of `top`, worked out here from the reservation rows alone:
    a pending one holds what is neither used nor released; any one has used what it posted,
    or (not posted: pending, expired) the parts delivery used."""
    rows = await conn.fetch(
        "SELECT t.path, r.status::text AS status, r.amount, r.used_part, r.released_part,"
        " r.posted FROM quota_reservations r JOIN tenants t ON t.id = r.tenant_id"
        " WHERE r.period = $1",
        period,
    )
    prefix = (await get_by_code(conn, top)).path  # type: ignore[union-attr]
    truth: dict[str, tuple[int, int]] = {}
    for r in rows:
        if not r["path"].startswith(prefix) or r["path"] == prefix:
            continue
        child = r["path"][len(prefix) :].split("/")[0]
        used = r["posted"] if r["posted"] is not None else r["used_part"]
        held = r["amount"] - r["used_part"] - r["released_part"] if r["status"] == "pending" else 0
        before = truth.get(child, (0, 0))
        truth[child] = (before[0] + used, before[1] + held)
    return truth


async def _views_agree(
    conn: asyncpg.Connection, client: httpx.AsyncClient, key: str, period: date
) -> dict[str, tuple[int, int]]:
    """Every view of 成都市's children against the truth, and the audit clean."""
    truth = await _truth(conn, "510100", period)
    resp = await client.get(f"/v1/tenants/510100/quota/{period:%Y-%m}", headers=bearer(key))
    assert resp.status_code == 200, resp.text
    api = {
        c["code"]: (c["subtree"]["used"], c["subtree"]["reserved"]) for c in resp.json()["children"]
    }
    whole = resp.json()["subtree"]
    assert (whole["used"], whole["reserved"]) == (
        sum(u for u, _ in truth.values()),
        sum(r for _, r in truth.values()),
    )
    who = await authenticate(conn, key)
    assert who is not None
    board = await dashboard.overview(conn, who, "510100", period, list_price=60_000)
    bars = {c.code: (c.quota.used, c.quota.reserved) for c in board.children if c.quota}
    for child in ("510104", "510105"):
        assert api[child] == bars[child] == truth.get(child, (0, 0)), child
    assert board.quota is not None
    assert (board.quota.used, board.quota.reserved) == (whole["used"], whole["reserved"])
    _, problems = await quota.audit(conn, period)
    assert problems == []
    return truth


@pytest.mark.parametrize(
    ("policy", "leases"),
    [("strict", None), ("pooled", QuotaSettings(lease_block=50))],
    ids=["strict", "pooled-leases"],
)
async def test_every_view_agrees_with_the_audit_at_each_step(
    conn: asyncpg.Connection,
    client: httpx.AsyncClient,
    policy: str,
    leases: QuotaSettings | None,
) -> None:
    await make_small_tree(conn)
    await grant(conn, {"000000": 1000, "510000": 500, "510100": 300}, policy=policy)
    await grant(conn, {"510104": 100, "510105": 100, UNIT: 40})
    period = calendar.current_period()
    key = await make_key(conn, "510100")
    county, sibling, unit = [await get_by_code(conn, c) for c in ("510104", "510105", UNIT)]
    assert county is not None
    assert sibling is not None
    assert unit is not None
    big = await quota.reserve(conn, county, 10, "send:1", "t", ttl_seconds=3600, leases=leases)
    small = await quota.reserve(conn, unit, 8, "send:2", "t", ttl_seconds=3600, leases=leases)
    other = await quota.reserve(conn, sibling, 5, "send:3", "t", ttl_seconds=3600, leases=leases)
    assert await _views_agree(conn, client, key, period) == {"510104": (0, 18), "510105": (0, 5)}
    own = await client.get(f"/v1/tenants/510100/quota/{period:%Y-%m}", headers=bearer(key))
    # The city's own account: pooled, it holds its three leasing tenants' blocks whole (the
    # unit's is its own limit of 40, less than a block: it may not reserve more).
    assert own.json()["reserved"] == (50 + 40 + 50 if leases else 0)

    # Delivery's first chunks: 3 of the county's segments went out, 2 failed; 1 of the sibling's.
    await quota.settle_parts(conn, {big.id: (3, 2), other.id: (1, 0)}, "system:delivery")
    assert await _views_agree(conn, client, key, period) == {"510104": (3, 13), "510105": (1, 4)}

    # The sibling's send runs out of time: what it used stays used, the rest is free again.
    await quota.set_expiry(conn, [other.id], -1)
    assert await quota.expire_due(conn) == 1
    assert await _views_agree(conn, client, key, period) == {"510104": (3, 13), "510105": (1, 0)}

    # The unit's send is posted whole (6 of 8 used); the county's last chunk closes its own.
    assert await quota.post(conn, small.id, 6, "system:delivery")
    await quota.settle_parts(conn, {big.id: (5, 0)}, "system:delivery")
    assert await _views_agree(conn, client, key, period) == {"510104": (14, 0), "510105": (1, 0)}
