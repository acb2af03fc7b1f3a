"""A closed month's statement for finance: JSON, CSV (UTF-8 with a BOM, so Excel shows the
Chinese) and XLSX (Chinese headers, yuan to two decimals, a totals row); their text cells are
inert (hub/exports/cells.py): a tenant's name never becomes a formula. Every row carries the
month's close time in Beijing time (its column says so): text `2026-11-04 10:00` in CSV, a date
cell on Beijing's clock in XLSX (Excel's dates have no zone).

The lines come from a server-side cursor on a connection of the export's own, a few thousand at
a time: the whole tree never sits in memory. Each format is written to a temporary file as they
are read (openpyxl's write-only mode keeps an XLSX's rows on disk too) and then sent from it:
a client that stops reading holds no database connection (hub/exports/files.py).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from litestar import Response
from openpyxl import Workbook
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from hub import wire
from hub.billing import service
from hub.billing.schemas import StatementHead, StatementLine, Totals
from hub.calendar import BEIJING, beijing, shown
from hub.db import Database
from hub.exports.cells import append_row, csv_value
from hub.exports.files import CSV, building, download, saved, spooled
from tenants.service import Principal

Format = Literal["json", "csv", "xlsx"]

LEVELS = {"hub": "平台", "province": "省级", "prefecture": "市级", "county": "县级", "unit": "单位"}
CLOSED_COLUMN = f"结算时间({BEIJING})"
LINE_HEADER = (
    "账期",
    "单位代码",
    "单位名称",
    "层级",
    "运营商",
    "类型",
    "所属月份",
    "计费条数",
    "费用(元)",
    "标准价费用(元)",
    "节省(元)",
    "去重条数",
    CLOSED_COLUMN,
)
LEVEL_HEADER = (
    "层级",
    "单位数",
    "计费条数",
    "费用(元)",
    "标准价费用(元)",
    "节省(元)",
    "去重条数",
    CLOSED_COLUMN,
)
LINE_MONEY, LEVEL_MONEY = {8, 9, 10}, {3, 4, 5}  # the columns in yuan
LINE_WIDTHS = (9, 10, 28, 6, 10, 6, 9, 10, 12, 14, 12, 9, 20)
LEVEL_WIDTHS = (14, 8, 12, 14, 16, 14, 10, 20)
BATCH = 2_000
MEDIA = {
    "json": "application/json",
    "csv": CSV,
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def yuan(micros: int) -> Decimal:
    """Micro-yuan as yuan to two decimals (a statement's amounts are whole fen)."""
    return (Decimal(micros) / 1_000_000).quantize(Decimal("0.01"))


def _closed(head: StatementHead, fmt: Format) -> str | datetime:
    """The close time for a cell: `shown()` text in CSV; in XLSX Beijing's wall clock as a
    date cell (Excel's dates carry no zone; the column's header says whose clock it is)."""
    if fmt == "xlsx":
        return beijing(head.closed_at).replace(tzinfo=None)
    return shown(head.closed_at)


def _line_row(period: str, closed: str | datetime, line: StatementLine) -> tuple[Any, ...]:
    return (
        period,
        line.tenant,
        line.name,
        LEVELS.get(line.level, line.level),
        line.carrier,
        "调整" if line.adjustment else "正常",
        line.origin,
        line.segments,
        yuan(line.cost_micros),
        yuan(line.list_price_micros),
        yuan(line.savings_micros),
        line.dedup_segments,
        closed,
    )


def _totals_row(totals: Totals) -> tuple[Any, ...]:
    return (
        "合计",
        *[""] * 6,
        totals.segments,
        yuan(totals.cost_micros),
        yuan(totals.list_price_micros),
        yuan(totals.savings_micros),
        totals.dedup_segments,
    )


def _level_row(
    level: str, tenants: int | str, totals: Totals, closed: str | datetime
) -> tuple[Any, ...]:
    return (LEVELS.get(level, level), tenants, *_totals_row(totals)[7:], closed)


async def statement_export(db: Database, who: Principal, month: date, fmt: Format) -> Response[Any]:
    """The closed month's statement of the caller's subtree as a download. NotFound (before
    any byte is sent) if the month is still open."""
    async with db.acquire() as conn:
        head = await service.statement_head(conn, who, month)
    name = f"statement-{head.period}-{who.tenant_code}.{fmt}"
    async with building(who.tenant_id) as slot:
        if fmt == "xlsx":
            return download(await _xlsx(db, who, month, head), name, MEDIA[fmt], slot)
        if fmt == "json":  # the API's own answer, shown inline
            path = await spooled(_json_chunks(db, who, month, head), "hub-statement-")
            return download(path, name, MEDIA[fmt], slot, disposition="inline")
        path = await spooled(_csv(db, who, month, head), "hub-statement-")
        return download(path, name, MEDIA[fmt], slot)


async def _batches(db: Database, who: Principal, month: date) -> AsyncIterator[list[StatementLine]]:
    """The lines, BATCH at a time, from a cursor in a read-only transaction of their own."""
    async with db.acquire() as conn, conn.transaction(readonly=True):
        batch: list[StatementLine] = []
        async for line in service.statement_lines(conn, who, month, prefetch=BATCH):
            batch.append(line)
            if len(batch) == BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


async def _json_chunks(
    db: Database, who: Principal, month: date, head: StatementHead
) -> AsyncIterator[bytes]:
    """The `Statement` shape, its lines written as they are read."""
    yield b'{"period":%b,"tenant":%b,"closed_at":%b,"levels":%b,"totals":%b,"lines":[' % (
        wire.encode(head.period),
        wire.encode(head.tenant),
        wire.encode(head.closed_at),
        wire.encode(head.levels),
        wire.encode(head.totals),
    )
    first = True
    async for batch in _batches(db, who, month):
        # The batch as one array, written without its brackets: one encoding per batch.
        yield (b"" if first else b",") + wire.encode(batch)[1:-1]
        first = False
    yield b"]}"


async def _csv(
    db: Database, who: Principal, month: date, head: StatementHead
) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")  # the BOM: Excel reads the file as UTF-8
    writer.writerow(LINE_HEADER)
    closed = _closed(head, "csv")
    async for batch in _batches(db, who, month):
        writer.writerows(map(csv_value, _line_row(head.period, closed, line)) for line in batch)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    writer.writerow(_totals_row(head.totals))
    yield buffer.getvalue().encode()


async def _xlsx(db: Database, who: Principal, month: date, head: StatementHead) -> str:
    """The statement as an .xlsx in a temporary file (the caller deletes it): a sheet of the
    level totals, and a sheet of the lines ending in a totals row."""
    book = Workbook(write_only=True)
    closed = _closed(head, "xlsx")
    levels = _sheet(book, f"{head.period} 汇总", LEVEL_HEADER, LEVEL_WIDTHS)
    for level in head.levels:
        append_row(
            levels, _level_row(level.level, level.tenants, level.totals, closed), LEVEL_MONEY
        )
    append_row(levels, _level_row("合计", "", head.totals, ""), LEVEL_MONEY, bold=True)
    lines = _sheet(book, f"{head.period} 明细", LINE_HEADER, LINE_WIDTHS)
    async for batch in _batches(db, who, month):
        rows = [_line_row(head.period, closed, x) for x in batch]
        await asyncio.to_thread(_append_all, lines, rows)
    append_row(lines, _totals_row(head.totals), LINE_MONEY, bold=True)
    path = await saved(book, "hub-statement-")
    return path


def _sheet(
    book: Workbook, title: str, header: Sequence[str], widths: Sequence[int]
) -> WriteOnlyWorksheet:
    sheet = book.create_sheet(title)
    for n, width in enumerate(widths):
        sheet.column_dimensions[chr(ord("A") + n)].width = width
    sheet.freeze_panes = "A2"
    append_row(sheet, header, set(), bold=True)
    return sheet


def _append_all(sheet: WriteOnlyWorksheet, rows: list[tuple[Any, ...]]) -> None:
    for row in rows:
        append_row(sheet, row, LINE_MONEY)
