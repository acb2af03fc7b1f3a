"""A tenant's operation log as XLSX, for whoever reads it (管理): every text cell inert
(hub/exports/cells.py), so an actor, an object or a setting's value that begins with `=`, `+`,
`-` or `@` stays text and never runs as a formula. Times are date cells on Beijing's clock.

The entries are read a thousand at a time in a read-only transaction of the export's own and
written by openpyxl's write-only mode to a temporary file, then streamed from it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from litestar import Response
from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from hub import wire
from hub.calendar import BEIJING, beijing
from hub.db import Database
from hub.exports.cells import xlsx_cell
from hub.exports.files import building, download, saved
from hub.oplog import service
from hub.oplog.schemas import Filters, Operation
from tenants import service as tenants
from tenants.service import Principal

MEDIA = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HEADER = (
    "编号",
    f"时间({BEIJING})",
    "单位代码",
    "操作人",
    "操作人单位",
    "来源地址",
    "操作",
    "对象",
    "修改前",
    "修改后",
    "详情",
)
WIDTHS = (10, 20, 12, 28, 12, 18, 20, 28, 40, 40, 40)
TIME_FORMAT = "yyyy-mm-dd hh:mm:ss"


async def operations_xlsx(
    db: Database, who: Principal, code: str, filters: Filters
) -> Response[Any]:
    """The log of `code` (a tenant of the caller's subtree, else 404 before any byte) that the
    filters select, every page of it, as a download."""
    async with db.acquire() as conn:
        tenant = await tenants.get_visible(conn, who, code)
    async with building(who.tenant_id) as slot:
        path = await _write(db, tenant.id, filters)
        return download(path, f"operations-{tenant.code}.xlsx", MEDIA, slot)


def _row(entry: Operation) -> tuple[Any, ...]:
    return (
        entry.id,
        beijing(entry.at).replace(tzinfo=None),  # Excel's dates carry no zone; the header does
        entry.tenant,
        entry.actor,
        entry.actor_tenant or "",
        entry.address or "",
        entry.action,
        entry.object or "",
        _text(entry.before),
        _text(entry.after),
        _text(entry.detail),
    )


def _text(value: Any) -> str:
    return "" if value is None else wire.encode(value).decode()


async def _write(db: Database, tenant_id: int, filters: Filters) -> str:
    book = Workbook(write_only=True)
    sheet = book.create_sheet("操作日志")
    for n, width in enumerate(WIDTHS):
        sheet.column_dimensions[chr(ord("A") + n)].width = width
    sheet.freeze_panes = "A2"
    header = [xlsx_cell(sheet, title) for title in HEADER]
    for cell in header:
        cell.font = Font(bold=True)
    sheet.append(header)
    async with db.acquire() as conn, conn.transaction(readonly=True):
        async for batch in service.every(conn, tenant_id, filters):
            await asyncio.to_thread(_append_all, sheet, [_row(x) for x in batch])
    path = await saved(book, "hub-operations-")
    return path


def _append_all(sheet: WriteOnlyWorksheet, rows: list[tuple[Any, ...]]) -> None:
    for row in rows:
        cells = []
        for value in row:
            cell = xlsx_cell(sheet, value)
            if isinstance(value, datetime):
                cell.number_format = TIME_FORMAT
            cells.append(cell)
        sheet.append(cells)
