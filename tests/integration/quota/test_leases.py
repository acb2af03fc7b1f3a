"""Quota leases (escrow): a tenant charged to pooled ancestors reserves from a block it leased
of their quota (hub/quota/sql/lease.sql), and the ledger still adds up exactly."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import httpx
import pytest

from hub import calendar
from hub.dashboard.repository import SUBTREE_ALERTS
from hub.db import SingleConnectionDatabase
from hub.errors import Conflict
from hub.quota import service as quota
from hub.quota.jobs import return_leases
from hub.quota.schemas import Reservation
from hub.quota.service import QuotaExhausted
from hub.settings import QuotaSettings, Settings
from hub.worker import cron_jobs
from tenants.repository import TenantRow
from tenants.service import get_by_code
from tests.factories import bearer, make_key, make_small_tree

TTL = 3600.0
LEASES = QuotaSettings(lease_block=10, lease_ttl_seconds=600.0)
# Root, province and city pool their children's quota; the counties are charged to all three.
POOLED = {
    "000000": (1000, "pooled"),
    "510000": (500, "pooled"),
    "510100": (200, "pooled"),
    "510104": (50, "strict"),
    "510105": (50, "strict"),
}
ANCESTORS = ("000000", "510000", "510100")


async def _t(conn: asyncpg.Connection, code: str) -> TenantRow:
    tenant = await get_by_code(conn, code)
    assert tenant is not None
    return tenant


@pytest.fixture
async def tree(conn: asyncpg.Connection) -> asyncpg.Connection:
    await make_small_tree(conn)
    await _limits(conn, POOLED)
    return conn


async def _limits(conn: asyncpg.Connection, spec: dict[str, tuple[int, str]]) -> None:
    month = calendar.current_period()
    for code, (limit, policy) in spec.items():
        await quota.set_limit(conn, await _t(conn, code), month, "test", limit=limit, policy=policy)


async def _reserve(
    conn: asyncpg.Connection, code: str, n: int, leases: QuotaSettings | None = LEASES
) -> Reservation:
    return await quota.reserve(
        conn, await _t(conn, code), n, "test", "test", ttl_seconds=TTL, leases=leases
    )


async def _balances(conn: asyncpg.Connection, code: str) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT a.used, a.reserved FROM quota_accounts a JOIN tenants t ON t.id = a.tenant_id "
        "WHERE t.code = $1 AND a.period = $2",
        code,
        calendar.current_period(),
    )
    assert row is not None
    return row["used"], row["reserved"]


async def _leases(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, amount, drawn, status::text AS status, expires_at FROM quota_leases ORDER BY id"
    )


async def _audit_clean(conn: asyncpg.Connection) -> None:
    _, problems = await quota.audit(conn, calendar.current_period())
    assert problems == []


async def test_sends_draw_from_one_block_and_only_the_sender_is_written(
    tree: asyncpg.Connection,
) -> None:
    conn = tree
    first = await _reserve(conn, "510104", 3)
    last_entry = await conn.fetchval("SELECT max(id) FROM quota_entries")
    second = await _reserve(conn, "510104", 4)
    # The block is held on every pooled ancestor once; both sends drew from it.
    ((_, amount, drawn, status, _),) = await _leases(conn)
    assert (amount, drawn, status) == (10, 7, "active")
    for code in ANCESTORS:
        assert await _balances(conn, code) == (0, 10)
    assert await _balances(conn, "510104") == (0, 7)
    # The second send wrote one entry, on the sender's account only.
    new = await conn.fetch("SELECT kind::text AS kind FROM quota_entries WHERE id > $1", last_entry)
    assert [r["kind"] for r in new] == ["reserve"]
    # A draw is charged to the same accounts as a direct reservation: settling is unchanged.
    assert first.accounts == second.accounts
    assert len(first.accounts) == 4
    await _audit_clean(conn)


async def test_settling_a_draw_moves_the_ancestors_used_by_what_was_used(
    tree: asyncpg.Connection,
) -> None:
    conn = tree
    reservation = await _reserve(conn, "510104", 5)
    assert await _balances(conn, "510000") == (0, 10)  # used does not jump by the block
    assert await quota.post(conn, reservation.id, 3, "test")
    # 3 used; the 2 released leave the lease's hold too (it lent them to the send).
    for code in ANCESTORS:
        assert await _balances(conn, code) == (3, 5)
    assert await _balances(conn, "510104") == (3, 0)
    await _audit_clean(conn)


async def test_a_used_up_block_is_returned_and_a_new_one_leased(tree: asyncpg.Connection) -> None:
    conn = tree
    await _reserve(conn, "510104", 4)
    await _reserve(conn, "510104", 4)
    await _reserve(conn, "510104", 4)  # 2 left in the block: a new block
    leases = await _leases(conn)
    assert [(r["amount"], r["drawn"], r["status"]) for r in leases] == [
        (10, 8, "returned"),
        (10, 4, "active"),
    ]
    # Held on each ancestor: the 12 reserved by the three sends and the new block's undrawn 6.
    for code in ANCESTORS:
        assert await _balances(conn, code) == (0, 18)
    returned = await conn.fetch("SELECT amount FROM quota_entries WHERE kind = 'return'")
    assert [r["amount"] for r in returned] == [2, 2, 2]
    await _audit_clean(conn)


async def test_near_the_limit_blocks_shrink_and_a_short_level_is_named(
    conn: asyncpg.Connection,
) -> None:
    await make_small_tree(conn)
    await _limits(conn, {**POOLED, "510100": (15, "pooled")})
    await _reserve(conn, "510104", 1)
    await _reserve(conn, "510105", 1)  # 5 left at the city: a block of 5
    assert [r["amount"] for r in await _leases(conn)] == [10, 5]
    with pytest.raises(QuotaExhausted) as caught:
        await _reserve(conn, "510105", 5)  # its block has 4, the city 0 besides
    assert caught.value.extra["tenant"] == "510100"
    await _audit_clean(conn)


async def test_a_sender_over_its_own_limit_leases_nothing(tree: asyncpg.Connection) -> None:
    conn = tree
    await _limits(conn, {"510104": (4, "strict")})
    await _reserve(conn, "510104", 3)
    with pytest.raises(QuotaExhausted) as caught:
        await _reserve(conn, "510104", 3)
    assert caught.value.extra["tenant"] == "510104"
    # The lease was never more than its 4 (not the block of 10).
    assert [(r["amount"], r["drawn"]) for r in await _leases(conn)] == [(4, 3)]


async def test_sends_as_big_as_a_block_and_leases_off_reserve_on_the_chain(
    tree: asyncpg.Connection,
) -> None:
    conn = tree
    await _reserve(conn, "510104", 10)
    await _reserve(conn, "510105", 2, leases=QuotaSettings(lease_block=0))
    await _reserve(conn, "510105", 2, leases=None)
    assert await _leases(conn) == []
    for code in ANCESTORS:
        assert await _balances(conn, code) == (0, 14)
    await _audit_clean(conn)


async def test_a_lease_lasts_its_time_and_never_past_its_month(tree: asyncpg.Connection) -> None:
    conn = tree
    now = calendar.now()
    await _reserve(conn, "510104", 1)
    await _reserve(conn, "510105", 1, leases=QuotaSettings(lease_block=10, lease_ttl_seconds=1e9))
    short, long = await _leases(conn)
    assert timedelta(0) < short["expires_at"] - now <= timedelta(seconds=600 + 60)
    month_end = calendar.day_start(calendar.next_period(calendar.current_period()))
    assert long["expires_at"] == month_end


async def test_due_leases_go_back_by_the_cron(tree: asyncpg.Connection) -> None:
    conn = tree
    kept = await _reserve(conn, "510104", 3)
    await _reserve(conn, "510105", 2)
    await conn.execute(
        "UPDATE quota_leases SET expires_at = hub_now() - interval '1 second' "
        "WHERE id = (SELECT min(id) FROM quota_leases)"
    )
    (cron,) = [j for j in cron_jobs() if j.name == "hub.quota.return_leases.cron"]
    assert cron.unique
    tick = int(calendar.now().timestamp()) * 1000
    ctx = {
        "db": SingleConnectionDatabase(conn),
        "job_id": f"{cron.name}:{tick}",
        "in_progress_seconds": 60,
        "worker_name": "test",
    }
    assert await cron.coroutine(ctx) == 1
    assert await return_leases(ctx) == 0  # once
    assert [r["status"] for r in await _leases(conn)] == ["returned", "active"]
    # Each ancestor: the 3 its send still holds, the other's 2 and the other's undrawn 8.
    for code in ANCESTORS:
        assert await _balances(conn, code) == (0, 13)
    # A draw of a returned lease settles as any other reservation.
    assert await quota.void(conn, kept.id, "test")
    for code in ANCESTORS:
        assert await _balances(conn, code) == (0, 10)
    await _audit_clean(conn)


async def test_the_audit_finds_a_lease_that_does_not_add_up(tree: asyncpg.Connection) -> None:
    conn = tree
    await _reserve(conn, "510104", 3)
    await conn.execute("UPDATE quota_leases SET drawn = drawn + 1")
    _, problems = await quota.audit(conn, calendar.current_period())
    assert any("drawn 4, its reservations drew 3" in p for p in problems)
    assert any("its reservations say" in p for p in problems)


async def test_a_send_draws_from_a_lease_by_default(
    tree: asyncpg.Connection, client: httpx.AsyncClient, settings: Settings
) -> None:
    """POST /v1/messages under pooled ancestors leases with the settings' defaults (on)."""
    conn = tree
    assert settings.quota.lease_block == QuotaSettings().lease_block > 0
    key = await make_key(conn, "510104")
    for phone in ("13800138000", "18612345678"):
        resp = await client.post(
            "/v1/messages", json={"to": [phone], "body": "今晚七点开会"}, headers=bearer(key)
        )
        assert resp.status_code == 202, resp.text
    ((_, amount, drawn, status, _),) = await _leases(conn)
    # A block, or what the county may still reserve if that is less (its limit here).
    block = min(settings.quota.lease_block, POOLED["510104"][0])
    assert (amount, drawn, status) == (block, 2, "active")
    assert await conn.fetchval("SELECT count(*) FROM quota_reservations WHERE lease_id > 0") == 2
    await _audit_clean(conn)


async def test_a_lease_is_never_more_than_the_tenant_may_still_reserve(
    tree: asyncpg.Connection,
) -> None:
    """A county with 3 segments of its own left leases 3, not a whole block its siblings could
    have used."""
    conn = tree
    await _reserve(conn, "510104", 47, leases=None)  # on the chain: 3 left of its 50
    await _reserve(conn, "510104", 1)
    ((_, amount, drawn, _, _),) = await _leases(conn)
    assert (amount, drawn) == (3, 1)
    assert await _balances(conn, "510100") == (0, 47 + 3)
    await _audit_clean(conn)


async def test_lowering_a_pooled_limit_returns_the_leases_held_on_it_first(
    tree: asyncpg.Connection,
) -> None:
    """The city holds its counties' leases as reserved; lowering its limit below that (but not
    below what they really reserved) returns the leases instead of refusing."""
    conn = tree
    for county in ("510104", "510105"):
        await _reserve(conn, county, 1)
    assert await _balances(conn, "510100") == (0, 20)
    city, month = await _t(conn, "510100"), calendar.current_period()
    # Below the 2 really reserved: refused before anything is written (no savepoint here: a
    # caller that commits after a refusal, as the CLI does, keeps nothing of it).
    with pytest.raises(Conflict, match="already holds"):
        await quota.set_limit(conn, city, month, "test", limit=1)
    assert [r["status"] for r in await _leases(conn)] == ["active", "active"]
    assert await _balances(conn, "510100") == (0, 20)
    change = await quota.set_limit(conn, city, month, "test", limit=5)
    assert change.after.limit_segments == 5
    assert [r["status"] for r in await _leases(conn)] == ["returned", "returned"]
    # The ancestors above the city got the undrawn 18 back as well.
    for code in ANCESTORS:
        assert await _balances(conn, code) == (0, 2)
    # A new lease, held on the province and the city (and the root): 3, all the city has left.
    await _reserve(conn, "510104", 1)
    assert [r["amount"] for r in await _leases(conn)][-1] == 3
    assert await _balances(conn, "510000") == (0, 5)
    # A change to another account leaves it alone, refused or not: the sibling county holds
    # no lease, and its own 1 reserved refuses a limit of 0.
    with pytest.raises(Conflict, match="already holds"):
        await quota.set_limit(conn, await _t(conn, "510105"), month, "test", limit=0)
    await quota.set_limit(conn, await _t(conn, "510000"), month, "test", limit=499)
    assert [r["status"] for r in await _leases(conn)][-1] == "active"
    # The province lowered to 4, below its 5 but above the 3 really reserved: the lease (held
    # on accounts below the province too) goes back.
    await quota.set_limit(conn, await _t(conn, "510000"), month, "test", limit=4)
    assert [r["status"] for r in await _leases(conn)][-1] == "returned"
    for code in ANCESTORS:
        assert await _balances(conn, code) == (0, 3)
    await _audit_clean(conn)


async def _noted(conn: asyncpg.Connection, code: str) -> list[int]:
    rows = await conn.fetch(
        "SELECT e.threshold FROM quota_events e JOIN quota_accounts a ON a.id = e.account_id "
        "JOIN tenants t ON t.id = a.tenant_id WHERE t.code = $1 ORDER BY e.threshold",
        code,
    )
    return [r["threshold"] for r in rows]


async def test_an_ancestor_alerts_on_what_its_leases_drew_not_on_the_blocks(
    tree: asyncpg.Connection,
) -> None:
    """Two counties' blocks fill the city's 20 (its `reserved`), but 2 are drawn: no alert. Once
    their draws reach 80 % of it, the alert is noted when the leases go back (a draw writes the
    county's account only); the dashboard's alert and the standing count say what is drawn."""
    conn = tree
    await _limits(conn, {"510100": (20, "pooled"), "510104": (12, "strict")})
    for county in ("510104", "510105"):
        await _reserve(conn, county, 1)
    assert await _balances(conn, "510100") == (0, 20)
    assert await _noted(conn, "510100") == []
    await _reserve(conn, "510104", 9)  # its block drawn whole: 10 of its 12
    await _reserve(conn, "510105", 7)  # 8 of its block's 10
    assert await _noted(conn, "510104") == [80]  # a draw notes the drawing county's own
    assert await _noted(conn, "510100") == []  # 18 drawn of the city's 20, not noted yet
    # Its undrawn 2 still held, the city's alert (were it noted) stands at what was drawn.
    month = calendar.current_period()
    city = await _t(conn, "510100")
    assert (
        await conn.fetchval(
            "SELECT quota_alert_held(a.id, a.used + a.reserved) FROM quota_accounts a "
            "WHERE a.tenant_id = $1 AND a.period = $2",
            city.id,
            month,
        )
        == 18
    )
    await conn.execute("UPDATE quota_leases SET expires_at = hub_now() - interval '1 second'")
    ctx = {"db": SingleConnectionDatabase(conn)}
    assert await return_leases(ctx) == 2
    assert await _noted(conn, "510100") == [80]
    assert await _balances(conn, "510100") == (0, 18)
    # Standing: the city (18 of 20) and the county (10 of 12); the dashboard lists both.
    assert (await quota.alerts_standing(conn, month))[80] == 2
    alerts = await conn.fetch(SUBTREE_ALERTS, city.path, month, 10)
    assert [(a["code"], a["threshold"], a["held"]) for a in alerts] == [
        ("510100", 80, 18),
        ("510104", 80, 10),
    ]
    await _audit_clean(conn)
