"""A send's results as an XLSX file: a sheet of the send (its text, counts by status) and a
sheet with one row per recipient — status and reason in Chinese (hub.messages.reasons, the
words the pages use), whether and what the phone replied to the send's family, and when.

Every text cell is inert (hub/exports/cells.py): a reply of `=HYPERLINK(…)` stays text. The
rows are read BATCH at a time on a connection of the export's own, and openpyxl's write-only
mode keeps them on disk, so a send of a million recipients never sits in memory; the file is a
temporary one the caller streams and deletes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec
from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from hub.calendar import BEIJING, beijing
from hub.db import Database
from hub.exports.cells import xlsx_cell
from hub.exports.files import saved
from hub.messages import repository as sql
from hub.messages import service
from hub.messages.reasons import reason, reject_word, status_word
from tenants.scopes import Data, grants
from tenants.service import Principal

# A message's phone erased at its owner's request (hub.people), as the file shows it.
ERASED = "（已删除）"

BATCH = 2_000
MEDIA = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
TIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
RESULT_HEADER = (
    "号码",
    "运营商",
    "状态",
    "原因",
    "已回复",
    "回复内容",
    f"回复时间({BEIJING})",
    f"更新时间({BEIJING})",
)
RESULT_WIDTHS = (16, 10, 10, 24, 8, 30, 20, 20)


def _local(instant: datetime | None) -> datetime | None:
    """Beijing's wall clock for a date cell (Excel's dates carry no zone; the header says)."""
    return None if instant is None else beijing(instant).replace(tzinfo=None)


def result_row(row: sql.ResultRow, replies_shown: bool) -> tuple[Any, ...]:
    replied: Any = ("是" if row.reply is not None else "否") if replies_shown else ""
    return (
        row.phone or ERASED,
        row.carrier,
        status_word(row.status),
        reason(row.status, row.error),
        replied,
        row.reply or "",
        _local(row.replied_at),
        _local(row.updated_at),
    )


async def results_xlsx(db: Database, who: Principal, send_id: int) -> tuple[str, str]:
    """The results of a send the caller may see, as an .xlsx in a temporary file (the caller
    deletes it), and its download name. NotFound before anything is written. Replies are
    written only for keys that may read them."""
    replies_shown = grants(who.scopes, Data.REPLIES)
    book = Workbook(write_only=True)
    async with db.acquire() as conn, conn.transaction(readonly=True):
        send = await service.get_send(conn, who, send_id)
        row = await service.visible_send(conn, who, send_id)
        family = await service.family(conn, row) if replies_shown else None
        head = _sheet(book, "发送", ("项目", "内容"), (16, 60))
        for item in (
            ("发送编号", send.id),
            ("单位", send.tenant),
            ("内容", f"{send.signature}{send.body}"),
            (f"创建时间({BEIJING})", _local(send.created_at)),
            ("要求回复", "是" if send.reply_wanted else "否"),
            ("跟进", f"{send.follow_kind} #{send.follows}" if send.follows else ""),
            *((status_word(s), n) for s, n in sorted(send.statuses.items())),
            *((f"未发送：{reject_word(r.reason)}", r.to) for r in send.rejected),
        ):
            _append(head, item)
        sheet = _sheet(book, "收件人", RESULT_HEADER, RESULT_WIDTHS)
        after = 0
        while True:
            records = await conn.fetch(sql.RESULTS, send_id, after, family, BATCH)
            if not records:
                break
            rows = [msgspec.convert(dict(r.items()), sql.ResultRow) for r in records]
            await asyncio.to_thread(
                _append_all, sheet, [result_row(r, replies_shown) for r in rows]
            )
            after = rows[-1].id
    path = await saved(book, "hub-results-")
    return path, f"send-{send.id}-results.xlsx"


def _sheet(
    book: Workbook, title: str, header: Sequence[str], widths: Sequence[int]
) -> WriteOnlyWorksheet:
    sheet = book.create_sheet(title)
    for n, width in enumerate(widths):
        sheet.column_dimensions[chr(ord("A") + n)].width = width
    sheet.freeze_panes = "A2"
    _append(sheet, header, bold=True)
    return sheet


def _append(sheet: WriteOnlyWorksheet, row: Iterable[Any], *, bold: bool = False) -> None:
    cells = []
    for value in row:
        cell = xlsx_cell(sheet, value)
        if isinstance(value, datetime):
            cell.number_format = TIME_FORMAT
        if bold:
            cell.font = Font(bold=True)
        cells.append(cell)
    sheet.append(cells)


def _append_all(sheet: WriteOnlyWorksheet, rows: list[tuple[Any, ...]]) -> None:
    for row in rows:
        _append(sheet, row)
