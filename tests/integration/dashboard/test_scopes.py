"""The dashboard shows only what the key may see, exactly as the API: counts and quota to every
dashboard key; bodies, phone numbers, replies and opt-outs with messages:read; money with
billing:read; the quota form with quota:write. Hidden data is not in the HTML at all."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import asyncpg
import httpx
import pytest

from hub.calendar import period_text
from hub.dashboard import service
from tenants import service as tenants
from tenants.scopes import ALL_SCOPES, READ_SCOPE, Data, Scope
from tests.factories import bearer, make_key
from tests.integration.dashboard.conftest import SAME_ORIGIN, Seeded, add_usage, sign_in

COUNTY_BODY = "明天上午九点到县委三楼开会"
PROVINCE_BODY = "全省组织工作会议通知"
COUNTY_PHONES = ("13800138000", "13900139000")
PROVINCE_PHONE = "13600136000"
REPLY_PHONE = "13700137000"
REPLY_TEXT = "收到准时参加"
OPTED_OUT_PHONE = "13500135000"
CLOSED = date(2026, 1, 1)


@dataclass(frozen=True)
class Activity:
    county_send: int
    province_send: int


async def _send(
    client: httpx.AsyncClient, key: str, to: list[str], body: str, idempotency: str
) -> int:
    sent = await client.post(
        "/v1/messages",
        json={"to": to, "body": body},
        headers={**bearer(key), "Idempotency-Key": idempotency},
    )
    assert sent.status_code == 202, sent.text
    send_id: int = sent.json()["id"]
    return send_id


async def _activity(
    client: httpx.AsyncClient, conn: asyncpg.Connection, seeded: Seeded
) -> Activity:
    """Sends with bodies and phones, a reply, an opt-out, and a closed month with a statement."""
    county_key = await make_key(conn, "510104")
    county_send = await _send(client, county_key, list(COUNTY_PHONES), COUNTY_BODY, "s-1")
    province_send = await _send(client, seeded.api_key, [PROVINCE_PHONE], PROVINCE_BODY, "s-2")
    for code in ("510104", "510000"):
        tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE code = $1", code)
        await conn.execute(
            "INSERT INTO inbound (tenant_id, gateway, reference, phone, address, text, opt_out) "
            "VALUES ($1, 'outbox', $2, $3, '10690000000001', $4, false)",
            tenant_id,
            f"r-{code}",
            f"+86{REPLY_PHONE}",
            REPLY_TEXT,
        )
        await conn.execute(
            "INSERT INTO opt_outs (tenant_id, phone) VALUES ($1, $2)",
            tenant_id,
            f"+86{OPTED_OUT_PHONE}",
        )
    await add_usage(conn, "510104", date(2026, 1, 5), "中国移动", 100)
    closed = await client.post(
        f"/v1/billing/{period_text(CLOSED)}/close", headers=bearer(await make_key(conn, "000000"))
    )
    assert closed.status_code == 200, closed.text
    return Activity(county_send, province_send)


def _pages(activity: Activity, period: date) -> list[str]:
    """Every page and fragment a signed-in key can ask for."""
    month = period_text(period)
    return [
        "/dashboard/t/510000",
        f"/dashboard/t/510000?period={month}&sort=cost&order=desc",
        "/dashboard/t/510100",
        "/dashboard/t/510104",
        "/dashboard/t/510000/activity",
        "/dashboard/t/510104/activity",
        f"/dashboard/sends/{activity.county_send}",
        f"/dashboard/sends/{activity.province_send}",
        "/dashboard/billing",
        f"/dashboard/billing?period={period_text(CLOSED)}",
        f"/dashboard/billing/{period_text(CLOSED)}/statement.csv",
        f"/dashboard/billing/{period_text(CLOSED)}/statement.xlsx",
    ]


SECRETS_OF_MESSAGES = (COUNTY_BODY, PROVINCE_BODY, *COUNTY_PHONES, PROVINCE_PHONE)
SECRETS_OF_REPLIES = (REPLY_PHONE, REPLY_TEXT, OPTED_OUT_PHONE)
MONEY_MARKS = ("¥", 'id="kpi-cost"', 'id="kpi-list"', 'id="kpi-savings"', 'id="kpi-dedup"')


async def test_a_dashboard_read_key_sees_no_phone_body_reply_or_money_anywhere(
    client: httpx.AsyncClient, seeded: Seeded, conn: asyncpg.Connection
) -> None:
    activity = await _activity(client, conn, seeded)
    await sign_in(client, seeded.reader_key)
    for path in _pages(activity, seeded.period):
        response = await client.get(path)
        # Money's pages and downloads, and a send's page, refuse the key outright.
        refused = "/billing" in path or "/sends/" in path
        assert response.status_code == (403 if refused else 200), (path, response.status_code)
        for secret in (*SECRETS_OF_MESSAGES, *SECRETS_OF_REPLIES, *MONEY_MARKS):
            assert secret not in response.text, (path, secret)
    # What it may see: counts and quota, the children's limits without a form.
    overview = (await client.get("/dashboard/t/510000")).text
    assert 'id="kpi-segments" data-value="594"' in overview
    assert 'id="kpi-quota"' in overview
    assert 'id="kpi-dedup-segments"' in overview
    page = (await client.get("/dashboard/t/510000/activity")).text
    assert 'id="child-limits"' in page
    assert '<form method="post" action="/dashboard/t/510000/quota"' not in page
    for hidden in ("sends-hidden", "replies-hidden", "opt-outs-hidden"):
        assert f'id="{hidden}"' in page
    assert "messages:read" in page


async def test_a_dashboard_read_key_cannot_learn_spend_by_sorting(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    await sign_in(client, seeded.reader_key)
    by_code = (await client.get("/dashboard/t/510000?sort=code&order=desc")).text
    by_cost = (await client.get("/dashboard/t/510000?sort=cost&order=desc")).text
    order = re.findall(r'<tr data-code="(\d+)"', by_code)
    assert re.findall(r'<tr data-code="(\d+)"', by_cost) == order
    assert 'data-sort="cost"' not in by_cost


MATRIX = {
    "dashboard:read": frozenset({Scope.DASHBOARD_READ}),
    "+messages:read": frozenset({Scope.DASHBOARD_READ, Scope.MESSAGES_READ}),
    "+billing:read": frozenset({Scope.DASHBOARD_READ, Scope.BILLING_READ}),
    "+quota:write": frozenset({Scope.DASHBOARD_READ, Scope.QUOTA_WRITE}),
    "all": ALL_SCOPES,
}


@pytest.mark.parametrize("name", list(MATRIX))
async def test_each_scope_shows_its_own_data(
    client: httpx.AsyncClient, seeded: Seeded, conn: asyncpg.Connection, name: str
) -> None:
    scopes = MATRIX[name]
    activity = await _activity(client, conn, seeded)
    await sign_in(client, await make_key(conn, "510000", scopes))
    messages, money = Scope.MESSAGES_READ in scopes, Scope.BILLING_READ in scopes
    overview = (await client.get("/dashboard/t/510000")).text
    county = (await client.get("/dashboard/t/510104/activity")).text
    own = (await client.get("/dashboard/t/510000/activity")).text
    recipients = await client.get(f"/dashboard/sends/{activity.county_send}")
    billing = await client.get(f"/dashboard/billing?period={period_text(CLOSED)}")
    download = await client.get(f"/dashboard/billing/{period_text(CLOSED)}/statement.csv")

    # Counts and quota: every key.
    assert 'id="kpi-segments"' in overview
    assert 'id="kpi-quota"' in overview
    assert 'id="child-limits"' in own
    # Bodies and phone numbers: messages:read.
    assert (COUNTY_BODY in county) is messages
    assert (f"+86{COUNTY_PHONES[0]}" in recipients.text) is messages
    assert recipients.status_code == (200 if messages else 403)
    assert ('id="sends-hidden"' in county) is not messages
    # Replies and opt-outs: messages:read.
    assert (REPLY_TEXT in county) is messages
    assert (OPTED_OUT_PHONE in county) is messages
    # Money: billing:read, in every place it appears.
    assert ('id="kpi-cost"' in overview) is money
    assert ("¥" in overview) is money
    assert ('data-sort="cost"' in overview) is money
    assert ('href="/dashboard/billing"' in overview) is money
    assert billing.status_code == (200 if money else 403)
    assert ('id="statement-total"' in billing.text) is money
    assert download.status_code == (200 if money else 403)
    # The quota form: quota:write.
    assert ('action="/dashboard/t/510000/quota"' in own) is (Scope.QUOTA_WRITE in scopes)


# Per kind of data: an API route that serves it and a dashboard page that shows it, with the
# mark of it being shown there.
API_AND_PAGE = {
    Data.MESSAGES: ("/v1/messages/{send}", "/dashboard/t/510104/activity", COUNTY_BODY),
    Data.REPLIES: ("/v1/inbound?subtree=true", "/dashboard/t/510104/activity", REPLY_TEXT),
    Data.MONEY: ("/v1/usage?period={period}&subtree=true", "/dashboard/t/510000", "kpi-cost"),
    Data.OPERATIONS: ("/v1/tenants/510000/operations", "/dashboard/t/510000", "nav-operations"),
}


@pytest.mark.parametrize("kind", list(Data))
async def test_the_api_and_the_dashboard_agree_on_every_kind_of_data(
    client: httpx.AsyncClient, seeded: Seeded, conn: asyncpg.Connection, kind: Data
) -> None:
    """One table (READ_SCOPE) for both: without its scope a kind of data is refused by the API
    and absent from the dashboard; with it, both show it."""
    activity = await _activity(client, conn, seeded)
    api_path, page_path, mark = API_AND_PAGE[kind]
    api_path = api_path.format(send=activity.county_send, period=period_text(seeded.period))
    for holds in (False, True):
        scopes = ALL_SCOPES if holds else ALL_SCOPES - {READ_SCOPE[kind]}
        key = await make_key(conn, "510000", scopes)
        api = await client.get(api_path, headers=bearer(key))
        assert api.status_code == (200 if holds else 403), (kind, holds, api.text)
        client.cookies.clear()
        await sign_in(client, key)
        assert (mark in (await client.get(page_path)).text) is holds, (kind, holds)


async def test_data_a_key_may_not_see_is_not_even_read(
    client: httpx.AsyncClient, seeded: Seeded, conn: asyncpg.Connection
) -> None:
    await _activity(client, conn, seeded)
    reader = await tenants.authenticate(conn, seeded.reader_key)
    everything = await tenants.authenticate(conn, seeded.api_key)
    assert reader is not None
    assert everything is not None
    for who, sees in ((reader, False), (everything, True)):
        view = await service.overview(conn, who, "510000", seeded.period, list_price=60_000)
        assert (view.money is not None) is sees
        assert all((row.money is not None) is sees for row in [view.own, *view.children])
        assert view.counts.segments == 594
        page = await service.tenant_page(conn, who, "510104", seeded.period)
        for listed in (page.sends, page.replies, page.opt_outs, page.opt_out_count):
            assert (listed is not None) is sees


async def test_a_county_session_never_shows_another_countys_data(
    client: httpx.AsyncClient, seeded: Seeded, conn: asyncpg.Connection
) -> None:
    activity = await _activity(client, conn, seeded)
    sibling = await make_key(conn, "510105")  # 青羊区, beside 锦江区
    await sign_in(client, sibling)
    for path in [
        f"/dashboard/sends/{activity.county_send}",
        f"/dashboard/sends/{activity.province_send}",
        "/dashboard/t/510104/activity",
        "/dashboard/t/510104",
        "/dashboard/t/510100",
        "/dashboard/t/510000/activity",
    ]:
        response = await client.get(path)
        assert response.status_code == 404, path
        for secret in (*SECRETS_OF_MESSAGES, *SECRETS_OF_REPLIES, "锦江区", "成都市"):
            assert secret not in response.text, (path, secret)
    form = {"child": "510104001", "period": period_text(seeded.period), "limit": "1"}
    refused = await client.post("/dashboard/t/510104/quota", data=form, headers=SAME_ORIGIN)
    assert refused.status_code == 404
    own = (await client.get("/dashboard/t/510105/activity")).text
    for secret in (*SECRETS_OF_MESSAGES, *SECRETS_OF_REPLIES):
        assert secret not in own
