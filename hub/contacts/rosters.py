"""Reading rosters as departments keep them: CSV from Excel or WPS (UTF-8, UTF-8 with BOM, or
GBK, which Chinese Excel writes by default) and XLSX.

The first row names the columns. Recognised names (Chinese or English, any case) become the
contact's fields; every other column is kept as a free field.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import msgspec

COLUMNS = {
    "name": ("姓名", "name", "名字"),
    "phone": ("手机", "手机号", "手机号码", "电话", "联系电话", "phone", "mobile"),
    "tags": ("标签", "tags", "分组", "类别"),
    "joined_on": ("入党日期", "入党时间", "joined_on", "joined", "入职日期"),
}
_TAG_SPLIT = re.compile(r"[,，;；、|\s]+")
_DATE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")
_XLSX_MAGIC = b"PK\x03\x04"


class RosterError(ValueError):
    """The file as a whole cannot be read (not a row: those are reported one by one)."""


class Row(msgspec.Struct, frozen=True):
    line: int  # as a spreadsheet numbers it: the header is line 1
    name: str
    phone: str
    tags: list[str]
    joined_on: str  # raw; parsed by parse_date
    fields: dict[str, str]


def decode_csv(data: bytes) -> str:
    """UTF-8 (with or without BOM), else GBK/GB18030 as Chinese Excel saves it."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError as exc:
        raise RosterError("the file is neither UTF-8 nor GBK text, nor an XLSX workbook") from exc


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # phones typed as numbers come back as 13800138000.0
    return str(value).strip()


def _table(data: bytes) -> Iterator[list[str]]:
    if data.startswith(_XLSX_MAGIC):
        import openpyxl

        try:
            book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            raise RosterError(f"the XLSX workbook cannot be read: {exc}") from exc
        try:
            sheet = book.worksheets[0]
            for values in sheet.iter_rows(values_only=True):
                yield [_cell(v) for v in values]
        finally:
            book.close()
        return
    yield from csv.reader(io.StringIO(decode_csv(data)))


def _columns(header: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for index, title in enumerate(header):
        key = title.strip().lower()
        for column, names in COLUMNS.items():
            if key in names and column not in found:
                found[column] = index
    missing = [c for c in ("name", "phone") if c not in found]
    if missing:
        raise RosterError(
            "the first row must name the columns; missing: "
            + ", ".join(f"{c} ({'/'.join(COLUMNS[c][:3])})" for c in missing)
        )
    return found


def read_rows(data: bytes) -> Iterator[Row]:
    """Every non-empty data row of the roster, with its spreadsheet line number."""
    table = _table(data)
    header = next(table, None)
    if header is None:
        raise RosterError("the file is empty")
    columns = _columns(header)
    known = set(columns.values())
    for line, cells in enumerate(table, start=2):
        if not any(c.strip() for c in cells):
            continue

        def get(column: str, cells: list[str] = cells) -> str:
            index = columns.get(column)
            return cells[index].strip() if index is not None and index < len(cells) else ""

        yield Row(
            line=line,
            name=get("name"),
            phone=get("phone"),
            tags=[t for t in _TAG_SPLIT.split(get("tags")) if t],
            joined_on=get("joined_on"),
            fields={
                header[i].strip(): v.strip()
                for i, v in enumerate(cells)
                if i not in known and i < len(header) and header[i].strip() and v.strip()
            },
        )


def parse_date(text: str) -> date | None:
    """2021-07-01, 2021/7/1, 2021.07.01, 2021年7月1日 → date; ValueError if not a date."""
    if not text:
        return None
    match = _DATE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)")
    return date(int(match[1]), int(match[2]), int(match[3]))
