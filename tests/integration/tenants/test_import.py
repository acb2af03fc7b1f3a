"""`import_divisions` against the database: counts, placement, idempotence."""

from __future__ import annotations

import asyncpg
import pytest

from tenants.divisions import MisplacedTenants, import_divisions
from tenants.errors import ExtensionsExhausted


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


async def _sequence(conn: asyncpg.Connection) -> tuple[int, bool]:
    row = await conn.fetchrow("SELECT last_value, is_called FROM tenant_sms_extension_seq")
    assert row is not None
    return row["last_value"], row["is_called"]


async def test_rerun_changes_nothing_and_keeps_chosen_signatures(conn: asyncpg.Connection) -> None:
    await import_divisions(conn, "51")
    await conn.execute("UPDATE tenants SET signature = '锦江组工' WHERE code = '510104'")
    before = await conn.fetch("SELECT * FROM tenants ORDER BY id")
    sequence = await _sequence(conn)
    summary = await import_divisions(conn, "51")
    assert sum(summary.created.values()) == 0
    assert summary.existing == {"province": 1, "prefecture": 21, "county": 183}
    assert await conn.fetch("SELECT * FROM tenants ORDER BY id") == before
    # Tenants already there draw no SMS extension (`hub up` re-imports on every start).
    assert await _sequence(conn) == sequence


async def test_import_never_adopts_a_tenant_under_another_parent(conn: asyncpg.Connection) -> None:
    """青羊区's code held by a unit of 锦江区 (made before units had to take codes inside their
    parent's, or moved there): the import names it and writes nothing, not even the missing
    武侯区."""
    await import_divisions(conn, "51")
    await conn.execute("DELETE FROM tenants WHERE code = '510107'")
    await conn.execute(
        "UPDATE tenants t SET parent_id = p.id, path = p.path || t.code || '/', "
        "depth = p.depth + 1, level = 'unit', name = '锦江区某单位' "
        "FROM tenants p WHERE t.code = '510105' AND p.code = '510104'"
    )
    before = await conn.fetch("SELECT * FROM tenants ORDER BY id")
    sequence = await _sequence(conn)
    with pytest.raises(MisplacedTenants) as refused:
        await import_divisions(conn, "51")
    assert [r.code for r in refused.value.rows] == ["510105"]
    message = str(refused.value)
    assert "510105 青羊区: the division is a county under 510100" in message
    assert "(锦江区某单位, unit) sits under 510104" in message
    assert "nothing was imported" in message
    assert await conn.fetch("SELECT * FROM tenants ORDER BY id") == before
    assert await _sequence(conn) == sequence


async def test_import_refuses_a_division_code_held_at_another_level(
    conn: asyncpg.Connection,
) -> None:
    """Under the right parent but not the division (a city's unit made with a county's code)."""
    await import_divisions(conn, "51")
    await conn.execute("UPDATE tenants SET level = 'unit' WHERE code = '510105'")
    with pytest.raises(MisplacedTenants) as refused:
        await import_divisions(conn, "51")
    assert [(r.code, r.found_level, r.found_parent) for r in refused.value.rows] == [
        ("510105", "unit", "510100")
    ]


async def test_an_import_out_of_extensions_is_refused_clearly(conn: asyncpg.Connection) -> None:
    await import_divisions(conn, "11")
    last, _ = await _sequence(conn)
    await conn.execute(f"ALTER SEQUENCE tenant_sms_extension_seq MAXVALUE {last + 10}")
    with pytest.raises(ExtensionsExhausted):
        await import_divisions(conn, "51")


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
