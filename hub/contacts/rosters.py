"""Reading rosters as departments keep them: CSV from Excel or WPS (UTF-8, UTF-8 with BOM, or
GBK, which Chinese Excel writes by default) and XLSX.

The first row names the columns. Recognised names (Chinese or English, any case) become the
contact's fields; every other column is kept as a free field.

An upload is hostile until read: rows, cell length and (for XLSX, a zip) the unzipped size are
capped (`HUB_CONTACTS__*`), an XLSX's sheet is streamed row by row with its zip members counted
as they unzip, and openpyxl parses through defusedxml, so DTD entities are refused. Over a cap:
RosterTooLarge (413); unreadable: RosterError (422); a cell with a control character rejects its
row.
"""

from __future__ import annotations

import csv
import io
import re
import time
import zipfile
from collections.abc import Iterator
from datetime import date, datetime
from typing import IO, Any, Literal

import msgspec
import openpyxl
from defusedxml import DefusedXmlException
from openpyxl.cell.text import Text
from openpyxl.reader.excel import ExcelReader
from openpyxl.styles.stylesheet import apply_stylesheet
from openpyxl.worksheet._reader import WorkSheetParser
from openpyxl.xml.constants import SHARED_STRINGS as SHARED_STRINGS_TYPE
from openpyxl.xml.constants import SHEET_MAIN_NS
from openpyxl.xml.functions import iterparse

from hub.exports.cells import csv_text
from hub.inputs import CONTROL, control_problem
from hub.settings import ContactsSettings

COLUMNS = {
    "name": ("姓名", "name", "名字"),
    "phone": ("手机", "手机号", "手机号码", "电话", "联系电话", "phone", "mobile"),
    "tags": ("标签", "tags", "分组", "类别"),
    "joined_on": ("入党日期", "入党时间", "joined_on", "joined", "入职日期"),
}
_TAG_SPLIT = re.compile(r"[,，;；、|\s]+")
_DATE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?\Z")
_XLSX_MAGIC = b"PK\x03\x04"
# Columns after these are not read (a roster has a dozen); a sheet may claim 16,384.
MAX_COLUMNS = 64
# Parts of an XLSX zip (a workbook has a dozen or two; a thousand is no roster).
MAX_PARTS = 1000
# openpyxl streams the worksheets but holds the other parts whole: the shared strings as a list
# (a county's names and phones: a few MB), everything else (styles, the workbook, the theme) as
# objects several times their XML's size. Each is capped on its own, below the total.
SHARED_STRINGS = "xl/sharedStrings.xml"
SHARED_STRINGS_BYTES = 16 * 1_048_576
OTHER_PART_BYTES = 2 * 1_048_576
# XML elements held at once while a sheet or the shared strings are read: one row (one shared
# string) and what it holds. Excel writes at most 16,384 cells to a row, each a few elements.
MAX_HELD_ELEMENTS = 16_384 * 4
_ROW = f"{{{SHEET_MAIN_NS}}}row"
_STRING = f"{{{SHEET_MAIN_NS}}}si"

if not openpyxl.DEFUSEDXML:  # pragma: no cover - a broken install, not a code path
    raise ImportError("openpyxl does not use defusedxml: XLSX rosters could expand XML entities")


class RosterError(ValueError):
    """The file as a whole cannot be read (not a row: those are reported one by one)."""


class RosterTooLarge(RosterError):
    """The file is over one of the caps (rows, cell length, unzipped size)."""


class _Deadline:
    """A roster is read in at most `seconds` (of CPU-bound parsing, in a thread: past that it
    is refused, so one upload cannot keep a core and the GIL for minutes)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self._ends:
            raise RosterTooLarge(
                f"the roster takes longer than {self.seconds:g} s to read: split it into"
                " smaller files"
            )


def _elements(source: IO[bytes], tag: str, deadline: _Deadline) -> Iterator[Any]:
    """Each `tag` element of an XML part, whole, as it ends; the caller uses it before the next.

    An element is dropped once used (or, outside `tag`, once it ends at the top two levels),
    and at most MAX_HELD_ELEMENTS may be held at once: a row of a million cells or a string of
    a million runs is refused on its way in, before it fills memory."""
    held = 0
    open_elements: list[Any] = []
    for event, element in iterparse(source, events=("start", "end")):
        if event == "start":
            open_elements.append(element)
            held += 1
            if held > MAX_HELD_ELEMENTS:
                raise RosterTooLarge(
                    f"an XLSX part holds more than {MAX_HELD_ELEMENTS} elements in one row"
                    " or string"
                )
            continue
        open_elements.pop()
        if element.tag == tag:
            deadline.check()
            yield element
        elif len(open_elements) > 1:
            continue  # inside what it is part of, dropped with it
        element.clear()
        if open_elements and len(parent := open_elements[-1]) and parent[-1] is element:
            del parent[-1]  # not even an empty shell stays
        held = 0


def _shared_strings(reader: ExcelReader, limits: ContactsSettings, deadline: _Deadline) -> None:
    """openpyxl's ExcelReader.read_strings, counted: at most `max_shared_strings` strings."""
    part = reader.package.find(SHARED_STRINGS_TYPE)
    if part is None:
        return
    strings: list[str] = []
    with reader.archive.open(part.PartName[1:]) as source:
        for element in _elements(source, _STRING, deadline):
            strings.append(Text.from_tree(element).content.replace("x005F_", ""))
            if len(strings) > limits.max_shared_strings:
                raise RosterTooLarge(
                    f"the XLSX workbook has more than {limits.max_shared_strings} shared strings"
                )
    reader.shared_strings = strings


class Row(msgspec.Struct, frozen=True):
    line: int  # as a spreadsheet numbers it: the header is line 1
    name: str
    phone: str
    tags: list[str]
    joined_on: str  # raw; parsed by parse_date
    fields: dict[str, str]
    # Why the row cannot be stored whatever its values (a control character in a cell), and
    # the same in Chinese for the console.
    problem: str | None = None
    problem_words: str | None = None


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


def _csv(data: bytes, limits: ContactsSettings) -> Iterator[list[str]]:
    longest = MAX_COLUMNS * (limits.max_cell_chars + 3)  # quoted cells and their commas

    def lines() -> Iterator[str]:
        # Checked before the csv module splits a line, so a line of a million commas never
        # becomes a million cells. Lines may end in CR LF, LF or CR alone (old Mac exports).
        for number, line in enumerate(io.StringIO(decode_csv(data), newline=None), start=1):
            if len(line) > longest:
                raise RosterTooLarge(f"line {number} is longer than {longest} characters")
            yield line

    try:
        for cells in csv.reader(lines()):
            yield [csv_text(cell) for cell in cells]  # what our own export made inert
    except csv.Error as exc:
        if "field limit" in str(exc):  # a quoted field over csv's own limit (131,072 chars)
            raise RosterTooLarge(f"the CSV cannot be read: {exc}") from exc
        raise RosterError(f"the CSV cannot be read: {exc}") from exc


def _part_limit(name: str, total: int) -> int:
    if name.startswith("xl/worksheets/"):
        return total
    return SHARED_STRINGS_BYTES if name == SHARED_STRINGS else OTHER_PART_BYTES


class _CountedPart(io.RawIOBase):
    """A zip member whose bytes are counted (against its own cap and the whole archive's) as
    they are unzipped, so a member whose header understates its size is stopped all the same."""

    def __init__(self, member: IO[bytes], name: str, archive: _CappedZip) -> None:
        super().__init__()
        self._member = member
        self._name = name
        self._left = _part_limit(name, archive.limit)
        self._archive = archive

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        chunk = self._member.read(min(len(view), 1_048_576))
        self._left -= len(chunk)
        if self._left < 0:
            raise RosterTooLarge(f"the XLSX part {self._name} unzips to too many bytes")
        self._archive.spend(len(chunk))
        view[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        self._member.close()
        super().close()


class _CappedZip(zipfile.ZipFile):
    """A zip whose members may unzip to `limit` bytes altogether."""

    limit = 0
    unzipped = 0

    def spend(self, size: int) -> None:
        self.unzipped += size
        if self.unzipped > self.limit:
            raise RosterTooLarge(f"the XLSX workbook unzips to more than {self.limit} bytes")

    def open(
        self,
        name: str | zipfile.ZipInfo,
        mode: Literal["r", "w"] = "r",
        pwd: bytes | None = None,
        *,
        force_zip64: bool = False,
    ) -> IO[bytes]:
        member = super().open(name, mode, pwd, force_zip64=force_zip64)
        if mode != "r":
            return member
        path = name.filename if isinstance(name, zipfile.ZipInfo) else name
        return _CountedPart(member, path, self)  # type: ignore[return-value]


def _open_zip(data: bytes, limits: ContactsSettings) -> _CappedZip:
    try:
        archive = _CappedZip(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise RosterError(f"the XLSX workbook cannot be read: not a whole zip ({exc})") from exc
    parts = archive.infolist()
    declared = sum(part.file_size for part in parts)
    archive.limit = limit = limits.max_unzipped_bytes
    too_big = [p.filename for p in parts if p.file_size > _part_limit(p.filename, limit)]
    if len(parts) > MAX_PARTS or declared > limit or too_big:
        archive.close()
        raise RosterTooLarge(
            f"the XLSX workbook has {len(parts)} parts that unzip to {declared} bytes"
            f" (at most {MAX_PARTS} parts and {limit} bytes; shared strings at most"
            f" {SHARED_STRINGS_BYTES}, other parts but the sheets {OTHER_PART_BYTES} each)"
            + (f"; too big: {', '.join(too_big[:3])}" if too_big else "")
        )
    return archive


def _unreadable(exc: BaseException) -> RosterError:
    """What to say about an exception openpyxl raised (it wraps the cause in a ValueError)."""
    causes = [exc]
    while (cause := causes[-1].__cause__ or causes[-1].__context__) and len(causes) < 10:
        causes.append(cause)
    for cause in causes:
        if isinstance(cause, RosterError):
            return cause
        if isinstance(cause, DefusedXmlException):
            return RosterError(
                "the XLSX workbook declares XML entities (a DTD), which are refused: "
                f"{type(cause).__name__}"
            )
    root = causes[-1]
    return RosterError(f"the XLSX workbook cannot be read: {type(root).__name__}: {root}")


def _xlsx(data: bytes, limits: ContactsSettings, deadline: _Deadline) -> Iterator[list[str]]:
    """The first sheet's rows, streamed, at most MAX_COLUMNS wide.

    openpyxl's own read-only sheet would first read the whole sheet looking for its dimensions
    when they are missing, and pad every row to the width they claim (16,384 columns): so its
    parts are read here (manifest, shared strings, workbook, styles for the dates) and the sheet
    is parsed row by row with its WorkSheetParser, missing rows counted as empty ones."""
    archive = _open_zip(data, limits)
    try:
        reader = ExcelReader(io.BytesIO(data), read_only=True, data_only=True, keep_links=False)
        reader.archive, reader.valid_files = archive, archive.namelist()
        reader.read_manifest()
        _shared_strings(reader, limits, deadline)
        reader.read_workbook()
        apply_stylesheet(archive, reader.wb)
        first = next(iter(reader.parser.find_sheets()), None)
        if first is None:
            raise RosterError("the XLSX workbook has no sheet")
        yield from _sheet_rows(archive, first[1].target, reader, deadline)
    # A hostile workbook can make openpyxl, zipfile or zlib raise nearly anything (IndexError
    # for a shared string that is not there, zlib.error for a corrupt stream, EOFError…): each
    # is this file's fault, answered as such (the message names the cause).
    except Exception as exc:
        raise _unreadable(exc) from None
    finally:
        archive.close()


def _sheet_rows(
    archive: _CappedZip, path: str, reader: ExcelReader, deadline: _Deadline
) -> Iterator[list[str]]:
    """The sheet's rows, parsed one by one by openpyxl's WorkSheetParser (which would itself
    hold a whole row however long, and read every cell of it): only the first MAX_COLUMNS cells
    of a row are read (cells come in column order)."""
    book = reader.wb
    with archive.open(path) as source:
        parser = WorkSheetParser(
            source,
            reader.shared_strings,
            data_only=True,
            epoch=book.epoch,
            date_formats=book._date_formats,
            timedelta_formats=book._timedelta_formats,
        )
        line = 1
        for element in _elements(source, _ROW, deadline):
            del element[MAX_COLUMNS:]
            index, cells = parser.parse_row(element)
            for _ in range(line, index):  # rows the sheet leaves out are empty ones
                yield []
            values = {c["column"]: c["value"] for c in cells if c["column"] <= MAX_COLUMNS}
            yield [_cell(values.get(column)) for column in range(1, max(values, default=0) + 1)]
            line = index + 1


def _table(data: bytes, limits: ContactsSettings) -> Iterator[list[str]]:
    """Rows of cells, counted against the caps (empty rows count: a million of them is no
    roster)."""
    deadline = _Deadline(limits.max_parse_seconds)
    xlsx = data.startswith(_XLSX_MAGIC)
    rows = _xlsx(data, limits, deadline) if xlsx else _csv(data, limits)
    for line, cells in enumerate(rows, start=1):
        deadline.check()
        if line > limits.max_rows:
            raise RosterTooLarge(f"more than {limits.max_rows} rows (empty rows count too)")
        for column, cell in enumerate(cells[:MAX_COLUMNS], start=1):
            if len(cell) > limits.max_cell_chars:
                raise RosterTooLarge(
                    f"line {line}, column {column}: a cell longer than"
                    f" {limits.max_cell_chars} characters"
                )
        yield cells[:MAX_COLUMNS]


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


def read_roster(data: bytes, limits: ContactsSettings) -> list[Row]:
    """Every non-empty data row of the roster, with its spreadsheet line number.

    Blocking and CPU-bound (seconds for a big workbook): the API calls it in a thread."""
    return list(_rows(data, limits))


def _rows(data: bytes, limits: ContactsSettings) -> Iterator[Row]:
    table = _table(data, limits)
    header = next(table, None)
    if header is None:
        raise RosterError("the file is empty")
    for title in header:
        if problem := control_problem(title):
            raise RosterError(f"a column title {problem}")
    columns = _columns(header)
    known = set(columns.values())
    for line, cells in enumerate(table, start=2):
        if not any(c.strip() for c in cells):
            continue

        def get(column: str, cells: list[str] = cells) -> str:
            index = columns.get(column)
            return cells[index].strip() if index is not None and index < len(cells) else ""

        refused = _cells_problem(header, cells)
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
            problem=refused[0] if refused else None,
            problem_words=refused[1] if refused else None,
        )


def _cells_problem(header: list[str], cells: list[str]) -> tuple[str, str] | None:
    """Why a row's first cell holding a control character refuses it: (in English, in Chinese),
    or None."""
    for index, cell in enumerate(cells):
        found = CONTROL.search(cell)
        if found is None:
            continue
        title = header[index].strip() if index < len(header) else ""
        column = f"“{title}”列" if title else f"第 {index + 1} 列"
        words = f"{column}含控制字符 U+{ord(found[0]):04X}（第 {found.start() + 1} 个字符）"
        return f"column {title or index + 1}: {control_problem(cell)}", words
    return None


def parse_date(text: str) -> date | None:
    """2021-07-01, 2021/7/1, 2021.07.01, 2021年7月1日 → date; ValueError if not a date."""
    if not text:
        return None
    match = _DATE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)")
    return date(int(match[1]), int(match[2]), int(match[3]))
