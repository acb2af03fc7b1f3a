"""Inert cells: text a tenant wrote (a unit's name, a tag, a message) never runs as a formula.

A spreadsheet treats a text cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return
as a formula (or the start of one), so a county that names a unit `=HYPERLINK("http://…")` would
otherwise plant a live formula in finance's download. XLSX text is written as a string cell with
Excel's quote prefix (shown exactly as written, never evaluated, even after an edit); CSV has no
cell types, so such text gets a leading `'` (OWASP's advice). Characters XML cannot carry (C0
controls other than tab, newline and carriage return) are replaced by U+FFFD instead of failing
the export. Numbers stay numbers.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def csv_value(value: Any) -> Any:
    """A value for a CSV cell: text that a spreadsheet would evaluate gets a leading `'`, and so
    does text that begins with one (so that `csv_text` gives every value back as it was)."""
    if isinstance(value, str) and value.startswith((*FORMULA_STARTS, "'")):
        return "'" + value
    return value


def csv_text(cell: str) -> str:
    """A CSV cell read back as the text `csv_value` was given: its leading `'` dropped (a
    roster exported, then imported again, keeps its phones and names as they were)."""
    if cell.startswith("'") and cell[1:].startswith((*FORMULA_STARTS, "'")):
        return cell[1:]
    return cell


def xlsx_cell(sheet: WriteOnlyWorksheet, value: Any) -> WriteOnlyCell:
    """A write-only XLSX cell: text is always a string cell, never a formula."""
    if not isinstance(value, str):
        return WriteOnlyCell(sheet, value=value)
    cell = WriteOnlyCell(sheet, value=_NOT_XML.sub("\ufffd", value))
    cell.data_type = "s"  # openpyxl reads a leading "=" as a formula
    if value.startswith(FORMULA_STARTS):
        cell.quotePrefix = True
    return cell


# An XLSX date cell, shown as hub.calendar.shown() writes a time.
TIME_FORMAT = "yyyy-mm-dd hh:mm"
MONEY_FORMAT = "#,##0.00"


def append_row(
    sheet: WriteOnlyWorksheet,
    row: Iterable[Any],
    money: Collection[int] = (),
    *,
    bold: bool = False,
) -> None:
    """One row of write-only cells (`xlsx_cell`): the columns in `money` as yuan, times as
    TIME_FORMAT, all bold for a header or a total."""
    cells = []
    for n, value in enumerate(row):
        cell = xlsx_cell(sheet, value)
        if n in money:
            cell.number_format = MONEY_FORMAT
        elif isinstance(value, datetime):
            cell.number_format = TIME_FORMAT
        if bold:
            cell.font = Font(bold=True)
        cells.append(cell)
    sheet.append(cells)
