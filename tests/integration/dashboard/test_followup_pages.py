"""The follow-up pages: sends listed and filtered, a send's results with reasons in Chinese and
replies, the remind/resend forms (once per form, same origin only), the results XLSX."""

from __future__ import annotations

import io

import asyncpg
import httpx
import pytest
from openpyxl import load_workbook

from hub.delivery import inbound
from hub.delivery.gateway import Inbound
from hub.settings import Settings
from tests.factories import bearer, make_key
from tests.integration.dashboard.conftest import SAME_ORIGIN, Seeded, sign_in

PHONES = ["13800138000", "18612345678", "13311112222"]


async def _asked(client: httpx.AsyncClient, key: str, body: str = "周五开会，回复1确认") -> int:
    resp = await client.post(
        "/v1/messages", json={"to": PHONES, "body": body, "reply_wanted": True}, headers=bearer(key)
    )
    assert resp.status_code == 202, resp.text
    send_id: int = resp.json()["id"]
    return send_id


async def _outcomes(conn: asyncpg.Connection, send_id: int) -> None:
    """Delivered, refused by the carrier as a bad number, and not delivered."""
    for phone, status, error in (
        (PHONES[0], "delivered", None),
        (PHONES[1], "failed", "isv.MOBILE_NUMBER_ILLEGAL: 号码非法"),
        (PHONES[2], "undelivered", "UNDELIV"),
    ):
        await conn.execute(
            "UPDATE messages SET status = $3::message_status, error = $4, sent_at = hub_now()"
            " WHERE send_id = $1 AND phone = $2",
            send_id,
            "+86" + phone,
            status,
            error,
        )


async def _reply(conn: asyncpg.Connection, settings: Settings, phone: str, text: str) -> None:
    extension = await conn.fetchval("SELECT sms_extension FROM tenants WHERE code = '510104'")
    await inbound.store(
        conn,
        settings.delivery,
        "outbox",
        [Inbound(phone, settings.delivery.service_number + extension, text)],
    )


@pytest.fixture
async def county(conn: asyncpg.Connection, seeded: Seeded) -> str:
    """A key of 锦江区 (510104) with every scope, dashboard:read included."""
    return await make_key(conn, "510104")


async def test_the_list_filters_and_links_to_each_send(
    client: httpx.AsyncClient, conn: asyncpg.Connection, county: str
) -> None:
    first = await _asked(client, county)
    second = await _asked(client, county, "学习材料下发")
    await _outcomes(conn, first)
    await sign_in(client, county)
    page = (await client.get("/dashboard/sends")).text
    assert f'<tr data-send="{second}">' in page
    assert f'href="/dashboard/sends/{first}"' in page
    assert 'href="/dashboard/sends"' in page  # the nav link
    found = (await client.get("/dashboard/sends", params={"text": "学习"})).text
    assert f'data-send="{second}"' in found
    assert f'data-send="{first}"' not in found
    failed = (await client.get("/dashboard/sends", params={"having": "failed"})).text
    assert f'data-send="{first}"' in failed
    assert f'data-send="{second}"' not in failed
    for bad in ({"from": "2027-02-30"}, {"state": "lost"}, {"text": "x" * 101}):
        resp = await client.get("/dashboard/sends", params=bad)
        assert resp.status_code in (400, 422), bad
        assert "<html" in resp.text


async def test_a_send_page_shows_reasons_replies_and_who_has_not_replied(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings, county: str
) -> None:
    send_id = await _asked(client, county)
    await _outcomes(conn, send_id)
    await _reply(conn, settings, PHONES[0], "1")
    await sign_in(client, county)
    page = (await client.get(f"/dashboard/sends/{send_id}")).text
    assert "号码无效" in page  # isv.MOBILE_NUMBER_ILLEGAL
    assert "未送达" in page
    assert 'id="replies"' in page
    assert f'<tr data-send="{send_id}"><td>+86{PHONES[0]}</td><td class="body">1' in page
    waiting = page[page.index('id="waiting"') :]
    assert f"+86{PHONES[1]}" in waiting
    assert f"+86{PHONES[0]}" not in waiting.split("</p>")[0]
    assert "提醒未回复的人" in page
    assert "重发失败的" in page


async def test_the_remind_form_sends_once_and_only_from_this_site(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings, county: str
) -> None:
    send_id = await _asked(client, county)
    await _outcomes(conn, send_id)
    await _reply(conn, settings, PHONES[0], "1")
    await sign_in(client, county)
    form = {"token": "t" * 24, "body": "提醒：请回复1确认"}
    cross = await client.post(f"/dashboard/sends/{send_id}/remind", data=form)
    assert cross.status_code == 403
    first = await client.post(f"/dashboard/sends/{send_id}/remind", data=form, headers=SAME_ORIGIN)
    again = await client.post(f"/dashboard/sends/{send_id}/remind", data=form, headers=SAME_ORIGIN)
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"]
    rows = await conn.fetch("SELECT id, follow_kind, body FROM sends WHERE follows = $1", send_id)
    assert [(r["follow_kind"], r["body"]) for r in rows] == [("remind", "提醒：请回复1确认")]
    assert first.headers["location"] == f"/dashboard/sends/{rows[0]['id']}?made=remind"
    phones = await conn.fetch("SELECT phone FROM messages WHERE send_id = $1", rows[0]["id"])
    assert sorted(r["phone"] for r in phones) == sorted("+86" + p for p in PHONES[1:])
    made = (await client.get(first.headers["location"])).text
    assert 'id="made"' in made
    assert f'href="/dashboard/sends/{send_id}"' in made
    # Resend: the failed and the undelivered, the text unchanged.
    resent = await client.post(
        f"/dashboard/sends/{send_id}/resend", data={"token": "r" * 24}, headers=SAME_ORIGIN
    )
    assert resent.status_code == 303
    body = await conn.fetchval(
        "SELECT body FROM sends WHERE follows = $1 AND follow_kind = 'resend'", send_id
    )
    assert body == "周五开会，回复1确认"


async def test_read_only_keys_see_no_forms_and_cannot_post(
    client: httpx.AsyncClient, conn: asyncpg.Connection, county: str, seeded: Seeded
) -> None:
    send_id = await _asked(client, county)
    await sign_in(client, seeded.province_key)  # messages:read, not messages:write
    page = (await client.get(f"/dashboard/sends/{send_id}")).text
    assert "重发失败的" not in page
    resp = await client.post(
        f"/dashboard/sends/{send_id}/resend", data={"token": "r" * 24}, headers=SAME_ORIGIN
    )
    assert resp.status_code == 403
    await sign_in(client, seeded.reader_key)  # dashboard:read alone
    for path in ("/dashboard/sends", f"/dashboard/sends/{send_id}/results.xlsx"):
        assert (await client.get(path)).status_code == 403, path


async def test_a_sibling_county_gets_404_on_every_page(
    client: httpx.AsyncClient, conn: asyncpg.Connection, county: str, seeded: Seeded
) -> None:
    send_id = await _asked(client, county)
    await _outcomes(conn, send_id)
    await sign_in(client, await make_key(conn, "510105"))
    for path in (f"/dashboard/sends/{send_id}", f"/dashboard/sends/{send_id}/results.xlsx"):
        resp = await client.get(path)
        assert resp.status_code == 404, path
    for kind in ("remind", "resend"):
        resp = await client.post(
            f"/dashboard/sends/{send_id}/{kind}", data={"token": "h" * 24}, headers=SAME_ORIGIN
        )
        assert resp.status_code == 404, kind
    listed = (await client.get("/dashboard/sends", params={"subtree": "1"})).text
    assert f'data-send="{send_id}"' not in listed
    assert await conn.fetchval("SELECT count(*) FROM sends WHERE follows IS NOT NULL") == 0


async def test_the_results_file_has_reasons_replies_and_inert_cells(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings, county: str
) -> None:
    send_id = await _asked(client, county, '=HYPERLINK("http://x") 周五开会')
    await _outcomes(conn, send_id)
    await _reply(conn, settings, PHONES[0], "=1+1")
    await sign_in(client, county)
    resp = await client.get(f"/dashboard/sends/{send_id}/results.xlsx")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/vnd.openxmlformats")
    book = load_workbook(io.BytesIO(resp.content))
    assert book.sheetnames == ["发送", "收件人"]
    rows = list(book["收件人"].iter_rows(values_only=True))
    assert rows[0][:6] == ("号码", "运营商", "状态", "原因", "已回复", "回复内容")
    by_phone = {r[0]: r for r in rows[1:]}
    assert by_phone[f"+86{PHONES[0]}"][2:6] == ("已送达", None, "是", "=1+1")
    assert by_phone[f"+86{PHONES[1]}"][2:5] == ("失败", "号码无效", "否")
    assert by_phone[f"+86{PHONES[2]}"][2:5] == ("未送达", "未送达", "否")
    reply_cell = next(
        row[5] for row in book["收件人"].iter_rows(min_row=2) if row[0].value == f"+86{PHONES[0]}"
    )
    assert reply_cell.data_type == "s"  # text, never a formula
    assert reply_cell.value == "=1+1"
    head = {r[0]: r[1] for r in book["发送"].iter_rows(min_row=2, values_only=True)}
    assert head["发送编号"] == send_id
    assert head["要求回复"] == "是"
    assert str(head["内容"]).endswith('=HYPERLINK("http://x") 周五开会')
