"""The roster in the console (/dashboard/contacts) and the API routes beside it: the pages and
the API list, search, edit and delete through the same functions and agree; an import is
previewed (nothing written, bad lines shown) and then confirmed; exports are inert; an opted-out
phone comes back only with a reason, recorded with who did it; a sibling county gets 404 and a
查看-only person 403 on every change."""

from __future__ import annotations

import contextlib
import io
import os
import re

import asyncpg
import httpx
import msgspec
import openpyxl
import pytest
from arq.connections import ArqRedis

from hub.app import create_app
from hub.contacts import service as contacts
from hub.db import PoolDatabase, create_pool
from hub.errors import NotFound, TooManyRequests
from hub.exports import files
from hub.settings import Settings
from tenants import service as tenants
from tenants.scopes import Role, Scope
from tenants.service import authenticate
from tests.factories import bearer, grant, make_key, make_small_tree
from tests.integration.users.conftest import SAME_ORIGIN, make_user, signed_in

ROSTER = (
    "姓名,手机号,标签,入党日期,职务\n"
    "张三,13800138000,书记、副科级以上,2001-07-01,村支部书记\n"
    "李四,18612345678,大学生村官,2019/6/30,\n"
    "王五,12345,书记,2010-01-01,\n"  # line 4: bad phone
    ",13311112222,书记,,\n"  # line 5: no name
    "百分%比,19212345678,副科级以上,,\n"
    "下_划线,17012345678,,,\n"
)


@pytest.fixture
async def county(conn: asyncpg.Connection) -> str:
    """锦江区 (510104) with its roster imported through the API; the key that imported it."""
    await make_small_tree(conn)
    await grant(conn, {"000000": 10_000, "510000": 1_000, "510100": 500, "510104": 100})
    key = await make_key(conn, "510104")
    return key


async def _api_import(client: httpx.AsyncClient, key: str, text: str) -> httpx.Response:
    headers = {**bearer(key), "Content-Type": "text/csv"}
    response = await client.post("/v1/contacts/import", content=text.encode(), headers=headers)
    assert response.status_code == 200, response.text
    return response


async def _api_list(client: httpx.AsyncClient, key: str, **query: str) -> list[dict[str, object]]:
    response = await client.get("/v1/contacts/", params=query, headers=bearer(key))
    assert response.status_code == 200, response.text
    items: list[dict[str, object]] = response.json()["items"]
    return items


def _ids_on_page(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr data-id="(\d+)"', html)]


async def _person(
    client: httpx.AsyncClient, conn: asyncpg.Connection, code: str, login: str, roles: set[Role]
) -> None:
    await make_user(conn, code, login, roles)
    await signed_in(client, conn, login)


async def _entries(conn: asyncpg.Connection, action: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT actor, object, before, after, detail FROM operation_log WHERE action = $1"
        " ORDER BY id",
        action,
    )


async def test_pages_and_api_list_search_edit_and_delete_alike(
    client: httpx.AsyncClient, conn: asyncpg.Connection, county: str
) -> None:
    await _api_import(client, county, ROSTER)
    await _person(client, conn, "510104", "sender", {Role.SEND})

    page = await client.get("/dashboard/contacts/")
    assert page.status_code == 200, page.text
    everyone = [c["id"] for c in await _api_list(client, county)]
    assert _ids_on_page(page.text) == everyone
    assert len(everyone) == 4

    # Search: `%` and `_` are themselves, not LIKE's wildcards; tags too; both sides agree.
    for query in ({"q": "%"}, {"q": "_"}, {"q": "8613800"}, {"tag": "副科级以上"}):
        on_page = _ids_on_page((await client.get("/dashboard/contacts/", params=query)).text)
        assert on_page == [c["id"] for c in await _api_list(client, county, **query)]
        assert len(on_page) == (2 if "tag" in query else 1), query

    zhang = next(c for c in await _api_list(client, county, q="张三"))
    edited = await client.post(
        f"/dashboard/contacts/{zhang['id']}",
        data={"name": " 张三丰 ", "tags": "书记, 宣传委员", "fields": "职务=村主任\n备注=返乡"},
        headers=SAME_ORIGIN,
    )
    assert edited.status_code == 303, edited.text
    (seen,) = await _api_list(client, county, q="张三丰")
    assert (seen["tags"], seen["fields"]) == (
        ["书记", "宣传委员"],
        {"职务": "村主任", "备注": "返乡"},
    )

    patched = await client.patch(
        f"/v1/contacts/{zhang['id']}", json={"tags": ["组织委员"]}, headers=bearer(county)
    )
    assert patched.status_code == 200, patched.text
    shown = await client.get(f"/dashboard/contacts/{zhang['id']}")
    assert "组织委员" in shown.text
    assert "张三丰" in shown.text

    bad = await client.post(
        f"/dashboard/contacts/{zhang['id']}",
        data={"name": "", "tags": "", "fields": ""},
        headers=SAME_ORIGIN,
    )
    assert bad.status_code == 422
    assert 'id="error"' in bad.text
    nul = await client.post(
        f"/dashboard/contacts/{zhang['id']}",
        data={"name": "张\x00三", "tags": "", "fields": ""},
        headers=SAME_ORIGIN,
    )
    assert 400 <= nul.status_code < 500
    assert (await _api_list(client, county, q="张三丰"))[0]["tags"] == ["组织委员"]

    gone = await client.post(f"/dashboard/contacts/{zhang['id']}/delete", headers=SAME_ORIGIN)
    assert gone.status_code == 303
    assert zhang["id"] not in [c["id"] for c in await _api_list(client, county)]
    again = await client.delete(f"/v1/contacts/{zhang['id']}", headers=bearer(county))
    assert again.status_code == 404

    updates = await _entries(conn, "contacts.update")
    assert [(e["actor"], e["object"]) for e in updates] == [
        ("user:sender", f"contact:{zhang['id']}"),
        (f"key:{county.split('_')[1]}", f"contact:{zhang['id']}"),
    ]
    (deleted,) = await _entries(conn, "contacts.delete")
    assert deleted["actor"] == "user:sender"
    assert "张三丰" in deleted["before"]
    (imported,) = await _entries(conn, "contacts.import")
    assert '"created": 4' in imported["detail"]
    assert '"rejected": 2' in imported["detail"]


async def test_an_import_is_previewed_writing_nothing_then_confirmed_once(
    client: httpx.AsyncClient, conn: asyncpg.Connection, county: str
) -> None:
    await _person(client, conn, "510104", "sender", {Role.SEND})
    upload = {"file": ("roster.csv", ROSTER.encode("gbk"), "text/csv")}
    preview = await client.post("/dashboard/contacts/import", files=upload, headers=SAME_ORIGIN)
    assert preview.status_code == 200, preview.text
    problems = re.search(r'<table class="data" id="problems">(.*?)</table>', preview.text, re.S)
    assert problems is not None
    assert re.findall(r'data-line="(\d+)"', problems[1]) == ["4", "5"]
    # Why, in Chinese (the API's `reason` stays English; the console shows `words`).
    reasons = re.findall(r'<td class="reason">([^<]*)</td>', problems[1])
    assert reasons == ["手机号 12345：号码无效", "姓名为空"]
    rows = re.search(r'<table class="data" id="rows">(.*?)</table>', preview.text, re.S)
    assert rows is not None
    assert "李四" in rows[1]
    assert "+8618612345678" in rows[1]
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0
    assert await _entries(conn, "contacts.import") == []
    assert await conn.fetchval("SELECT count(*) FROM roster_uploads") == 1

    token = re.search(r'name="token" value="([^"]+)"', preview.text)
    assert token is not None
    confirmed = await client.post(
        "/dashboard/contacts/import/confirm", data={"token": token[1]}, headers=SAME_ORIGIN
    )
    assert confirmed.status_code == 200, confirmed.text
    assert "新增 4" in confirmed.text
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 4
    assert await conn.fetchval("SELECT count(*) FROM roster_uploads") == 0
    (entry,) = await _entries(conn, "contacts.import")
    assert entry["actor"] == "user:sender"
    twice = await client.post(
        "/dashboard/contacts/import/confirm", data={"token": token[1]}, headers=SAME_ORIGIN
    )
    assert twice.status_code == 404

    unreadable = {"file": ("x.csv", b"no,header\n1,2\n", "text/csv")}
    refused = await client.post("/dashboard/contacts/import", files=unreadable, headers=SAME_ORIGIN)
    assert refused.status_code == 422
    assert "姓名" in refused.text
    foreign = await client.post(
        "/dashboard/contacts/import", files=upload, headers={"Origin": "http://evil.test"}
    )
    assert foreign.status_code == 403


async def test_exports_are_inert(
    client: httpx.AsyncClient, conn: asyncpg.Connection, county: str
) -> None:
    await _api_import(
        client, county, '姓名,手机,标签,备注\n"=HYPERLINK(""http://x"")",13800138000,@书记,+1\n'
    )
    await _person(client, conn, "510104", "reader", {Role.READ})
    csv_file = await client.get("/dashboard/contacts/export.csv")
    assert csv_file.status_code == 200, csv_file.text
    text = csv_file.content.decode("utf-8-sig")
    assert text.splitlines()[0] == "姓名,手机,标签,入党日期,已退订,备注"
    assert text.splitlines()[1] == '"\'=HYPERLINK(""http://x"")",\'+8613800138000,\'@书记,,,\'+1'

    api = await client.get("/v1/contacts/export.csv", headers=bearer(county))
    assert api.status_code == 200
    assert api.headers["content-type"] == "text/csv; charset=utf-8"  # once
    assert api.content.decode("utf-8-sig") == text

    xlsx_file = await client.get("/dashboard/contacts/export.xlsx")
    assert xlsx_file.status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx_file.content)).active
    assert sheet is not None
    name = sheet["A2"]
    assert name.value == '=HYPERLINK("http://x")'
    assert name.data_type == "s"
    assert name.quotePrefix
    assert sheet["C2"].value == "@书记"

    # The CSV imported again, as a clerk would after editing it: the same contact, unchanged
    # (its inert `'` read back off every cell).
    before = await _api_list(client, county)
    again = await _api_import(client, county, api.content.decode("utf-8-sig"))
    assert again.json()["rejected"] == [], again.text
    assert await _api_list(client, county) == before


async def test_a_csv_with_lines_ending_in_cr_alone_is_read(
    client: httpx.AsyncClient, conn: asyncpg.Connection, county: str
) -> None:
    """Old Mac and some Excel exports end lines with CR only (read as one line, the csv module
    refused it, and the hub called that 413 too large)."""
    await _api_import(client, county, "姓名,手机\r张三,13800138000\r李四,18612345678\r")
    phones = sorted(str(c["phone"]) for c in await _api_list(client, county))
    assert phones == ["+8613800138000", "+8618612345678"]


async def test_resubscribe_needs_a_reason_and_records_who(
    client: httpx.AsyncClient, conn: asyncpg.Connection, county: str
) -> None:
    await _api_import(client, county, ROSTER)
    tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    for phone in ("+8613800138000", "+8618612345678"):
        await conn.execute(
            "INSERT INTO opt_outs (tenant_id, phone) VALUES ($1, $2)", tenant_id, phone
        )
    assert [c["opted_out"] for c in await _api_list(client, county, q="张三")] == [True]

    url = "/v1/tenants/510104/opt-outs/+8613800138000/resubscribe"
    for body in ({}, {"reason": "   "}, {"reason": "x" * 201}, {"reason": "a\x00b"}):
        refused = await client.post(url, json=body, headers=bearer(county))
        assert refused.status_code == 422, (body, refused.text)
    assert await conn.fetchval("SELECT count(*) FROM opt_outs") == 2

    done = await client.post(url, json={"reason": "本人来电要求恢复"}, headers=bearer(county))
    assert done.status_code == 200, done.text
    assert done.json()["actor"] == f"key:{county.split('_')[1]}"
    assert [c["opted_out"] for c in await _api_list(client, county, q="张三")] == [False]
    again = await client.post(url, json={"reason": "再来一次"}, headers=bearer(county))
    assert again.status_code == 404

    # The page: shown as opted out, refused without a reason, recorded with one.
    await _person(client, conn, "510104", "sender", {Role.SEND})
    (li,) = await _api_list(client, county, q="李四")
    page = await client.get(f"/dashboard/contacts/{li['id']}")
    assert 'id="opted-out"' in page.text
    assert 'id="resubscribe"' in page.text
    form = f"/dashboard/contacts/opt-outs/%2B8618612345678/resubscribe?back={li['id']}"
    empty = await client.post(form, data={"reason": ""}, headers=SAME_ORIGIN)
    assert empty.status_code == 422
    assert "原因" in empty.text
    taken = await client.post(form, data={"reason": "支部书记确认"}, headers=SAME_ORIGIN)
    assert taken.status_code == 303, taken.text
    assert await conn.fetchval("SELECT count(*) FROM opt_outs") == 0
    recorded = await conn.fetch("SELECT phone, reason, actor FROM resubscriptions ORDER BY id")
    assert [tuple(r) for r in recorded] == [
        ("+8613800138000", "本人来电要求恢复", f"key:{county.split('_')[1]}"),
        ("+8618612345678", "支部书记确认", "user:sender"),
    ]
    entries = await _entries(conn, "contacts.resubscribe")
    assert [(e["actor"], e["object"]) for e in entries] == [
        (f"key:{county.split('_')[1]}", "phone:+8613800138000"),
        ("user:sender", "phone:+8618612345678"),
    ]
    assert "支部书记确认" in entries[1]["detail"]


async def test_a_sibling_county_gets_404(
    client: httpx.AsyncClient, conn: asyncpg.Connection, county: str
) -> None:
    await _api_import(client, county, ROSTER)
    tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    await conn.execute(
        "INSERT INTO opt_outs (tenant_id, phone) VALUES ($1, '+8613800138000')", tenant_id
    )
    (zhang,) = await _api_list(client, county, q="张三")
    sibling = await make_key(conn, "510105")
    url = "/v1/tenants/510104/opt-outs/+8613800138000/resubscribe"
    assert (
        await client.post(url, json={"reason": "x"}, headers=bearer(sibling))
    ).status_code == 404
    patched = await client.patch(
        f"/v1/contacts/{zhang['id']}", json={"name": "x"}, headers=bearer(sibling)
    )
    assert patched.status_code == 404
    await _person(client, conn, "510105", "qingyang", {Role.SEND})
    assert (await client.get(f"/dashboard/contacts/{zhang['id']}")).status_code == 404
    edit = await client.post(
        f"/dashboard/contacts/{zhang['id']}", data={"name": "x"}, headers=SAME_ORIGIN
    )
    assert edit.status_code == 404
    gone = await client.post(f"/dashboard/contacts/{zhang['id']}/delete", headers=SAME_ORIGIN)
    assert gone.status_code == 404
    assert _ids_on_page((await client.get("/dashboard/contacts/")).text) == []
    assert await conn.fetchval("SELECT name FROM contacts WHERE id = $1", zhang["id"]) == "张三"
    assert await conn.fetchval("SELECT count(*) FROM opt_outs") == 1


async def test_a_reader_is_refused_every_change(
    client: httpx.AsyncClient, conn: asyncpg.Connection, county: str
) -> None:
    await _api_import(client, county, ROSTER)
    (zhang,) = await _api_list(client, county, q="张三")
    reader_key = await make_key(conn, "510104", frozenset({Scope.CONTACTS_READ}))
    patched = await client.patch(
        f"/v1/contacts/{zhang['id']}", json={"name": "x"}, headers=bearer(reader_key)
    )
    assert patched.status_code == 403
    url = "/v1/tenants/510104/opt-outs/+8613800138000/resubscribe"
    refused = await client.post(url, json={"reason": "x"}, headers=bearer(reader_key))
    assert refused.status_code == 403

    await _person(client, conn, "510104", "reader", {Role.READ})
    listed = await client.get("/dashboard/contacts/")
    assert listed.status_code == 200
    assert 'id="import"' not in listed.text
    shown = await client.get(f"/dashboard/contacts/{zhang['id']}")
    assert shown.status_code == 200
    assert 'id="edit"' not in shown.text
    upload = {"file": ("roster.csv", ROSTER.encode(), "text/csv")}
    for path, kwargs in (
        (f"/dashboard/contacts/{zhang['id']}", {"data": {"name": "x"}}),
        (f"/dashboard/contacts/{zhang['id']}/delete", {}),
        ("/dashboard/contacts/import", {"files": upload}),
        ("/dashboard/contacts/import/confirm", {"data": {"token": "x"}}),
        ("/dashboard/contacts/opt-outs/%2B8613800138000/resubscribe", {"data": {"reason": "x"}}),
    ):
        response = await client.post(path, headers=SAME_ORIGIN, **kwargs)
        assert response.status_code == 403, path
    assert await conn.fetchval("SELECT name FROM contacts WHERE id = $1", zhang["id"]) == "张三"
    assert await conn.fetchval("SELECT count(*) FROM roster_uploads") == 0


async def test_a_suspended_county_reads_its_roster_but_changes_nothing(
    client: httpx.AsyncClient, conn: asyncpg.Connection, county: str
) -> None:
    await _api_import(client, county, ROSTER)
    (zhang,) = await _api_list(client, county, q="张三")
    await conn.execute("UPDATE tenants SET status = 'suspended' WHERE code = '510104'")
    await _person(client, conn, "510104", "sender", {Role.SEND})
    shown = await client.get(f"/dashboard/contacts/{zhang['id']}")
    assert shown.status_code == 200
    assert 'id="edit"' not in shown.text
    edit = await client.post(
        f"/dashboard/contacts/{zhang['id']}", data={"name": "x"}, headers=SAME_ORIGIN
    )
    assert edit.status_code == 403
    assert await conn.fetchval("SELECT name FROM contacts WHERE id = $1", zhang["id"]) == "张三"


async def test_a_new_upload_replaces_its_uploaders_last_and_a_unit_holds_a_few(
    conn: asyncpg.Connection, county: str
) -> None:
    """Each held roster may be 20 MB in PostgreSQL: previews never confirmed must not pile up
    (one console user once held 59 in 40 s, 2.3 GB on disk)."""
    who = await authenticate(conn, county)
    assert who is not None
    tenant = await tenants.own(conn, who)
    data = ROSTER.encode()
    first = await contacts.hold_upload(conn, who, tenant, "a.csv", data)
    again = await contacts.hold_upload(conn, who, tenant, "b.csv", data)
    assert await conn.fetchval("SELECT count(*) FROM roster_uploads") == 1
    with pytest.raises(NotFound):
        await contacts.peek_upload(conn, tenant, first)
    assert await contacts.peek_upload(conn, tenant, again) == data

    others = [
        msgspec.structs.replace(who, key_id=None, key_prefix=None, user_id=n, login=f"u{n}")
        for n in range(1, 10)
    ]
    assert len({o.actor for o in others} | {who.actor}) == 10
    for other in others[: contacts.UPLOADS_HELD - 1]:
        await contacts.hold_upload(conn, other, tenant, "c.csv", data)
    with pytest.raises(TooManyRequests):  # five wait: a sixth uploader is refused
        await contacts.hold_upload(conn, others[-1], tenant, "d.csv", data)
    await contacts.hold_upload(conn, who, tenant, "e.csv", data)  # one of the five replaces its own
    assert await conn.fetchval("SELECT count(*) FROM roster_uploads") == contacts.UPLOADS_HELD


async def test_replaced_uploads_give_their_space_back(
    settings: Settings, fresh_db: str, redis: ArqRedis
) -> None:
    """Each upload let go leaves its bytes as dead TOAST until a VACUUM, and autovacuum fell far
    behind a console user replacing previews (316 in 7 minutes grew the database from 61 MB to
    3.9 GB): after each preview the table's space is made reusable (contacts.reclaim_uploads).
    The hub's own pool on a committed database: the VACUUM runs as it does in production."""
    setup = await asyncpg.connect(fresh_db)
    try:
        await make_small_tree(setup)
        await make_user(setup, "510104", "sender", {Role.SEND})
    finally:
        await setup.close()
    db = PoolDatabase(await create_pool(settings.db, fresh_db))
    app = create_app(settings, db=db, redis=redis)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI typing differs
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as console:
            async with db.acquire() as conn:
                await signed_in(console, conn, "sender")
            sizes = []
            for n in range(12):  # each replaces the one before: one is held
                # About 400 KB that compresses little: random text in a free column.
                rows = "".join(
                    f"人{i},1380013{i:04d},{os.urandom(60).hex()}\n" for i in range(3000)
                )
                upload = {"file": (f"{n}.csv", f"姓名,手机,备注\n{rows}".encode(), "text/csv")}
                preview = await console.post(
                    "/dashboard/contacts/import", files=upload, headers=SAME_ORIGIN
                )
                assert preview.status_code == 200, preview.text
                async with db.acquire() as conn:
                    sizes.append(await conn.fetchval(TABLE_SIZE))
                    assert await conn.fetchval("SELECT count(*) FROM roster_uploads") == 1
    finally:
        await db.close()
    # Without the VACUUM each preview would add its own size (12 of them: twelve times the
    # first); with it the table stays near two uploads.
    assert sizes[-1] < 3 * sizes[0], sizes


TABLE_SIZE = "SELECT pg_total_relation_size('roster_uploads')"


async def test_a_unit_builds_two_downloads_at_once_and_others_are_not_held(
    client: httpx.AsyncClient, conn: asyncpg.Connection, county: str
) -> None:
    """Building an XLSX of a big roster costs seconds of CPU: a third at once is 429, and
    another unit is not held by them (hub.exports.files.building)."""
    await _api_import(client, county, ROSTER)
    sibling = await make_key(conn, "510105")
    tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(files.EXPORTS_PER_TENANT):  # two being built (held here)
            await stack.enter_async_context(files.building(tenant_id))
        for path in ("/v1/contacts/export.csv", "/v1/contacts/export.xlsx"):
            refused = await client.get(path, headers=bearer(county))
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"] == "rate_limited"
        other = await client.get("/v1/contacts/export.csv", headers=bearer(sibling))
        assert other.status_code == 200
    again = await client.get("/v1/contacts/export.csv", headers=bearer(county))
    assert again.status_code == 200
