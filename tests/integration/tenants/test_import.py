"""`import_divisions` against the database: counts, placement, idempotence."""

from __future__ import annotations

import asyncpg

from tenants.divisions import import_divisions


async def _levels(conn: asyncpg.Connection) -> dict[str, int]:
    return {
        r["level"]: r["count"]
        for r in await conn.fetch("SELECT level::text, count(*) FROM tenants GROUP BY level")
    }


async def test_all_provinces(conn: asyncpg.Connection) -> None:
    lines: list[str] = []
    summary = await import_divisions(conn, progress=lines.append)
    assert await _levels(conn) == {"hub": 1, "province": 31, "prefecture": 333, "county": 2845}
    assert summary.created == {"province": 31, "prefecture": 333, "county": 2845}
    assert len(lines) == 31
    # Every tenant's path is its parent's path plus its own code.
    broken = await conn.fetchval(
        "SELECT count(*) FROM tenants t JOIN tenants p ON p.id = t.parent_id "
        "WHERE t.path <> p.path || t.code || '/' OR t.depth <> p.depth + 1"
    )
    assert broken == 0


async def test_rerun_changes_nothing_and_keeps_chosen_signatures(conn: asyncpg.Connection) -> None:
    await import_divisions(conn, "51")
    await conn.execute("UPDATE tenants SET signature = '锦江组工' WHERE code = '510104'")
    before = await conn.fetch("SELECT * FROM tenants ORDER BY id")
    summary = await import_divisions(conn, "51")
    assert sum(summary.created.values()) == 0
    assert summary.existing == {"province": 1, "prefecture": 21, "county": 183}
    assert await conn.fetch("SELECT * FROM tenants ORDER BY id") == before


async def test_municipality_districts_and_same_names(conn: asyncpg.Connection) -> None:
    await import_divisions(conn, "11")
    await import_divisions(conn, "22")
    rows = {
        r["code"]: r
        for r in await conn.fetch(
            "SELECT t.code, t.name, t.level::text, p.code AS parent, t.signature "
            "FROM tenants t JOIN tenants p ON p.id = t.parent_id WHERE t.name = '朝阳区'"
        )
    }
    assert rows["110105"]["parent"] == "110000"
    assert rows["110105"]["level"] == "county"
    assert rows["220104"]["parent"] == "220100"
    assert rows["110105"]["signature"] == "朝阳区委组织部"


async def test_extensions_are_unique_and_fixed_width(conn: asyncpg.Connection) -> None:
    await import_divisions(conn, "51")
    widths = await conn.fetch("SELECT DISTINCT length(sms_extension) AS n FROM tenants")
    assert [r["n"] for r in widths] == [6]
