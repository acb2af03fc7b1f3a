"""The retention run: each table's step erases what is past its cutoff and nothing younger, a dry
run counts the same rows and changes nothing, batches of 2 still erase everything, opt-outs in
force outlive it, and usage and the ledgers are untouched."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx
import msgspec
import pytest

from hub.billing import service as billing
from hub.db import PoolDatabase, SingleConnectionDatabase, create_pool
from hub.retention import service
from hub.retention.schemas import Gone, Policy
from hub.settings import RetentionSettings, Settings
from tests.factories import (
    bearer,
    grant_ahead,
    hold_references,
    make_key,
    make_small_tree,
    make_tenant,
)

NOW = datetime(2027, 3, 16, 2, 0, tzinfo=UTC)  # a fixed instant, passed to the run
JUST = timedelta(seconds=1)
DEFAULTS = RetentionSettings()


class World(msgspec.Struct):
    tenant_id: int
    user_id: int
    send_id: int
    campaign_id: int
    serial: int = 0

    def next(self) -> int:
        self.serial += 1
        return self.serial


@pytest.fixture
async def world(conn: asyncpg.Connection) -> World:
    tenant = await make_tenant(conn, "510000", "四川省")
    user_id = await conn.fetchval(
        "INSERT INTO users (tenant_id, login, display_name, phone, roles, created_by)"
        " VALUES ($1, 'clerk', '张三', '+8613800138000', '{查看}', 'test') RETURNING id",
        tenant.id,
    )
    send_id = await _send(conn, tenant.id, NOW, "[]")
    template_id = await conn.fetchval(
        "INSERT INTO templates (tenant_id, name, body, variables, status, reviewed_at)"
        " VALUES ($1, 'greet', '祝贺', '{}', 'approved', $2) RETURNING id",
        tenant.id,
        NOW,
    )
    campaign_id = await conn.fetchval(
        "INSERT INTO campaigns (tenant_id, kind, field, template_id, send_time, created_by)"
        " VALUES ($1, 'anniversary', 'joined_on', $2, '09:00', 'test') RETURNING id",
        tenant.id,
        template_id,
    )
    return World(tenant_id=tenant.id, user_id=user_id, send_id=send_id, campaign_id=campaign_id)


async def _send(conn: asyncpg.Connection, tenant_id: int, at: datetime, rejects: str) -> int:
    return int(
        await conn.fetchval(
            "INSERT INTO sends (tenant_id, signature, body, encoding, segments_each, priority,"
            " dedup, recipients, repeats, rejects, segments, list_price_micros, actor,"
            " created_at)"
            " VALUES ($1, '四川省', '通知', 'ucs2', 1, 'normal', true, 1, 0, $2::jsonb, 0, 0,"
            " 'test', $3) RETURNING id",
            tenant_id,
            rejects,
            at,
        )
    )


def _sha(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


# Per table: make a row "of" instant `at` (its time column), and ask whether the row still
# holds its personal data. Each answers the row's key.
Add = Callable[[asyncpg.Connection, World, datetime], Awaitable[object]]
Holds = Callable[[asyncpg.Connection, object], Awaitable[bool]]


async def _add_inbound(conn: asyncpg.Connection, w: World, at: datetime) -> object:
    return await conn.fetchval(
        "INSERT INTO inbound (tenant_id, gateway, reference, phone, address, text, opt_out,"
        " received_at) VALUES ($1, 'outbox', $2, '+8613900139000', '10690000510000', '收到',"
        " false, $3) RETURNING id",
        w.tenant_id,
        str(w.next()),
        at,
    )


async def _holds_inbound(conn: asyncpg.Connection, key: object) -> bool:
    row = await conn.fetchrow("SELECT phone, text FROM inbound WHERE id = $1", key)
    assert row is not None  # erased, never deleted
    return bool(row["phone"] or row["text"])


async def _add_webhook(conn: asyncpg.Connection, w: World, at: datetime) -> object:
    inbound_id = await _add_inbound(conn, w, NOW)
    return await conn.fetchval(
        "INSERT INTO webhook_deliveries (tenant_id, inbound_id, delivered_at, last_error)"
        " VALUES ($1, $2, $3, 'echo +8613900139000') RETURNING id",
        w.tenant_id,
        inbound_id,
        at,
    )


async def _add_resubscription(conn: asyncpg.Connection, w: World, at: datetime) -> object:
    return await conn.fetchval(
        "INSERT INTO resubscriptions (tenant_id, phone, opted_out_at, reason, actor, at)"
        " VALUES ($1, '+8613900139000', $2, '本人要求', 'test', $2) RETURNING id",
        w.tenant_id,
        at,
    )


async def _add_idempotency(conn: asyncpg.Connection, w: World, at: datetime) -> object:
    key = f"k{w.next()}"
    await conn.execute(
        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status_code, response,"
        " created_at, expires_at) VALUES ($1, $2, '\\x00', 202, '\\x00', $3, $4)",
        w.tenant_id,
        key,
        at,
        NOW + timedelta(days=400),  # a TTL longer than retention: retention still wins
    )
    return key


async def _add_unmatched(conn: asyncpg.Connection, w: World, at: datetime) -> object:
    reference = f"r{w.next()}"
    await conn.execute(
        "INSERT INTO unmatched_receipts (gateway, reference, status, code, received_at)"
        " VALUES ('outbox', $1, 'delivered', 'DELIVRD', $2)",
        reference,
        at,
    )
    return reference


async def _add_outbox(conn: asyncpg.Connection, w: World, at: datetime) -> object:
    return await conn.fetchval(
        "INSERT INTO outbox (message_id, gateway, phone, sender, text, segments, created_at)"
        " VALUES ($1, 'outbox', '+8613900139000', '10690000', '【四川省】通知', 1, $2)"
        " RETURNING message_id",
        w.next(),
        at,
    )


async def _add_outbox_pending(conn: asyncpg.Connection, w: World, at: datetime) -> object:
    """A receipt the outbox never got to report."""
    return await conn.fetchval(
        "INSERT INTO outbox_pending (message_id, gateway, created_at) VALUES ($1, 'outbox', $2)"
        " RETURNING message_id",
        w.next(),
        at,
    )


async def _add_rejects(conn: asyncpg.Connection, w: World, at: datetime) -> object:
    rejects = '[{"to": "1390013900x", "reason": "invalid"}, {"to": "12345", "reason": "invalid"}]'
    return await _send(conn, w.tenant_id, at, rejects)


async def _holds_rejects(conn: asyncpg.Connection, key: object) -> bool:
    rejects = msgspec.json.decode(
        await conn.fetchval("SELECT rejects::text FROM sends WHERE id = $1", key)
    )
    # The reasons (and so the count of refused recipients) stay either way.
    assert [r["reason"] for r in rejects] == ["invalid", "invalid"]
    return any(r["to"] for r in rejects)


async def _add_session(conn: asyncpg.Connection, w: World, at: datetime) -> object:
    # Ended at `at` (it expired then; seen an hour before).
    return await conn.fetchval(
        "INSERT INTO dashboard_sessions (token_sha256, user_id, created_at, seen_at, expires_at)"
        " VALUES ($1, $2, $3::timestamptz - interval '12 hours',"
        " $3::timestamptz - interval '1 hour', $3) RETURNING id",
        _sha(w.next()),
        w.user_id,
        at,
    )


async def _add_code(conn: asyncpg.Connection, w: World, at: datetime) -> object:
    return await conn.fetchval(
        "INSERT INTO user_codes (user_id, phone, code_sha256, created_at, expires_at)"
        " VALUES ($1, '+8613800138000', $2, $3::timestamptz - interval '5 minutes', $3)"
        " RETURNING id",
        w.user_id,
        _sha(w.next()),
        at,
    )


async def _add_invite(conn: asyncpg.Connection, w: World, at: datetime) -> object:
    return await conn.fetchval(
        "INSERT INTO user_invites (user_id, token_sha256, created_at, expires_at, created_by)"
        " VALUES ($1, $2, $3::timestamptz - interval '48 hours', $3, 'test') RETURNING id",
        w.user_id,
        _sha(w.next()),
        at,
    )


async def _add_greeting(conn: asyncpg.Connection, w: World, at: datetime) -> object:
    contact_id = 900_000_000 + w.next()  # no such contact: deleted
    await conn.execute(
        "INSERT INTO campaign_deliveries (campaign_id, contact_id, year, send_id, created_at)"
        " VALUES ($1, $2, 2026, $3, $4)",
        w.campaign_id,
        contact_id,
        w.send_id,
        at,
    )
    return contact_id


def _exists(sql: str) -> Holds:
    async def holds(conn: asyncpg.Connection, key: object) -> bool:
        return bool(await conn.fetchval(f"SELECT EXISTS ({sql})", key))

    return holds


TABLES: dict[str, tuple[int, Add, Holds]] = {
    "inbound": (DEFAULTS.inbound_days, _add_inbound, _holds_inbound),
    "webhook_deliveries": (
        DEFAULTS.webhook_deliveries_days,
        _add_webhook,
        _exists("SELECT 1 FROM webhook_deliveries WHERE id = $1"),
    ),
    "resubscriptions": (
        DEFAULTS.resubscriptions_days,
        _add_resubscription,
        _exists("SELECT 1 FROM resubscriptions WHERE id = $1"),
    ),
    "idempotency_keys": (
        DEFAULTS.idempotency_keys_days,
        _add_idempotency,
        _exists("SELECT 1 FROM idempotency_keys WHERE key = $1"),
    ),
    "unmatched_receipts": (
        DEFAULTS.unmatched_receipts_days,
        _add_unmatched,
        _exists("SELECT 1 FROM unmatched_receipts WHERE reference = $1"),
    ),
    "outbox": (
        DEFAULTS.outbox_days,
        _add_outbox,
        _exists("SELECT 1 FROM outbox WHERE message_id = $1"),
    ),
    "outbox_pending": (
        DEFAULTS.outbox_days,
        _add_outbox_pending,
        _exists("SELECT 1 FROM outbox_pending WHERE message_id = $1"),
    ),
    "sends.rejects": (DEFAULTS.rejects_days, _add_rejects, _holds_rejects),
    "dashboard_sessions": (
        DEFAULTS.sessions_days,
        _add_session,
        _exists("SELECT 1 FROM dashboard_sessions WHERE id = $1"),
    ),
    "user_codes": (
        DEFAULTS.user_codes_days,
        _add_code,
        _exists("SELECT 1 FROM user_codes WHERE id = $1"),
    ),
    "user_invites": (
        DEFAULTS.user_invites_days,
        _add_invite,
        _exists("SELECT 1 FROM user_invites WHERE id = $1"),
    ),
    "campaign_deliveries": (
        DEFAULTS.campaign_deliveries_days,
        _add_greeting,
        _exists("SELECT 1 FROM campaign_deliveries WHERE contact_id = $1"),
    ),
}


def _rows(gone: list[Gone]) -> dict[str, int]:
    """What went from the tables these tests fill (the messages' step and its partitions have
    their own tests: tests/integration/messages/test_retention.py)."""
    return {g.what: g.rows for g in gone if g.what in TABLES}


@pytest.mark.parametrize("table", sorted(TABLES))
async def test_each_table_loses_what_is_just_past_its_cutoff_and_keeps_what_is_just_within(
    conn: asyncpg.Connection, settings: Settings, world: World, table: str
) -> None:
    days, add, holds = TABLES[table]
    cutoff = NOW - timedelta(days=days)
    old = await add(conn, world, cutoff - JUST)
    young = await add(conn, world, cutoff + JUST)
    gone = await service.run(SingleConnectionDatabase(conn), settings, NOW, dry_run=False)
    assert _rows(gone)[table] == 1
    assert not await holds(conn, old)
    assert await holds(conn, young)


async def test_message_references_go_with_the_months_before_the_cutoffs(
    conn: asyncpg.Connection, settings: Settings, world: World
) -> None:
    """Who held a gateway's reference goes with its message: of the months before the cutoff's
    (a message id carries its month), once the message went with its month's partition. A
    message still waiting to go keeps its month, and its reference its row."""
    cutoff = NOW - timedelta(days=DEFAULTS.messages_days)
    month = await conn.fetchval("SELECT hub_month_floor($1)", cutoff)  # its first message id
    waiting = await conn.fetchval(
        "INSERT INTO messages (id, send_id, tenant_id, phone, carrier, status, segments,"
        " gateway, reference) VALUES (7, $1, $2, '+8613900139000', '中国移动', 'accepted', 1,"
        " 'outbox', 'of-a-waiting-message') RETURNING id",
        world.send_id,
        world.tenant_id,
    )
    await hold_references(conn, waiting)
    await conn.execute(
        "INSERT INTO message_references (message_id, gateway, reference)"
        " VALUES ($1, 'outbox', 'last-of-before'), ($2, 'outbox', 'first-of-the-cutoffs')",
        month - 1,
        month,
    )
    gone = await service.run(SingleConnectionDatabase(conn), settings, NOW, dry_run=False)
    assert {g.what: g.rows for g in gone}["message_references"] == 1
    kept = await conn.fetch("SELECT reference FROM message_references ORDER BY message_id")
    assert [r["reference"] for r in kept] == ["of-a-waiting-message", "first-of-the-cutoffs"]


async def _all_old(conn: asyncpg.Connection, world: World, each: int = 1) -> None:
    for table, (days, add, _) in TABLES.items():
        for n in range(each):
            await add(conn, world, NOW - timedelta(days=days) - JUST * (n + 1))
        del table


async def _snapshot(conn: asyncpg.Connection) -> dict[str, list[str]]:
    return {
        table: sorted(
            r["row"]
            for r in await conn.fetch(f"SELECT t::text AS row FROM {table.split('.')[0]} t")
        )
        for table in TABLES
    }


async def test_a_dry_run_counts_what_a_real_run_then_erases_and_changes_nothing(
    conn: asyncpg.Connection, settings: Settings, world: World
) -> None:
    await _all_old(conn, world, each=2)
    before = await _snapshot(conn)
    db = SingleConnectionDatabase(conn)
    dry = await service.run(db, settings, NOW, dry_run=True)
    assert await _snapshot(conn) == before
    assert (
        await conn.fetchval("SELECT count(*) FROM operation_log WHERE action = 'retention.run'")
        == 0
    )
    assert _rows(dry) == dict.fromkeys(TABLES, 2)
    real = await service.run(db, settings, NOW, dry_run=False)
    assert real == dry
    assert _rows(await service.run(db, settings, NOW, dry_run=True)) == dict.fromkeys(TABLES, 0)


async def test_batches_of_two_still_erase_all_five_rows_of_every_table(
    conn: asyncpg.Connection, settings: Settings, world: World
) -> None:
    await _all_old(conn, world, each=5)
    small = msgspec.structs.replace(
        settings, retention=msgspec.structs.replace(settings.retention, batch=2)
    )
    gone = await service.run(SingleConnectionDatabase(conn), small, NOW, dry_run=False)
    assert _rows(gone) == dict.fromkeys(TABLES, 5)


async def test_a_real_run_logs_its_counts_and_cutoffs_and_no_personal_data(
    conn: asyncpg.Connection, settings: Settings, world: World
) -> None:
    await _all_old(conn, world)
    await service.run(SingleConnectionDatabase(conn), settings, NOW, dry_run=False)
    entry = await conn.fetchrow(
        "SELECT actor, detail::text AS detail FROM operation_log WHERE action = 'retention.run'"
    )
    assert entry is not None
    assert entry["actor"] == "system:retention"
    detail = msgspec.json.decode(entry["detail"])
    assert _rows([msgspec.convert(g, Gone) for g in detail["gone"]]) == dict.fromkeys(TABLES, 1)
    assert detail["policy"]["messages_before"].startswith("2026-09-17")  # 180 days before
    assert "+86" not in entry["detail"]
    assert "1390013900" not in entry["detail"]


async def test_tenants_shorter_periods_give_the_policy_its_cutoffs(
    conn: asyncpg.Connection, settings: Settings
) -> None:
    await make_small_tree(conn)
    ids = {r["code"]: r["id"] for r in await conn.fetch("SELECT code, id FROM tenants")}
    rows = [
        ("510100", 60, True),  # 成都市, for its subtree
        ("510104", 90, False),  # 锦江区 chose longer than its city: the city's 60 holds
        ("510105", 20, False),  # 青羊区 chose shorter still
        ("520000", 200, False),  # longer than the hub's 180: never stored by the API; ignored
    ]
    for code, days, subtree in rows:
        await conn.execute(
            "INSERT INTO retention_periods (tenant_id, messages_days, subtree, updated_by)"
            " VALUES ($1, $2, $3, 'test')",
            ids[code],
            days,
            subtree,
        )
    chosen = await service.policy(conn, settings.retention, NOW)
    assert chosen.messages_before == NOW - timedelta(days=180)
    days_of = {
        code: (NOW - chosen.tenants_before[ids[code]]).days
        for code in ids
        if ids[code] in chosen.tenants_before
    }
    assert days_of == {"510100": 60, "510104": 60, "510104001": 60, "510105": 20}


async def test_an_opt_out_older_than_every_period_still_stops_sends_after_the_run(
    conn: asyncpg.Connection, settings: Settings, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    await grant_ahead(conn, {"000000": 100, "510000": 100, "510100": 100, "510104": 100})
    key = await make_key(conn, "510104")
    tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    long_ago = NOW - timedelta(days=3650)
    await conn.execute(
        "INSERT INTO opt_outs (tenant_id, phone, created_at) VALUES ($1, '+8613900139000', $2)",
        tenant_id,
        long_ago,
    )
    # Its reply ("T") is erased with the other replies; the opt-out it made stays.
    w = World(tenant_id=tenant_id, user_id=0, send_id=0, campaign_id=0)
    reply = await _add_inbound(conn, w, long_ago)
    await service.run(SingleConnectionDatabase(conn), settings, NOW, dry_run=False)
    assert not await _holds_inbound(conn, reply)
    sent = await client.post(
        "/v1/messages", json={"to": ["13900139000"], "body": "通知"}, headers=bearer(key)
    )
    assert sent.status_code == 202, sent.text
    status = await conn.fetchval(
        "SELECT status::text FROM messages WHERE send_id = $1", sent.json()["id"]
    )
    assert status == "opted_out"


async def test_usage_and_the_ledgers_are_the_same_after_a_run(
    conn: asyncpg.Connection, settings: Settings, world: World
) -> None:
    old_day = date(2026, 1, 15)
    await billing.record_usage(conn, "billable", {(world.tenant_id, "中国移动", old_day): 7})
    await billing.roll_up(conn)
    await _all_old(conn, world)

    async def ledgers() -> tuple[object, ...]:
        usage = await billing.usage(conn, "000000/", date(2026, 1, 1), subtree=True)
        tables = [
            await conn.fetch(f"SELECT t::text FROM {t} t ORDER BY 1")
            for t in ("usage_daily", "billing_lines", "billing_periods", "quota_entries")
        ]
        return (usage, *tables)

    before = await ledgers()
    assert before[0]  # there is usage to keep
    await service.run(SingleConnectionDatabase(conn), settings, NOW, dry_run=False)
    assert await ledgers() == before


async def test_on_a_real_pool_each_batch_commits_and_a_locked_row_waits_for_the_next_run(
    fresh_db: str, settings: Settings
) -> None:
    """Batches of 2 over 5 old replies, one of them locked by a request meanwhile: the run
    neither waits for it nor fails, commits the other 4 (another connection sees them), and
    the next run takes the fifth."""
    small = msgspec.structs.replace(
        settings,
        db=msgspec.structs.replace(settings.db, dsn=fresh_db),
        retention=msgspec.structs.replace(settings.retention, batch=2),
    )
    other = await asyncpg.connect(fresh_db)
    db = PoolDatabase(await create_pool(small.db, fresh_db))
    try:
        tenant = await make_tenant(other, "510000", "四川省")
        w = World(tenant_id=tenant.id, user_id=0, send_id=0, campaign_id=0)
        old = NOW - timedelta(days=DEFAULTS.inbound_days + 1)
        ids = [await _add_inbound(other, w, old) for _ in range(5)]
        holder = await asyncpg.connect(fresh_db)
        try:
            async with holder.transaction():
                await holder.execute("SELECT 1 FROM inbound WHERE id = $1 FOR UPDATE", ids[2])
                async with asyncio.timeout(30):
                    first = await service.carry_out(
                        db, await _policy(db, small), dry_run=False, steps=[INBOUND_STEP]
                    )
        finally:
            await holder.close()
        assert _rows(first) == {"inbound": 4}
        kept = await other.fetch("SELECT id FROM inbound WHERE phone <> '' ORDER BY id")
        assert [r["id"] for r in kept] == [ids[2]]
        second = await service.carry_out(
            db, await _policy(db, small), dry_run=False, steps=[INBOUND_STEP]
        )
        assert _rows(second) == {"inbound": 1}
        assert await other.fetchval("SELECT count(*) FROM inbound WHERE phone <> ''") == 0
    finally:
        await db.close()
        await other.close()


INBOUND_STEP = next(s for s in service.STEPS if s.__name__ == "sweep_inbound")


async def _policy(db: PoolDatabase, settings: Settings) -> Policy:
    async with db.acquire() as conn:
        return await service.policy(conn, settings.retention, NOW)


async def test_a_tenants_shorter_period_erases_its_replies_and_refused_phones_sooner(
    conn: asyncpg.Connection, settings: Settings
) -> None:
    await make_small_tree(conn)
    ids = {r["code"]: r["id"] for r in await conn.fetch("SELECT code, id FROM tenants")}
    await conn.execute(
        "INSERT INTO retention_periods (tenant_id, messages_days, subtree, updated_by)"
        " VALUES ($1, 30, true, 'test')",
        ids["510100"],
    )
    month_ago = NOW - timedelta(days=31)
    replies, sends = {}, {}
    for code in ("510104", "520000"):  # under 成都市's 30 days; 贵州省 on the hub's 180
        w = World(tenant_id=ids[code], user_id=0, send_id=0, campaign_id=0, serial=ids[code])
        replies[code] = await _add_inbound(conn, w, month_ago)
        sends[code] = await _add_rejects(conn, w, month_ago)
    gone = await service.run(SingleConnectionDatabase(conn), settings, NOW, dry_run=False)
    assert _rows(gone)["inbound"] == 1
    assert _rows(gone)["sends.rejects"] == 1
    assert not await _holds_inbound(conn, replies["510104"])
    assert not await _holds_rejects(conn, sends["510104"])
    assert await _holds_inbound(conn, replies["520000"])
    assert await _holds_rejects(conn, sends["520000"])
