"""A tenant's roster as CSV or XLSX, each built in a temporary file and then sent
(hub/exports/files.py: a client that stops reading holds no database connection): the columns
the import reads (姓名, 手机, 标签, 入党日期), whether the phone opted out, then one column per
free field. Every text cell is inert (hub/exports/cells.py): a name or a tag that begins with
`=`, `+`, `-` or `@` stays text and never runs as a formula.

Read on a connection of the export's own, in a read-only transaction, a thousand at a time.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from typing import Any, Literal

from litestar import Response
from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from hub.contacts import service
from hub.contacts.rosters import MAX_COLUMNS
from hub.contacts.schemas import Contact
from hub.db import Database
from hub.exports.cells import csv_value, xlsx_cell
from hub.exports.files import CSV, building, download, saved, spooled
from tenants import service as tenants
from tenants.repository import TenantRow
from tenants.service import Principal

Format = Literal["csv", "xlsx"]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HEADER = ("姓名", "手机", "标签", "入党日期", "已退订")


def _row(contact: Contact, fields: list[str]) -> list[Any]:
    return [
        contact.name,
        contact.phone,
        "、".join(contact.tags),
        contact.joined_on.isoformat() if contact.joined_on else "",
        "是" if contact.opted_out else "",
        *(contact.fields.get(name, "") for name in fields),
    ]


async def contacts_export(db: Database, who: Principal, fmt: Format) -> Response[Any]:
    """The caller's own roster as a download."""
    async with db.acquire() as conn:
        tenant = await tenants.own(conn, who)
        fields = await service.field_names(conn, tenant, MAX_COLUMNS - len(HEADER))
    name = f"contacts-{tenant.code}.{fmt}"
    async with building(who.tenant_id) as slot:
        if fmt == "csv":
            path = await spooled(_csv(db, tenant, fields), "hub-contacts-")
            return download(path, name, CSV, slot)
        return download(await _xlsx(db, tenant, fields), name, XLSX, slot)


async def _batches(db: Database, tenant: TenantRow) -> AsyncIterator[list[Contact]]:
    async with db.acquire() as conn, conn.transaction(readonly=True):
        async for batch in service.every_contact(conn, tenant):
            yield batch


async def _csv(db: Database, tenant: TenantRow, fields: list[str]) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")  # the BOM: Excel reads the file as UTF-8
    writer.writerow(map(csv_value, (*HEADER, *fields)))
    yield buffer.getvalue().encode()
    async for batch in _batches(db, tenant):
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(map(csv_value, _row(c, fields)) for c in batch)
        yield buffer.getvalue().encode()


async def _xlsx(db: Database, tenant: TenantRow, fields: list[str]) -> str:
    book = Workbook(write_only=True)
    sheet = book.create_sheet("名册")
    sheet.freeze_panes = "A2"
    header = [xlsx_cell(sheet, title) for title in (*HEADER, *fields)]
    for cell in header:
        cell.font = Font(bold=True)
    sheet.append(header)
    async for batch in _batches(db, tenant):
        await asyncio.to_thread(_append_all, sheet, [_row(c, fields) for c in batch])
    path = await saved(book, "hub-contacts-")
    return path


def _append_all(sheet: WriteOnlyWorksheet, rows: list[list[Any]]) -> None:
    for row in rows:
        sheet.append([xlsx_cell(sheet, value) for value in row])
