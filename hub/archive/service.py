"""The archive (档案记实): every notice a tenant sent in a Beijing month, with its text, sender,
approver, times, recipients by status (never phones), replies and cost, as files.

Which notices: the sends *due* in the month (when they went, or were to go: a cancelled one
is a record too), of the tenant itself; with `subtree`, of every tenant below it as well (a
county's archive is its own; a city may file its counties' too). The counts and costs come
from hub.messages (`archive_sends`); the month's state from hub.billing.

Final: a month is closed when its billing period is (`billing.closed_at`: after the month and
its grace window, when receipts have come in and the cost is settled). The first fetch after
that renders the month once, from one reading, into both files (page and XLSX) and stores
them with their SHA-256; every later fetch answers those bytes, whatever arrives later (a late
receipt or reply changes the live counts, never the filed copy). Two first fetches at once
store one copy: each inserts with ON CONFLICT DO NOTHING in the same order, and both read back
what was stored. A month still open is rendered live and says it is not final.
"""

from __future__ import annotations

import asyncio
import re
from datetime import date

import asyncpg
import msgspec

from hub import calendar
from hub.archive import render
from hub.archive import repository as sql
from hub.archive.schemas import FILE_PATTERN, KINDS, MEDIA, ArchiveFile, Kind, MonthArchive
from hub.billing import service as billing
from hub.calendar import day_start, next_period
from hub.errors import Invalid, NotFound
from hub.messages import service as messages
from hub.settings import Settings
from tenants import service as tenants
from tenants.repository import TenantRow
from tenants.service import Principal

_FILE = re.compile(FILE_PATTERN)
NAME_MAX = 16  # the longest name FILE_PATTERN takes: `2027-02.xlsx`


class NotStored(Exception):
    """A closed month's files are not stored yet, and this reading may not store them (it
    reads a standby, hub.reads): its first fetch is the primary's to do."""


class Asked(msgspec.Struct, frozen=True):
    """A file named in the path: a month's page or XLSX, or a year's ZIP."""

    year: int
    month: date | None  # None: the year's ZIP
    kind: str  # html, xlsx or zip


def parse_name(name: str) -> Asked:
    """`2027-02` or `2027-02.html` (the page), `2027-02.xlsx`, `2027.zip`; else 422. (The
    API's route checks the same pattern first; the console's pages rely on this.)"""
    if len(name) > NAME_MAX or not _FILE.match(name):
        raise Invalid(
            "the archive's file is YYYY-MM (the page), YYYY-MM.html, YYYY-MM.xlsx or YYYY.zip, "
            "for a year 2000 to 2099"
        )
    if name.endswith(".zip"):
        return Asked(int(name[:4]), None, "zip")
    return Asked(int(name[:4]), date(int(name[:4]), int(name[5:7]), 1), name[8:] or "html")


async def month_archive(
    conn: asyncpg.Connection,
    settings: Settings,
    tenant: TenantRow,
    month: date,
    *,
    subtree: bool,
) -> MonthArchive:
    """The month's notices as they stand now."""
    closed_at = await billing.closed_at(conn, month)
    notices = await messages.archive_sends(
        conn,
        settings,
        tenant.path,
        day_start(month),
        day_start(next_period(month)),
        subtree=subtree,
    )
    return MonthArchive(
        tenant=tenant.code,
        name=tenant.name,
        month=month,
        subtree=subtree,
        final=closed_at is not None,
        closed_at=closed_at,
        as_of=closed_at or calendar.now(),
        list_price_micros=messages.at_list_price(1, settings),
        notices=notices,
    )


async def _rendered(archive: MonthArchive, kind: Kind) -> bytes:
    if kind == "xlsx":
        return await asyncio.to_thread(render.xlsx, archive)
    return render.html(archive)


def _file(
    tenant: str, month: date, subtree: bool, kind: str, data: bytes, final: bool
) -> ArchiveFile:
    name = f"archive-{tenant}{'-subtree' if subtree else ''}-{month:%Y-%m}.{kind}"
    return ArchiveFile(name, MEDIA[kind], data, render.sha256(data), final)


async def _stored(
    conn: asyncpg.Connection, tenant: TenantRow, month: date, subtree: bool
) -> dict[str, sql.StoredFile]:
    rows = await conn.fetch(sql.STORED, tenant.id, month, subtree)
    return {r["kind"]: msgspec.convert(dict(r.items()), sql.StoredFile) for r in rows}


async def month_files(
    conn: asyncpg.Connection,
    settings: Settings,
    tenant: TenantRow,
    month: date,
    *,
    subtree: bool,
    kinds: tuple[Kind, ...] = KINDS,
    store: bool = True,
) -> dict[str, ArchiveFile]:
    """The month's page and XLSX: both as stored at its first fetch once it is closed, else
    those of `kinds` rendered now (not final). Without `store`, a closed month not yet stored
    raises NotStored."""
    if await billing.closed_at(conn, month) is None:
        archive = await month_archive(conn, settings, tenant, month, subtree=subtree)
        return {
            kind: _file(tenant.code, month, subtree, kind, await _rendered(archive, kind), False)
            for kind in kinds
        }
    stored = await _stored(conn, tenant, month, subtree)
    if len(stored) < len(KINDS):
        if not store:
            raise NotStored(f"{tenant.code} {month:%Y-%m}")
        archive = await month_archive(conn, settings, tenant, month, subtree=subtree)
        for kind in KINDS:  # always in this order: concurrent first fetches wait, not deadlock
            data = await _rendered(archive, kind)
            await conn.execute(
                sql.STORE, tenant.id, month, kind, subtree, data, render.sha256(data)
            )
        stored = await _stored(conn, tenant, month, subtree)
    return {
        kind: _file(tenant.code, month, subtree, kind, stored[kind].data, True) for kind in KINDS
    }


async def year_zip(
    conn: asyncpg.Connection,
    settings: Settings,
    tenant: TenantRow,
    year: int,
    *,
    subtree: bool,
    store: bool = True,
) -> ArchiveFile:
    """The year's closed months (page and XLSX each) and a manifest, as one ZIP; 404 while no
    month of it is closed. Final once all twelve are."""
    files: list[ArchiveFile] = []
    months: list[str] = []
    for n in range(1, 13):
        month = date(year, n, 1)
        if await billing.closed_at(conn, month) is None:
            continue
        files += (
            await month_files(conn, settings, tenant, month, subtree=subtree, store=store)
        ).values()
        months.append(f"{month:%Y-%m}")
    if not files:
        raise NotFound(f"no month of {year} is closed yet: its monthly archives are not final")
    data = render.year_zip(tenant.code, year, subtree, months, files)
    name = f"archive-{tenant.code}{'-subtree' if subtree else ''}-{year}.zip"
    return ArchiveFile(name, MEDIA["zip"], data, render.sha256(data), len(months) == 12)


async def fetch(
    conn: asyncpg.Connection,
    settings: Settings,
    who: Principal,
    code: str,
    name: str,
    *,
    subtree: bool = False,
    store: bool = True,
) -> ArchiveFile:
    """The archive's file `name` of tenant `code` (the caller's own or below it, else 404).
    Without `store` (a read-only reading), NotStored when a closed month is fetched first."""
    asked = parse_name(name)
    tenant = await tenants.get_visible(conn, who, code)
    if asked.month is None:
        return await year_zip(conn, settings, tenant, asked.year, subtree=subtree, store=store)
    kind: Kind = "xlsx" if asked.kind == "xlsx" else "html"
    files = await month_files(
        conn, settings, tenant, asked.month, subtree=subtree, kinds=(kind,), store=store
    )
    return files[kind]
