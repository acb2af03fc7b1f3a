"""A roster upload is hostile until read: zip bombs, a million empty rows, cells of megabytes,
broken or entity-laden XLSX, control characters. Each answers 413/422 (the JSON error shape),
the process's peak memory grows by at most 100 MB while it is read, and the event loop goes on
serving other tenants while a roster is parsed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import re
import struct
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import msgspec
import openpyxl
import psutil
import pytest
from litestar import Litestar

from hub.contacts import rosters, service
from hub.contacts.rosters import Row
from hub.settings import ContactsSettings
from tests.factories import bearer, make_key, make_small_tree

MB = 1_048_576
MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
SHEET = "xl/worksheets/sheet1.xml"
STRINGS = "xl/sharedStrings.xml"


@pytest.fixture
async def county(conn: asyncpg.Connection) -> str:
    await make_small_tree(conn)
    return await make_key(conn, "510104")


async def _import(client: httpx.AsyncClient, key: str, data: bytes) -> httpx.Response:
    return await client.post(
        "/v1/contacts/import",
        content=data,
        headers={**bearer(key), "Content-Type": "application/octet-stream"},
    )


def _parts() -> dict[str, bytes]:
    """The parts of a small, valid roster workbook as openpyxl writes it."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["姓名", "手机"])
    sheet.append(["张三", "13800138000"])
    buffer = io.BytesIO()
    book.save(buffer)
    with zipfile.ZipFile(buffer) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _xlsx(replace: dict[str, bytes | None], level: int = 6) -> bytes:
    """That workbook with some parts replaced (None: left out)."""
    parts = {**_parts(), **replace}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name, data in parts.items():
            if data is not None:
                archive.writestr(name, data)
    return buffer.getvalue()


def _xlsx_with(data: bytes, replace: dict[str, bytes]) -> bytes:
    """A workbook (as bytes) with some of its parts replaced."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, part in {**parts, **replace}.items():
            archive.writestr(name, part)
    return buffer.getvalue()


def _sheet(rows: str) -> bytes:
    return f'<worksheet xmlns="{MAIN}"><sheetData>{rows}</sheetData></worksheet>'.encode()


def _cells(line: int, *values: str) -> str:
    cells = "".join(
        f'<c r="{"ABCDEFGH"[i]}{line}" t="inlineStr"><is><t>{v}</t></is></c>'
        for i, v in enumerate(values)
    )
    return f'<row r="{line}">{cells}</row>'


HEADER = _cells(1, "姓名", "手机")
ONLY = "(only tab, line feed and carriage return are allowed)"


def _bomb(size: int) -> bytes:
    """A workbook whose sheet is `size` bytes of XML whitespace, streamed into the zip (it is
    never whole in memory): 1 GB becomes about 4.5 MB."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, data in _parts().items():
            if name != SHEET:
                archive.writestr(name, data)
        with archive.open(SHEET, "w") as member:
            member.write(f'<worksheet xmlns="{MAIN}"><sheetData>'.encode())
            blank = b" " * MB
            for _ in range(size // MB):
                member.write(blank)
            member.write(b"</sheetData></worksheet>")
    return buffer.getvalue()


def _understate(data: bytes, name: str, size: int) -> bytes:
    """The zip with `name`'s uncompressed size in its local and central headers set to `size`:
    headers that lie."""
    patched = bytearray(data)
    encoded = name.encode()
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = 0
        while (at := patched.find(signature, at)) != -1:
            name_at = at + (30 if signature == b"PK\x03\x04" else 46)
            if patched[name_at : name_at + len(encoded)] == encoded:
                patched[at + offset : at + offset + 4] = struct.pack("<I", size)
            at += 4
    return bytes(patched)


@contextlib.contextmanager
def peak_growth() -> Iterator[list[int]]:
    """The process's peak resident memory while the block runs, less its resident memory
    before (psutil for the start; Linux's VmHWM, reset at the start, for the peak)."""
    gc.collect()
    before = psutil.Process().memory_info().rss
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the current RSS
    growth: list[int] = []
    yield growth
    status = Path("/proc/self/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert found is not None
    growth.append(int(found[1]) * 1024 - before)


def _with_strings(strings: bytes) -> bytes:
    """The workbook with a shared-strings part holding `strings` (its manifest names it)."""
    manifest = _parts()["[Content_Types].xml"].replace(
        b"</Types>",
        b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
        b'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>',
    )
    sst = f'<sst xmlns="{MAIN}">'.encode() + strings + b"</sst>"
    return _xlsx({"[Content_Types].xml": manifest, STRINGS: sst})


def _million_empty_xlsx() -> bytes:
    return _xlsx({SHEET: _sheet(HEADER + "".join(f'<row r="{i}"/>' for i in range(2, 1_000_002)))})


HOSTILE: dict[str, tuple[Callable[[], bytes], int, str]] = {
    "a 1 GB zip bomb": (lambda: _bomb(1024 * MB), 413, "unzip to"),
    "a 1 GB zip bomb whose headers say 1 KB": (
        lambda: _understate(_bomb(1024 * MB), SHEET, 1024),
        422,
        "cannot be read",
    ),
    "a million empty XLSX rows": (_million_empty_xlsx, 413, "more than 100000 rows"),
    "an XLSX that skips to row 1,048,576": (
        lambda: _xlsx({SHEET: _sheet(HEADER + _cells(1_048_576, "张三", "13800138000"))}),
        413,
        "more than 100000 rows",
    ),
    "a million empty CSV rows": (lambda: "姓名,手机\n".encode() + b"\n" * 1_000_000, 413, "rows"),
    "a million CSV rows of commas": (lambda: b"name,phone\n" + b",\n" * 1_000_000, 413, "rows"),
    "a 10 MB CSV cell": (lambda: b"name,phone\n" + b"x" * (10 * MB) + b",1\n", 413, "longer"),
    "a 10 MB quoted CSV cell over many lines": (
        lambda: b'name,phone\n"' + (b"x" * 999 + b"\n") * 10_240 + b'",1\n',
        413,
        "field larger than field limit",
    ),
    "a line of a million commas": (lambda: b"name,phone\n" + b"," * 1_000_000, 413, "longer"),
    "16 MB of shared strings": (
        lambda: _xlsx({STRINGS: b"<sst>" + b"<si><t>1</t></si>" * (MB + 1) + b"</sst>"}),
        413,
        "unzip to",
    ),
    "a row of a million cells": (
        lambda: _xlsx({SHEET: _sheet(HEADER + '<row r="2">' + "<c/>" * 1_000_000 + "</row>")}),
        413,
        "elements in one row",
    ),
    "a shared string of a million runs": (
        lambda: _with_strings(b"<si>" + b"<r><t>x</t></r>" * 1_000_000 + b"</si>"),
        413,
        "elements in one row or string",
    ),
    "a styles part of 4 MB": (
        lambda: _xlsx({"xl/styles.xml": b"<styleSheet>" + b" " * (4 * MB) + b"</styleSheet>"}),
        413,
        "styles.xml",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
async def test_hostile_uploads_are_refused_in_bounded_memory(
    client: httpx.AsyncClient, county: str, case: str
) -> None:
    build, status, words = HOSTILE[case]
    data = build()
    assert len(data) < 20 * MB  # all within the upload limit: the caps on content stop them
    with peak_growth() as growth:
        resp = await _import(client, county, data)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == ("too_large" if status == 413 else "invalid")
    assert words in resp.json()["detail"]
    assert growth[0] <= 100 * MB, f"peak RSS grew by {growth[0] / MB:.0f} MB"


XXE = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'

LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"]>"
)


@pytest.mark.parametrize(
    ("replace", "words"),
    [
        ({SHEET: XXE + _sheet(HEADER + _cells(2, "&xxe;", "13800138000"))}, "XML entities"),
        ({"xl/styles.xml": XXE + b"<styleSheet>&xxe;</styleSheet>"}, "entities"),
        ({SHEET: LAUGHS + _sheet(HEADER + _cells(2, "&lol9;", "13800138000"))[0:]}, "entities"),
        ({"xl/workbook.xml": LAUGHS + b"<workbook/>"}, "entities"),
        ({SHEET: None}, "cannot be read"),
        ({"xl/workbook.xml": None}, "cannot be read"),
        ({"[Content_Types].xml": b"not xml"}, "cannot be read"),
        ({SHEET: _sheet('<row r="1"><c r="A1" t="s"><v>99999</v></c></row>')}, "cannot be read"),
    ],
    ids=[
        "xxe in the sheet",
        "xxe in the styles",
        "billion laughs in the sheet",
        "in the workbook",
        "no sheet",
        "no workbook",
        "garbled manifest",
        "a shared string that is not there",
    ],
)
async def test_malformed_and_entity_bearing_xlsx_is_422(
    client: httpx.AsyncClient, county: str, replace: dict[str, bytes | None], words: str
) -> None:
    resp = await _import(client, county, _xlsx(replace))
    assert resp.status_code == 422, resp.text
    assert words in resp.json()["detail"]
    assert "root:" not in resp.text


@pytest.mark.parametrize(
    "cut", [lambda d: d[: len(d) // 2], lambda d: d[:-30], lambda d: d[:200] + b"\x00" * 500]
)
async def test_truncated_or_corrupt_zip_is_422(
    client: httpx.AsyncClient, county: str, cut: Callable[[bytes], bytes]
) -> None:
    resp = await _import(client, county, cut(_xlsx({})))
    assert resp.status_code == 422, resp.text
    assert "XLSX workbook cannot be read" in resp.json()["detail"]


async def test_control_characters_in_cells_reject_their_row(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str
) -> None:
    csv = (
        "姓名,手机,职务\n张三,13800138000,书记\n李\x00四,13800138001,\n王五,13800138002,委\x1b员\n"
    )
    resp = await _import(client, county, csv.encode())
    assert resp.status_code == 200, resp.text
    assert resp.json()["created"] == 1
    assert [(p["line"], p["reason"]) for p in resp.json()["rejected"]] == [
        (3, f"column 姓名: contains the control character U+0000 at position 1 {ONLY}"),
        (4, f"column 职务: contains the control character U+001B at position 1 {ONLY}"),
    ]
    assert [p["words"] for p in resp.json()["rejected"]] == [
        "“姓名”列含控制字符 U+0000（第 2 个字符）",
        "“职务”列含控制字符 U+001B（第 2 个字符）",
    ]
    # XML cannot carry NUL, but DEL and C1 controls it can; a line break in a cell is fine.
    rows = HEADER + _cells(2, "赵\x7f六", "13800138003") + _cells(3, "钱\n七", "13800138004")
    resp = await _import(client, county, _xlsx({SHEET: _sheet(rows)}))
    assert (resp.json()["created"], resp.json()["rejected"][0]["line"]) == (1, 2)
    assert await conn.fetchval("SELECT name FROM contacts WHERE phone = '+8613800138004'") == (
        "钱\n七"
    )
    resp = await _import(client, county, "姓\x00名,手机\n".encode())
    assert resp.status_code == 422
    assert "column title" in resp.json()["detail"]


async def test_the_caps_are_settings(client: httpx.AsyncClient, county: str, app: Litestar) -> None:
    settings = app.state.settings
    contacts = msgspec.structs.replace(settings.contacts, max_rows=3, max_cell_chars=100)
    app.state.settings = msgspec.structs.replace(settings, contacts=contacts)
    ok = "姓名,手机\n张三,13800138000\n李四,13800138001\n"
    assert (await _import(client, county, ok.encode())).status_code == 200
    resp = await _import(client, county, (ok + "王五,13800138002\n").encode())
    assert resp.status_code == 413
    assert "more than 3 rows" in resp.json()["detail"]
    resp = await _import(client, county, f"姓名,手机\n{'张' * 101},1\n".encode())
    assert resp.json()["detail"] == "line 2, column 1: a cell longer than 100 characters"


async def test_shared_strings_and_reading_time_are_capped(
    client: httpx.AsyncClient, county: str, app: Litestar
) -> None:
    """Millions of empty shared strings (15 MB once cost 80 s of CPU) are refused past
    max_shared_strings; a roster that takes longer than max_parse_seconds to read is refused
    (here a deadline no roster can meet), and a roster within both is read."""
    settings = app.state.settings
    contacts = msgspec.structs.replace(settings.contacts, max_shared_strings=1000)
    app.state.settings = msgspec.structs.replace(settings, contacts=contacts)
    sheet = _sheet(
        HEADER + '<row r="2"><c r="A2" t="s"><v>999</v></c><c r="B2"><v>13800138000</v></c></row>'
    )
    fits = _with_strings(b"<si/>" * 999 + "<si><t>张三</t></si>".encode())
    resp = await _import(client, county, _xlsx_with(fits, {SHEET: sheet}))
    assert resp.status_code == 200, resp.text
    assert resp.json()["created"] == 1
    resp = await _import(client, county, _with_strings(b"<si/>" * 1001))
    assert resp.status_code == 413, resp.text
    assert resp.json()["detail"] == "the XLSX workbook has more than 1000 shared strings"
    contacts = msgspec.structs.replace(contacts, max_parse_seconds=1e-9)
    app.state.settings = msgspec.structs.replace(settings, contacts=contacts)
    for data in (_xlsx({}), "姓名,手机\n张三,13800138000\n".encode()):
        resp = await _import(client, county, data)
        assert resp.status_code == 413, resp.text
        assert "takes longer than 1e-09 s to read" in resp.json()["detail"]


async def test_other_tenants_are_served_while_a_roster_is_parsed(
    conn: asyncpg.Connection,
    client: httpx.AsyncClient,
    county: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parse waits (in its thread) until another tenant's request has been answered. Were
    it on the event loop, that request could not be answered while it waits: the wait would
    run out and the order below would be the other way round."""
    sibling = await make_key(conn, "510105")
    started, answered = threading.Event(), threading.Event()
    order: list[str] = []
    parse = rosters.read_roster

    def gated(data: bytes, limits: ContactsSettings) -> list[Row]:
        started.set()
        answered.wait(timeout=60)
        order.append("roster parsed")
        return parse(data, limits)

    monkeypatch.setattr(service, "read_roster", gated)
    upload = asyncio.create_task(_import(client, county, _million_empty_xlsx()))
    assert await asyncio.to_thread(started.wait, 60)
    me = await client.get("/v1/me", headers=bearer(sibling))
    assert me.json()["tenant"]["code"] == "510105"
    order.append("other tenant answered")
    answered.set()
    assert (await upload).status_code == 413
    assert order == ["other tenant answered", "roster parsed"]


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", None])
async def test_a_roster_posted_with_another_content_type_is_read_by_its_bytes(
    client: httpx.AsyncClient, county: str, content_type: str | None
) -> None:
    """`curl --data-binary @roster.xlsx` sends it as a form; the file is read by what it is,
    and nothing of its bytes comes back in an answer."""
    headers = bearer(county) | ({"Content-Type": content_type} if content_type else {})
    resp = await client.post("/v1/contacts/import", content=_xlsx({}), headers=headers)
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["created"] >= 1
