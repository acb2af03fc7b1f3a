"""Migrations go up, all the way down, and up again on a fresh database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from hub.db import alembic_config, create_database, downgrade, drop_database, migrate
from tests.conftest import RUN_ID, WORKER


@pytest.fixture
async def empty_db(pg_admin_dsn: str) -> AsyncIterator[str]:
    name = f"hub_mig_{RUN_ID}_{WORKER}"
    yield await create_database(pg_admin_dsn, name)
    await drop_database(pg_admin_dsn, name)


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_up_down_up(empty_db: str) -> None:
    await asyncio.to_thread(migrate, empty_db)
    up = await _tables(empty_db)
    assert {"tenants", "api_keys", "alembic_version"} <= up

    await asyncio.to_thread(downgrade, empty_db, "base")
    assert await _tables(empty_db) == {"alembic_version"}

    await asyncio.to_thread(migrate, empty_db)
    assert await _tables(empty_db) == up


async def test_signature_reviews_keep_only_what_the_operator_set(empty_db: str) -> None:
    """0017: the root's signature and an imported division's own stay approved; any other (one a
    county chose for itself, a unit's) waits for review by a tenant above whoever could have set
    it. The operator's sending keys get messages:urgent (so it can grant it), no other key."""
    before = ScriptDirectory.from_config(alembic_config(empty_db)).get_revision("0017")
    assert before is not None
    assert isinstance(before.down_revision, str)
    await asyncio.to_thread(migrate, empty_db, before.down_revision)
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute(
            "INSERT INTO tenants (code, name, level, path, depth, signature) "
            "VALUES ('000000', '平台', 'hub', '000000/', 0, '组织工作短信平台')"
        )
        await conn.execute(
            "INSERT INTO tenants (code, name, level, parent_id, path, depth, signature) "
            "SELECT '510104', '锦江区', 'county', id, '000000/510104/', 1, '锦江组工' FROM tenants"
        )
        await conn.execute(
            "INSERT INTO tenants (code, name, level, parent_id, path, depth, signature) "
            "SELECT '510105', '青羊区', 'county', id, '000000/510105/', 1, '青羊区委组织部'"
            " FROM tenants WHERE code = '000000'"
        )
        for n, (code, scopes) in enumerate(
            [
                ("000000", ["messages:write", "tenants:read"]),
                ("000000", ["tenants:read"]),
                ("510104", ["messages:write"]),
            ]
        ):
            await conn.execute(
                "INSERT INTO api_keys (prefix, secret_sha256, tenant_id, scopes) "
                "SELECT $1, $2, id, $3 FROM tenants WHERE code = $4",
                f"{n:012x}",
                bytes(32),
                scopes,
                code,
            )
        await asyncio.to_thread(migrate, empty_db)
        rows = await conn.fetch("SELECT code, signature FROM tenants")
        signatures = {r["code"]: r["signature"] for r in rows}
        assert signatures == {
            "000000": "组织工作短信平台",
            "510104": None,
            "510105": "青羊区委组织部",
        }
        pending = await conn.fetch(
            "SELECT t.code, s.text, s.status::text, a.code AS answerable FROM signatures s"
            " JOIN tenants t ON t.id = s.tenant_id JOIN tenants a ON a.id = s.answerable_id"
        )
        assert [dict(r) for r in pending] == [
            {"code": "510104", "text": "锦江组工", "status": "pending", "answerable": "000000"}
        ]
        keys = await conn.fetch("SELECT scopes FROM api_keys ORDER BY id")
        assert [r["scopes"] for r in keys] == [
            ["messages:write", "tenants:read", "messages:urgent"],
            ["tenants:read"],
            ["messages:write"],
        ]
        # Down again, a tenant still waiting for its first approval keeps its proposal's text.
        await conn.execute(
            "INSERT INTO tenants (code, name, level, parent_id, path, depth) SELECT "
            "'510104001', '单位', 'unit', id, '000000/510104/510104001/', 2 FROM tenants "
            "WHERE code = '510104'"
        )
        await conn.execute(
            "INSERT INTO signatures (tenant_id, text, proposed_by, answerable_id, actor) "
            "SELECT u.id, '春熙路', c.id, c.id, 'test' FROM tenants u, tenants c "
            "WHERE u.code = '510104001' AND c.code = '510104'"
        )
        await asyncio.to_thread(downgrade, empty_db, before.down_revision)
        rows = await conn.fetch("SELECT code, signature FROM tenants")
        assert {r["code"]: r["signature"] for r in rows} == {
            "000000": "组织工作短信平台",
            "510104": "锦江组工",  # its proposal's text, as before the migration
            "510105": "青羊区委组织部",
            "510104001": "春熙路",
        }
        assert "messages:urgent" not in str(await conn.fetch("SELECT scopes FROM api_keys"))
    finally:
        await conn.close()


# Functions each send or delivery chunk calls (migration 0051).
KEEP_PLANS = [
    "quota_note_thresholds",
    "quota_hold",
    "hub_send_messages_from",
    "hub_send_messages_to",
]


async def test_the_functions_of_every_send_keep_their_plans(conn: asyncpg.Connection) -> None:
    """Migration 0051: the functions each send and delivery chunk calls are plpgsql, whose
    statements' plans a session keeps; PostgreSQL before 18 plans a non-inlined sql function's
    body again on every call. (hub_message_id stays sql: it is inlined, once per statement.)"""
    rows = await conn.fetch(
        "SELECT p.proname, l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
        " WHERE p.proname = ANY($1::text[])",
        [*KEEP_PLANS, "hub_message_id"],
    )
    languages = {r["proname"]: r["lanname"] for r in rows}
    assert languages == {**dict.fromkeys(KEEP_PLANS, "plpgsql"), "hub_message_id": "sql"}
