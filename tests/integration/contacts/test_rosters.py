"""Roster import as departments produce it (Excel/WPS CSV in three encodings, XLSX), listing,
deleting, and sending to a roster's tags."""

from __future__ import annotations

import io
from datetime import date

import asyncpg
import httpx
import openpyxl
import pytest

from hub.contacts import service as contacts
from tenants.service import get_by_code
from tests.factories import bearer, grant, make_key, make_small_tree

ROSTER = (
    "姓名,手机号,标签,入党日期,职务\n"
    "张三,13800138000,书记、副科级以上,2001-07-01,村支部书记\n"
    "李四,+86 186 1234 5678,大学生村官,2019/6/30,\n"
    "王五,12345,书记,2010-01-01,\n"  # bad phone
    ",13311112222,书记,,\n"  # no name
    "赵六,19212345678,副科级以上,2015年7月1日,组织委员\n"
    "钱七,13800138000,书记,2002-07-01,\n"  # same phone as 张三: the later row wins
    ",,,,\n"  # empty rows are skipped
    "孙八,17012345678,,not a date,\n"
)


@pytest.fixture
async def county(conn: asyncpg.Connection) -> str:
    await make_small_tree(conn)
    return await make_key(conn, "510104")


async def _import(client: httpx.AsyncClient, key: str, data: bytes) -> httpx.Response:
    return await client.post(
        "/v1/contacts/import", content=data, headers={**bearer(key), "Content-Type": "text/csv"}
    )


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk"])
async def test_csv_in_every_encoding_excel_writes(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str, encoding: str
) -> None:
    resp = await _import(client, county, ROSTER.encode(encoding))
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert (result["rows"], result["created"], result["updated"]) == (7, 3, 0)
    assert [(p["line"], p["reason"].split(":")[0]) for p in result["rejected"]] == [
        (2, "same phone again on line 7"),
        (4, "phone '12345'"),
        (5, "name is empty"),
        (9, "joined_on"),
    ]
    # The same reasons in Chinese, as the console's import preview shows them.
    assert [p["words"] for p in result["rejected"]] == [
        "手机号与第 7 行相同（以第 7 行为准）",
        "手机号 12345：号码无效",
        "姓名为空",
        "入党日期 not a date 无法识别（应如 2021-07-01）",
    ]
    rows = {r["name"]: r for r in await conn.fetch("SELECT * FROM contacts")}
    assert set(rows) == {"钱七", "李四", "赵六"}
    assert rows["李四"]["phone"] == "+8618612345678"
    assert rows["李四"]["joined_on"] == date(2019, 6, 30)
    assert rows["赵六"]["tags"] == ["副科级以上"]
    assert rows["钱七"]["phone"] == "+8613800138000"
    assert "张三" not in rows


async def test_reimport_updates_in_place(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str
) -> None:
    await _import(client, county, ROSTER.encode())
    again = await _import(client, county, "姓名,手机\n李四,18612345678\n".encode())
    assert (again.json()["created"], again.json()["updated"]) == (0, 1)
    tags = await conn.fetchval("SELECT tags FROM contacts WHERE name = '李四'")
    assert tags == []


async def test_xlsx_with_numbers_and_dates_as_excel_stores_them(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str
) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["姓名", "手机", "标签", "入党日期", "支部"])
    sheet.append(["张三", 13800138000, "书记|大学生村官", date(2001, 7, 1), "一支部"])
    sheet.append(["李四", "bad", "", None, ""])
    buffer = io.BytesIO()
    book.save(buffer)
    resp = await client.post(
        "/v1/contacts/import",
        content=buffer.getvalue(),
        headers={**bearer(county), "Content-Type": "application/octet-stream"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["created"] == 1
    assert resp.json()["rejected"][0]["line"] == 3
    row = await conn.fetchrow("SELECT * FROM contacts")
    assert row is not None
    assert (row["phone"], row["tags"], row["joined_on"]) == (
        "+8613800138000",
        ["书记", "大学生村官"],
        date(2001, 7, 1),
    )
    assert row["fields"] == '{"支部": "一支部"}'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        ("名字\n张三\n".encode(), "missing: phone"),
        (b"\xff\xfe\x00\xd8garbage\x81", "neither UTF-8 nor GBK"),
        (b"PK\x03\x04not really a zip", "XLSX workbook cannot be read"),
    ],
)
async def test_unreadable_files_are_422(
    client: httpx.AsyncClient, county: str, data: bytes, message: str
) -> None:
    resp = await _import(client, county, data)
    assert resp.status_code == 422
    assert message in resp.json()["detail"]


async def test_list_filter_search_delete_and_opt_out_state(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str
) -> None:
    await _import(client, county, ROSTER.encode())
    tenant = await get_by_code(conn, "510104")
    assert tenant is not None
    await conn.execute(
        "INSERT INTO opt_outs (tenant_id, phone) VALUES ($1, '+8618612345678')", tenant.id
    )
    secretaries = (
        await client.get("/v1/contacts", params={"tag": "书记"}, headers=bearer(county))
    ).json()
    assert [c["name"] for c in secretaries["items"]] == ["钱七"]
    found = (await client.get("/v1/contacts", params={"q": "李"}, headers=bearer(county))).json()
    assert [(c["name"], c["opted_out"]) for c in found["items"]] == [("李四", True)]
    contact_id = found["items"][0]["id"]
    assert (
        await client.delete(f"/v1/contacts/{contact_id}", headers=bearer(county))
    ).status_code == 204
    assert (
        await client.delete(f"/v1/contacts/{contact_id}", headers=bearer(county))
    ).status_code == 404


async def test_send_to_tags_and_contacts_and_across_the_subtree(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str
) -> None:
    await grant(conn, {"000000": 1000, "510000": 500, "510100": 300, "510104": 100, "510105": 100})
    await _import(client, county, ROSTER.encode())
    sibling = await make_key(conn, "510105")
    await _import(client, sibling, "姓名,手机,标签\n周九,13512345678,书记\n".encode())

    own = await client.post(
        "/v1/messages", json={"to_tags": ["书记"], "body": "书记会议"}, headers=bearer(county)
    )
    assert own.json()["counts"]["accepted"] == 1  # 钱七 only: 周九 is the sibling's
    city = await make_key(conn, "510100")
    everyone = await client.post(
        "/v1/messages",
        json={"to_tags": ["书记"], "subtree": True, "body": "全市书记会议", "dedup": "off"},
        headers=bearer(city),
    )
    assert everyone.json()["counts"]["accepted"] == 2
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM contacts WHERE name = '李四'")]
    direct = await client.post(
        "/v1/messages",
        json={"to_contacts": [*ids, 999_999, -1, 2**70], "body": "个别通知"},
        headers=bearer(county),
    )
    assert direct.json()["counts"]["accepted"] == 1
    assert direct.json()["rejected"] == [
        {"to": f"contact:{i}", "reason": "unknown_contact"} for i in (999_999, -1, 2**70)
    ]


async def test_pages_walk_one_roster_among_interleaved_ones(conn: asyncpg.Connection) -> None:
    """A tenant's pages hold its own contacts only, in id order, whatever the tenants beside
    it in id: the keyset is a range of the (tenant_id, id) index (contacts.repository)."""
    await make_small_tree(conn)
    codes = ("510100", "510104", "510105")  # a lower and a higher tenant id than 510104's
    found = {code: await get_by_code(conn, code) for code in codes}
    for n in range(12):  # imported in turns: each roster's ids interleave with the others'
        for code, tenant in found.items():
            assert tenant is not None
            tags = ["书记"] if n % 3 == 0 else ["党员"]
            await conn.execute(
                "INSERT INTO contacts (tenant_id, phone, name, tags) VALUES ($1, $2, $3, $4)",
                tenant.id,
                f"+86138{codes.index(code)}{n:07d}",
                f"{code}-{n}",
                tags,
            )
    county = found["510104"]
    assert county is not None
    for tag, expected in ((None, list(range(12))), ("书记", [0, 3, 6, 9])):
        names, after = [], 0
        while True:
            page = await contacts.list_contacts(conn, county, after, 3, tag, None)
            names += [c.name for c in page.items]
            if page.next_after is None:
                break
            after = page.next_after
        assert names == [f"510104-{n}" for n in expected]
    searched = await contacts.list_contacts(conn, county, 0, 50, None, "510104-1")
    assert [c.name for c in searched.items] == ["510104-1", "510104-10", "510104-11"]
