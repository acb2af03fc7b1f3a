"""The archive over the API: a closed month's files are the same bytes every time, whatever
arrives after the close; an open month's follow the data and say they are not final; the
year's ZIP carries a manifest whose SHA-256 match its members; the XLSX shows the notices and
no phone; another county gets 404, a malformed name 422."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import date

import asyncpg
import httpx
import openpyxl
import pytest

from hub import calendar
from hub.archive import service as archive
from hub.settings import Settings
from tenants import service as tenants
from tenants.scopes import Scope
from tests.factories import bearer, make_key
from tests.integration.archive.conftest import (
    CLOSED,
    NOTICE,
    PHONES,
    Month,
    close,
    make_month,
    receipt,
    reply,
)

BASE = "/v1/tenants/510104/archive"
# The closed month's files, by name: `2027-02` under the pinned clock.
SHUT = calendar.period_text(CLOSED)


@pytest.fixture
async def month(conn: asyncpg.Connection, settings: Settings) -> Month:
    return await make_month(conn, settings)


@pytest.fixture
async def county(conn: asyncpg.Connection, month: Month) -> str:
    return await make_key(conn, "510104")


async def _get(client: httpx.AsyncClient, key: str, path: str) -> httpx.Response:
    answer = await client.get(path, headers=bearer(key))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-content-sha256"] == hashlib.sha256(answer.content).hexdigest()
    return answer


async def _late_news(conn: asyncpg.Connection, send_id: int) -> None:
    """A late receipt (undelivered turns delivered) and a late reply, now."""
    later = calendar.now()
    await receipt(conn, send_id, PHONES[2], "delivered", later)
    await reply(conn, send_id, PHONES[1], "2 请假", later)


async def test_a_closed_month_is_the_same_bytes_every_time_whatever_comes_later(
    client: httpx.AsyncClient,
    conn: asyncpg.Connection,
    settings: Settings,
    month: Month,
    county: str,
) -> None:
    await close(conn, CLOSED)
    first = {kind: await _get(client, county, f"{BASE}/{SHUT}.{kind}") for kind in ("xlsx", "html")}
    assert first["xlsx"].headers["x-archive-final"] == "true"
    assert "定稿" in first["html"].text
    assert "未定稿" not in first["html"].text
    await _late_news(conn, month.notice)
    for kind in ("xlsx", "html"):
        again = await _get(client, county, f"{BASE}/{SHUT}.{kind}")
        assert again.content == first[kind].content, kind
    # The page without an extension is the same stored page.
    assert (await _get(client, county, f"{BASE}/{SHUT}")).content == first["html"].content
    # The late news is real: the same month read live now says otherwise.
    assert "2 请假" not in first["html"].text
    tenant = await tenants.get_by_code(conn, "510104")
    assert tenant is not None
    live = await archive.month_archive(conn, settings, tenant, CLOSED, subtree=False)
    assert [(n.replies, n.statuses) for n in live.notices] == [(2, {"delivered": 3})]
    assert await conn.fetchval("SELECT count(*) FROM archive_files") == 2


async def test_an_open_month_follows_the_data_and_says_it_is_not_final(
    client: httpx.AsyncClient, conn: asyncpg.Connection, month: Month, county: str
) -> None:
    current = calendar.period_text(month.open_month)
    before = await _get(client, county, f"{BASE}/{current}.xlsx")
    page = await _get(client, county, f"{BASE}/{current}.html")
    assert before.headers["x-archive-final"] == "false"
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "未定稿" in page.text
    assert 'id="not-final"' in page.text
    assert f'data-send="{month.current}"' in page.text
    await reply(conn, month.current, PHONES[0], "收到本月通知", calendar.now())
    after = await _get(client, county, f"{BASE}/{current}.xlsx")
    assert after.content != before.content
    assert "收到本月通知" in (await _get(client, county, f"{BASE}/{current}.html")).text
    assert await conn.fetchval("SELECT count(*) FROM archive_files") == 0
    # The closed month, not closed yet, is live too (its late news shows).
    await _late_news(conn, month.notice)
    assert "2 请假" in (await _get(client, county, f"{BASE}/{SHUT}.html")).text


async def test_the_xlsx_shows_each_notice_and_no_phone(
    client: httpx.AsyncClient, conn: asyncpg.Connection, month: Month, county: str
) -> None:
    await close(conn, CLOSED)
    answer = await _get(client, county, f"{BASE}/{SHUT}.xlsx")
    assert f'filename="archive-510104-{SHUT}.xlsx"' in answer.headers["content-disposition"]
    book = openpyxl.load_workbook(io.BytesIO(answer.content))
    assert book.sheetnames == ["说明", "通知", "回复"]
    rows = [[c.value for c in row] for row in book["通知"].iter_rows()]
    header, notices = rows[0], rows[1:]
    assert len(notices) == 1  # 锦江区's own: the unit's notice is not in it
    row = dict(zip(header, notices[0], strict=True))
    assert row["发送编号"] == month.notice
    assert row["签名及正文"] == "【锦江区】" + NOTICE
    assert (row["发送人"], row["审核人"]) == ("user:jj.sender", "user:jj.reviewer")
    assert (row["已送达"], row["未送达"], row["提交号码数"]) == (2, 1, 3)
    assert row["发出条数"] == 3  # one segment each, all three went to a carrier
    assert row["标准价费用(元)"] == pytest.approx(0.18)
    assert row["回复数"] == 1
    assert [[c.value for c in r][2] for r in book["回复"].iter_rows()][1:] == ["1 收到，准时参加"]
    about = dict((r[0].value, r[1].value) for r in book["说明"].iter_rows())
    assert str(about["状态"]).startswith("定稿")
    every = " ".join(
        str(c.value) for sheet in book.worksheets for r in sheet.iter_rows() for c in r
    )
    assert not any(phone[-8:] in every for phone in PHONES)


async def test_a_year_zip_is_the_same_bytes_and_its_manifest_checks_each_member(
    client: httpx.AsyncClient, conn: asyncpg.Connection, month: Month, county: str
) -> None:
    await close(conn, CLOSED)
    first = await _get(client, county, f"{BASE}/{CLOSED.year}.zip")
    await _late_news(conn, month.notice)
    again = await _get(client, county, f"{BASE}/{CLOSED.year}.zip")
    assert again.content == first.content
    assert first.headers["x-archive-final"] == "false"  # its other eleven months are open
    with zipfile.ZipFile(io.BytesIO(first.content)) as opened:
        names = opened.namelist()
        assert names == [
            f"archive-510104-{SHUT}.html",
            f"archive-510104-{SHUT}.xlsx",
            "manifest.json",
        ]
        manifest = json.loads(opened.read("manifest.json"))
        assert manifest["months"] == [SHUT]
        assert [f["name"] for f in manifest["files"]] == names[:-1]
        for entry in manifest["files"]:
            member = opened.read(entry["name"])
            assert len(member) == entry["size"]
            assert hashlib.sha256(member).hexdigest() == entry["sha256"]
        month_xlsx = await _get(client, county, f"{BASE}/{SHUT}.xlsx")
        assert opened.read(names[1]) == month_xlsx.content
    # No month of the year before is closed: nothing to file yet.
    nothing = await client.get(f"{BASE}/{CLOSED.year - 1}.zip", headers=bearer(county))
    assert (nothing.status_code, nothing.json()["error"]) == (404, "not_found")


async def test_subtree_adds_the_units_below_and_is_stored_apart(
    client: httpx.AsyncClient, conn: asyncpg.Connection, month: Month, county: str
) -> None:
    await close(conn, CLOSED)
    own = await _get(client, county, f"{BASE}/{SHUT}.html")
    whole = await _get(client, county, f"{BASE}/{SHUT}.html?subtree=true")
    assert f'data-send="{month.unit_notice}"' not in own.text
    assert f'data-send="{month.unit_notice}"' in whole.text
    assert f'data-send="{month.notice}"' in whole.text
    book = openpyxl.load_workbook(
        io.BytesIO((await _get(client, county, f"{BASE}/{SHUT}.xlsx?subtree=true")).content)
    )
    bodies = [r[3].value for r in book["通知"].iter_rows(min_row=2)]
    assert bodies[1] == "【春熙路街道】=街道通知：明天上午九点集合"  # text, never a formula
    stored = await conn.fetch("SELECT kind, subtree FROM archive_files ORDER BY subtree, kind")
    assert [tuple(r) for r in stored] == [
        ("html", False),
        ("xlsx", False),
        ("html", True),
        ("xlsx", True),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "2027-13.xlsx",
        "2027-00.xlsx",
        "1999-12.xlsx",
        "2027-2.xlsx",
        "2027-02.pdf",
        "2027-02.xlsx%00",
        "2027%00.zip",
        "..%5C..%5Cetc",
        "....",
        "2027-02.xlsx%0A",
        "2" * 90,
    ],
)
async def test_a_malformed_file_name_is_422(
    client: httpx.AsyncClient, county: str, name: str
) -> None:
    answer = await client.get(f"{BASE}/{name}", headers=bearer(county))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "invalid"


async def test_a_path_with_slashes_finds_no_file(client: httpx.AsyncClient, county: str) -> None:
    """`../` in the name: a slash ends the segment, so no archive route matches (404)."""
    for path in (f"{BASE}/..%2F..%2Fetc%2Fpasswd", f"{BASE}/{SHUT}.xlsx%2F..%2F..%2Fx"):
        answer = await client.get(path, headers=bearer(county))
        assert (answer.status_code, answer.json()["error"]) == (404, "not_found"), path


async def test_another_county_and_an_ancestor_are_404_and_counts_alone_are_403(
    client: httpx.AsyncClient, conn: asyncpg.Connection, month: Month, county: str
) -> None:
    await close(conn, CLOSED)
    neighbour = await make_key(conn, "510105")
    for key, path in (
        (neighbour, f"{BASE}/{SHUT}.xlsx"),
        (neighbour, f"{BASE}/{CLOSED.year}.zip"),
        (county, f"/v1/tenants/510100/archive/{SHUT}.xlsx"),
        (county, f"/v1/tenants/999999/archive/{SHUT}.xlsx"),
    ):
        answer = await client.get(path, headers=bearer(key))
        assert (answer.status_code, answer.json()["error"]) == (404, "not_found"), path
    city = await make_key(conn, "510100")
    assert (await client.get(f"{BASE}/{SHUT}.xlsx", headers=bearer(city))).status_code == 200
    counts_only = await make_key(conn, "510104", frozenset({Scope.DASHBOARD_READ}))
    answer = await client.get(f"{BASE}/{SHUT}.xlsx", headers=bearer(counts_only))
    assert (answer.status_code, answer.json()["error"]) == (403, "forbidden")
    # Nothing was stored by the refused asks.
    assert await conn.fetchval("SELECT count(*) FROM archive_files") == 2


async def test_a_stored_file_is_never_changed(
    client: httpx.AsyncClient, conn: asyncpg.Connection, month: Month, county: str
) -> None:
    await close(conn, CLOSED)
    await _get(client, county, f"{BASE}/{SHUT}.xlsx")
    with pytest.raises(asyncpg.RaiseError, match="never changed"):
        async with conn.transaction():
            await conn.execute("UPDATE archive_files SET bytes = 'x'")


def test_file_names_parse() -> None:
    assert archive.parse_name("2027-02").kind == "html"
    assert archive.parse_name("2027-02.xlsx").month == date(2027, 2, 1)
    assert archive.parse_name("2027.zip") == archive.Asked(2027, None, "zip")
    assert archive.parse_name(f"{SHUT}.xlsx") == archive.Asked(CLOSED.year, CLOSED, "xlsx")
