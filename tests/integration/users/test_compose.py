"""The compose page (/dashboard/compose) for people: preview, send once per form, roles."""

from __future__ import annotations

import html
import re

import asyncpg
import httpx

from hub.templates import service as templates
from hub.templates.schemas import CreateTemplate
from tenants.scopes import Role
from tenants.service import authenticate, get_by_code
from tests.factories import make_key
from tests.integration.users.conftest import SAME_ORIGIN, make_user, signed_in

PASTED = "13800138000\n12345\n186 1234 5678, 13311112222"


def _token(page: str) -> str:
    found = re.search(r'name="token" value="([^"]+)"', page)
    assert found is not None, page
    return found[1]


async def _upload(client: httpx.AsyncClient, form: dict[str, str], roster: bytes) -> httpx.Response:
    """The compose form posted with a roster file (导入名册)."""
    return await client.post(
        "/dashboard/compose/roster",
        data=form,
        files={"roster": ("名册.csv", roster, "text/csv")},
        headers=SAME_ORIGIN,
    )


async def _sender(client: httpx.AsyncClient, conn: asyncpg.Connection) -> str:
    await make_user(conn, "510104", "sender", {Role.SEND})
    await signed_in(client, conn, "sender")
    page = await client.get("/dashboard/compose")
    assert page.status_code == 200, page.text
    return page.text


async def test_preview_shows_numbers_and_a_bad_line_and_the_rest_go_once(
    client: httpx.AsyncClient, conn: asyncpg.Connection, tree: None
) -> None:
    page = await _sender(client, conn)
    assert 'id="nav-compose"' in page
    assert 'value="urgent"' not in page  # 发送 does not carry messages:urgent
    form = {"token": _token(page), "to": PASTED, "body": "今晚七点开会", "priority": "normal"}
    preview = await client.post("/dashboard/compose/preview", data=form, headers=SAME_ORIGIN)
    assert preview.status_code == 200, preview.text
    text = preview.text
    assert "【锦江区】今晚七点开会" in text
    assert re.search(r'id="pv-recipients">3<', text)
    assert re.search(r'id="pv-segments">3 条<', text)
    assert re.search(r'id="pv-quota">100 条<', text)
    assert "第 2 行 12345：号码无效" in text
    assert f'value="{form["token"]}"' in text  # the same form, still its own token
    fragment = await client.post(
        "/dashboard/compose/preview", data=form, headers={**SAME_ORIGIN, "X-Fragment": "1"}
    )
    assert fragment.text.lstrip().startswith("{#") or fragment.text.lstrip().startswith("<div")
    assert "<html" not in fragment.text

    first = await client.post("/dashboard/compose/send", data=form, headers=SAME_ORIGIN)
    again = await client.post("/dashboard/compose/send", data=form, headers=SAME_ORIGIN)
    assert first.status_code == again.status_code == 303, first.text
    assert first.headers["location"] == again.headers["location"]
    send_id = int(first.headers["location"].rsplit("/", 1)[1])
    rows = await conn.fetch("SELECT id, actor, reply_wanted FROM sends WHERE actor LIKE 'user:%'")
    assert [r["id"] for r in rows] == [send_id]
    assert await conn.fetchval("SELECT count(*) FROM messages WHERE send_id = $1", send_id) == 3
    shown = (await client.get(first.headers["location"])).text
    assert "今晚七点开会" in shown
    # Another form (a new token) with the same content is another send.
    other = {**form, "token": _token((await client.get("/dashboard/compose")).text)}
    third = await client.post("/dashboard/compose/send", data=other, headers=SAME_ORIGIN)
    assert third.headers["location"] != first.headers["location"]


async def test_tags_with_counts_and_reply_wanted(
    client: httpx.AsyncClient, conn: asyncpg.Connection, tree: None
) -> None:
    for code, phone, tags in (
        ("510104", "+8613800138000", ["书记"]),
        ("510104", "+8613800138001", ["书记", "村官"]),
        ("510104001", "+8613800138002", ["书记"]),
    ):
        await conn.execute(
            "INSERT INTO contacts (tenant_id, phone, name, tags) "
            "SELECT id, $2, '某某', $3 FROM tenants WHERE code = $1",
            code,
            phone,
            tags,
        )
    page = await _sender(client, conn)
    assert re.search(r'value="书记"> 书记 <span class="muted">2 / 3</span>', page), page
    assert re.search(r'value="村官"> 村官 <span class="muted">1 / 1</span>', page)
    form = {
        "token": _token(page),
        "tags": "书记",
        "subtree": "1",
        "body": "支部会议，回复1确认",
        "reply": "1",
    }
    sent = await client.post("/dashboard/compose/send", data=form, headers=SAME_ORIGIN)
    assert sent.status_code == 303, sent.text
    send_id = int(sent.headers["location"].rsplit("/", 1)[1])
    assert await conn.fetchval("SELECT reply_wanted FROM sends WHERE id = $1", send_id)
    assert await conn.fetchval("SELECT count(*) FROM messages WHERE send_id = $1", send_id) == 3


async def test_a_reader_gets_403_and_urgent_needs_its_scope(
    client: httpx.AsyncClient, conn: asyncpg.Connection, tree: None
) -> None:
    page = await _sender(client, conn)
    form = {"token": _token(page), "to": "13800138000", "body": "急", "priority": "urgent"}
    urgent = await client.post("/dashboard/compose/send", data=form, headers=SAME_ORIGIN)
    assert urgent.status_code == 403
    assert "messages:urgent" in urgent.text
    cross_site = await client.post("/dashboard/compose/send", data={**form, "priority": "normal"})
    assert cross_site.status_code == 403
    assert await conn.fetchval("SELECT count(*) FROM sends WHERE actor LIKE 'user:%'") == 0

    await client.post("/dashboard/logout", headers=SAME_ORIGIN)
    await make_user(conn, "510104", "reader", {Role.READ}, phone="13800138009")
    await signed_in(client, conn, "reader", "+8613800138009")
    assert (await client.get("/dashboard/compose")).status_code == 403
    assert 'id="nav-compose"' not in (await client.get("/dashboard/sends")).text
    posted = await client.post(
        "/dashboard/compose/send", data={**form, "priority": "normal"}, headers=SAME_ORIGIN
    )
    assert posted.status_code == 403
    refused = await client.post(
        "/dashboard/compose/preview", data={**form, "priority": "normal"}, headers=SAME_ORIGIN
    )
    assert refused.status_code == 403


async def test_nul_and_a_bad_time_are_a_clear_4xx(
    client: httpx.AsyncClient, conn: asyncpg.Connection, tree: None
) -> None:
    page = await _sender(client, conn)
    base = {"token": _token(page), "to": "13800138000", "body": "好"}
    nul = await client.post(
        "/dashboard/compose/send", data={**base, "body": "a\x00b"}, headers=SAME_ORIGIN
    )
    assert 400 <= nul.status_code < 500
    late = await client.post(
        "/dashboard/compose/send", data={**base, "send_at": "明天"}, headers=SAME_ORIGIN
    )
    assert late.status_code == 422
    assert "发送时间格式无效" in late.text


async def test_a_roster_file_adds_its_phones_and_shows_bad_lines(
    client: httpx.AsyncClient, conn: asyncpg.Connection, tree: None
) -> None:
    page = await _sender(client, conn)
    roster = "姓名,手机,标签\n张三,13800138000,书记\n李四,12345,\n王五,186 1234 5678,\n".encode()
    form = {"token": _token(page), "to": "13311112222", "body": "支部会议"}
    read = await _upload(client, form, roster)
    assert read.status_code == 200, read.text
    assert '<li data-line="3">第 3 行：12345：号码无效</li>' in read.text
    assert 'id="roster-added">已从名册加入 2 个号码' in read.text
    assert re.search(r'id="pv-recipients">3<', read.text)
    to = re.search(r'<textarea name="to" id="to"[^>]*>([^<]*)</textarea>', read.text)
    assert to is not None
    assert to[1].split("\n") == ["13311112222", "13800138000", "186 1234 5678"]
    unreadable = await client.post(
        "/dashboard/compose/roster",
        data=form,
        files={"roster": ("x.xlsx", b"PK\x03\x04 not a workbook", "application/octet-stream")},
        headers=SAME_ORIGIN,
    )
    assert unreadable.status_code == 422
    assert "名册无法读取" in unreadable.text


async def test_an_approved_template_with_its_variables(
    client: httpx.AsyncClient, conn: asyncpg.Connection, tree: None
) -> None:
    root, county = await get_by_code(conn, "000000"), await get_by_code(conn, "510104")
    assert root is not None
    assert county is not None
    operator = await authenticate(conn, await make_key(conn, "000000"))
    proposer = await authenticate(conn, await make_key(conn, "510104"))
    assert operator is not None
    assert proposer is not None
    approved = await templates.create(
        conn, operator, root, CreateTemplate(name="开会通知", body="{时间}在{地点}开会")
    )
    pending = await templates.create(
        conn, proposer, county, CreateTemplate(name="待审", body="未审的")
    )
    page = await _sender(client, conn)
    assert f'<option value="{approved.id}">' in page
    assert f'<option value="{pending.id}">' not in page
    form = {
        "token": _token(page),
        "to": "13800138000",
        "template": str(approved.id),
        "vars": "时间=周五下午三点\n地点 = 三楼会议室",
    }
    preview = await client.post("/dashboard/compose/preview", data=form, headers=SAME_ORIGIN)
    assert "【锦江区】周五下午三点在三楼会议室开会" in preview.text
    missing = {**form, "vars": "时间=周五"}
    shown = await client.post("/dashboard/compose/preview", data=missing, headers=SAME_ORIGIN)
    assert 'id="preview-problem">missing template variables: 地点' in shown.text
    sent = await client.post("/dashboard/compose/send", data=form, headers=SAME_ORIGIN)
    assert sent.status_code == 303, sent.text
    send_id = int(sent.headers["location"].rsplit("/", 1)[1])
    body = await conn.fetchval("SELECT body FROM sends WHERE id = $1", send_id)
    assert body == "周五下午三点在三楼会议室开会"


async def test_contacts_picked_on_the_roster_page_each_read_their_own_name(
    client: httpx.AsyncClient, conn: asyncpg.Connection, tree: None
) -> None:
    ids = {}
    for code, phone, name in (
        ("510104", "+8613800138000", "张三"),
        ("510104", "+8613800138001", "李四"),
        ("510104", "+8613800138002", "王五"),
        ("510105", "+8613800138003", "青羊区的人"),  # another county's contact
    ):
        ids[name] = await conn.fetchval(
            "INSERT INTO contacts (tenant_id, phone, name, tags) "
            "SELECT id, $2, $3, '{}' FROM tenants WHERE code = $1 RETURNING id",
            code,
            phone,
            name,
        )
    await _sender(client, conn)
    roster = await client.get("/dashboard/contacts")
    assert f'name="contacts" value="{ids["张三"]}"' in roster.text
    assert 'id="pick-send"' in roster.text
    picked = [ids["张三"], ids["李四"], ids["青羊区的人"]]
    page = await client.get("/dashboard/compose", params={"contacts": picked})
    assert page.status_code == 200, page.text
    shown = re.findall(r'<span class="pill" data-id="\d+">([^<]+)</span>', page.text)
    assert shown == ["张三", "李四"]  # the other county's contact is not shown to pick
    form = {
        "token": _token(page.text),
        "contacts": ",".join(str(i) for i in picked),
        "body": "{姓名}同志：明早八点开会",
    }
    preview = await client.post("/dashboard/compose/preview", data=form, headers=SAME_ORIGIN)
    assert re.search(r'id="pv-recipients">2<', preview.text)
    assert "【锦江区】张三同志：明早八点开会" in preview.text  # the example
    assert f"contact:{ids['青羊区的人']}：联系人不存在" in preview.text
    sent = await client.post("/dashboard/compose/send", data=form, headers=SAME_ORIGIN)
    assert sent.status_code == 303, sent.text
    send_id = int(sent.headers["location"].rsplit("/", 1)[1])
    bodies = await conn.fetch(
        "SELECT body FROM messages WHERE send_id = $1 ORDER BY phone", send_id
    )
    assert [r["body"] for r in bodies] == ["张三同志：明早八点开会", "李四同志：明早八点开会"]
    refused = await client.post(
        "/dashboard/compose/preview", data={**form, "contacts": "1,x"}, headers=SAME_ORIGIN
    )
    assert "所选联系人无效" in refused.text


async def test_a_roster_files_names_fill_its_recipients_text(
    client: httpx.AsyncClient, conn: asyncpg.Connection, tree: None
) -> None:
    page = await _sender(client, conn)
    roster = "姓名,手机,职务\n张三,13800138000,支部书记\n王五,186 1234 5678,\n".encode()
    form = {"token": _token(page), "to": "13311112222", "body": "{姓名}同志：明早八点开会"}
    read = await _upload(client, form, roster)
    assert read.status_code == 200, read.text
    assert "正文可用名册中的 {姓名} 等列" in read.text
    # The pasted number is nobody in the file nor the roster: refused on its own.
    assert "13311112222：名册中缺少内容所需的变量" in read.text
    assert re.search(r'id="pv-recipients">2<', read.text)
    people = re.search(r'name="people" id="people" value="([^"]*)"', read.text)
    assert people is not None
    form |= {
        "to": "13311112222\n13800138000\n186 1234 5678",
        "people": html.unescape(people[1]),
    }
    sent = await client.post("/dashboard/compose/send", data=form, headers=SAME_ORIGIN)
    assert sent.status_code == 303, sent.text
    send_id = int(sent.headers["location"].rsplit("/", 1)[1])
    bodies = await conn.fetch(
        "SELECT phone, body FROM messages WHERE send_id = $1 ORDER BY phone", send_id
    )
    assert [(r["phone"], r["body"]) for r in bodies] == [
        ("+8613800138000", "张三同志：明早八点开会"),
        ("+8618612345678", "王五同志：明早八点开会"),
    ]
    broken = await client.post(
        "/dashboard/compose/preview", data={**form, "people": "{not json"}, headers=SAME_ORIGIN
    )
    assert "表单已失效，请重新导入名册" in broken.text
