"""The dashboard in process: sessions, the numbers against the JSON API, forms, errors."""

from __future__ import annotations

import re
from datetime import date

import asyncpg
import httpx
import pytest

from hub.calendar import days_in, period_text
from hub.dashboard.controllers import WORDS
from hub.quota import service as quota
from tenants.service import get_by_code
from tests.factories import bearer, make_key
from tests.integration.dashboard.conftest import (
    SAME_ORIGIN,
    Seeded,
    add_usage,
    sign_in,
)


def value(html: str, element_id: str, attribute: str = "data-value") -> int:
    match = re.search(rf'id="{element_id}"[^>]*?{attribute}="(-?\d+)"', html)
    assert match, f"no {element_id}[{attribute}] on the page"
    return int(match[1])


def row(html: str, code: str) -> str:
    match = re.search(rf'<tr data-code="{code}".*?</tr>', html, re.S)
    assert match, f"no row for {code}"
    return match[0]


async def test_sign_in_sets_a_strict_httponly_cookie(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    page = await client.get("/dashboard/login")
    assert page.status_code == 200
    assert '<html lang="zh-CN">' in page.text
    assert "登录" in page.text

    response = await sign_in(client, seeded.province_key)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Path=/dashboard" in cookie
    assert seeded.province_key not in cookie  # the secret never travels in the cookie
    home = await client.get("/dashboard/", follow_redirects=True)
    assert home.status_code == 200
    assert 'data-code="510000"' in home.text


@pytest.mark.parametrize("which", ["garbage", "no_dashboard_key"])
async def test_sign_in_refuses_bad_keys_inline(
    client: httpx.AsyncClient, seeded: Seeded, which: str
) -> None:
    key = "hub_nonsense" if which == "garbage" else seeded.no_dashboard_key
    response = await sign_in(client, key)
    assert response.status_code == 401
    assert 'id="login-error"' in response.text
    assert "set-cookie" not in response.headers


async def test_without_a_session_pages_send_the_browser_to_sign_in(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    for path in ["/dashboard/", "/dashboard/t/510000", "/dashboard/billing"]:
        response = await client.get(path)
        assert response.status_code in (302, 303, 307), path
        assert response.headers["location"].startswith("/dashboard/login")
    for garbled in ["0123456789ab.1.deadbeef", "", "x" * 4000]:
        client.cookies.set("hub_dashboard", garbled, path="/dashboard")
        assert (await client.get("/dashboard/t/510000")).status_code in (302, 303, 307)
    # A control character in any header (the cookie too) is refused before anything reads it.
    client.cookies.set("hub_dashboard", "a\x00b", path="/dashboard")
    refused = await client.get("/dashboard/t/510000")
    assert refused.status_code == 422
    assert "<html" in refused.text


async def test_a_forged_or_revoked_session_stops_working(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    await sign_in(client, seeded.province_key)
    genuine = client.cookies["hub_dashboard"]
    assert (await client.get("/dashboard/t/510000")).status_code == 200
    # A token of the right shape that no session holds: one changed character.
    forged = genuine[:-1] + ("A" if genuine[-1] != "A" else "B")
    client.cookies.set("hub_dashboard", forged, path="/dashboard")
    assert (await client.get("/dashboard/t/510000")).status_code in (302, 303, 307)
    client.cookies.set("hub_dashboard", genuine, path="/dashboard")
    prefix = seeded.province_key.split("_")[1]
    revoked = await client.delete(f"/v1/keys/{prefix}", headers=bearer(seeded.api_key))
    assert revoked.status_code == 204
    assert (await client.get("/dashboard/t/510000")).status_code in (302, 303, 307)


async def test_sign_out_clears_the_cookie(signed_in: httpx.AsyncClient) -> None:
    response = await signed_in.post("/dashboard/logout", headers=SAME_ORIGIN)
    assert response.status_code == 303
    assert (
        'hub_dashboard=""' in response.headers["set-cookie"]
        or "Max-Age=0" in (response.headers["set-cookie"])
    )
    signed_in.cookies.clear()
    assert (await signed_in.get("/dashboard/t/510000")).status_code in (302, 303, 307)


async def test_forms_from_another_origin_are_refused(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    response = await client.post(
        "/dashboard/login", data={"key": seeded.province_key}, headers={"Origin": "http://evil"}
    )
    assert response.status_code == 403
    assert "text/html" in response.headers["content-type"]
    response = await client.post("/dashboard/login", data={"key": seeded.province_key})
    assert response.status_code == 403


async def test_pages_allow_only_the_hubs_own_scripts_and_no_framing(
    signed_in: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    for response in (
        await signed_in.get("/dashboard/t/510000"),
        await client.get("/dashboard/login"),
        await signed_in.get("/dashboard/t/999999"),  # an error page too
    ):
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_overview_numbers_equal_the_api(signed_in: httpx.AsyncClient, seeded: Seeded) -> None:
    period = period_text(seeded.period)
    page = (await signed_in.get(f"/dashboard/t/510000?period={period}")).text
    usage = (
        await signed_in.get(
            f"/v1/usage?period={period}&subtree=true", headers=bearer(seeded.api_key)
        )
    ).json()
    items = usage["items"]
    assert value(page, "kpi-segments") == sum(i["segments"] for i in items) == 594
    assert value(page, "kpi-cost") == sum(i["cost_micros"] for i in items)
    assert value(page, "kpi-list") == sum(i["list_price_micros"] for i in items)
    assert value(page, "kpi-savings") == sum(i["savings_micros"] for i in items)
    assert value(page, "kpi-dedup") == sum(i["dedup_savings_micros"] for i in items)
    assert value(page, "kpi-dedup-segments") == sum(i["dedup_segments"] for i in items)
    quota = (
        await signed_in.get(f"/v1/tenants/510000/quota/{period}", headers=bearer(seeded.api_key))
    ).json()
    assert value(page, "kpi-quota", "data-limit") == quota["limit"] == 100_000
    assert value(page, "kpi-quota", "data-used") == quota["subtree"]["used"] == 1350
    # Delivery: 552 of 594 segments with a final receipt were delivered (920 with 999 of 贵州).
    assert value(page, "kpi-delivery", "data-delivered") == 552
    assert value(page, "kpi-delivery", "data-undelivered") == 42
    assert "92.9%" in page
    # Children: 成都市's spend is its whole subtree's; its quota bar is its subtree's use.
    chengdu = row(page, "510100")
    city = (
        await signed_in.get(f"/v1/tenants/510100/quota/{period}", headers=bearer(seeded.api_key))
    ).json()
    assert f'data-used="{city["subtree"]["used"]}"' in chengdu
    assert f'data-limit="{city["limit"]}"' in chengdu
    chengdu_codes = {"510100", "510104", "510105", "510104001"}
    spend = sum(i["cost_micros"] for i in items if i["tenant"] in chengdu_codes)
    assert f'data-value="{spend}"' in chengdu
    # The chart: one bar per day of the month, the first day's total on it.
    assert page.count("<rect ") == days_in(seeded.period)
    assert re.search(rf'data-day="{seeded.period.isoformat()}" data-segments="340"', page)


async def test_drill_down_breadcrumbs_and_alerts(
    signed_in: httpx.AsyncClient, seeded: Seeded
) -> None:
    page = (await signed_in.get("/dashboard/t/510100")).text
    assert re.search(
        r'<a href="/dashboard/t/510000\?period=[0-9-]+" data-code="510000">四川省</a>', page
    )
    assert '<strong data-code="510100">成都市</strong>' in page
    # 锦江区 holds 850 of 1,000 (85 %), 青羊区 500 of 500: highlighted rows and alerts.
    assert 'class="warn"' in row(page, "510104")
    assert 'class="full"' in row(page, "510105")
    assert re.search(r'class="alert full" data-code="510105" data-threshold="100"', page)
    assert re.search(r'class="alert warn" data-code="510104" data-threshold="80"', page)
    # The province sees its subtree's alerts too.
    province = (await signed_in.get("/dashboard/t/510000")).text
    assert 'data-code="510105" data-threshold="100"' in province


async def test_children_sort(signed_in: httpx.AsyncClient, seeded: Seeded) -> None:
    ascending = (await signed_in.get("/dashboard/t/510000?sort=segments&order=asc")).text
    descending = (await signed_in.get("/dashboard/t/510000?sort=segments&order=desc")).text
    assert ascending.index('data-code="510300"') < ascending.index('<tr data-code="510100"')
    assert descending.index('<tr data-code="510100"') < descending.index('<tr data-code="510300"')


async def test_other_subtrees_are_not_found_as_html(
    signed_in: httpx.AsyncClient, seeded: Seeded
) -> None:
    for path in ["/dashboard/t/520000", "/dashboard/t/000000", "/dashboard/t/nope/activity"]:
        response = await signed_in.get(path)
        assert response.status_code == 404, path
        assert "text/html" in response.headers["content-type"]
        assert "未找到" in response.text
    bad = await signed_in.get("/dashboard/t/510000?period=2026-13")
    assert bad.status_code == 422
    assert "text/html" in bad.headers["content-type"]
    # The JSON API keeps answering JSON.
    api = await signed_in.get("/v1/tenants/520000")
    assert api.status_code == 401
    assert api.json()["error"] == "unauthorized"


async def test_allocate_quota_from_the_form(signed_in: httpx.AsyncClient, seeded: Seeded) -> None:
    period = period_text(seeded.period)
    form = {"child": "510300", "period": period, "limit": "7,000"}
    response = await signed_in.post("/dashboard/t/510000/quota", data=form, headers=SAME_ORIGIN)
    assert response.status_code == 303
    page = (await signed_in.get(response.headers["location"])).text
    assert 'id="allocate-saved"' in page
    assert 'data-value="7000"' in row(page, "510300")
    assert f'data-cause="limit:510300:{period}"' in page  # the parent's allocate entry
    assert (
        await signed_in.get(f"/v1/tenants/510300/quota/{period}", headers=bearer(seeded.api_key))
    ).json()["limit"] == 7000


async def test_tenant_page_children_use_what_the_overview_bars_use(
    signed_in: httpx.AsyncClient, seeded: Seeded, conn: asyncpg.Connection
) -> None:
    # 锦江区 holds 30 more under the strict 成都市, which has sent nothing itself.
    county = await get_by_code(conn, "510104")
    assert county is not None
    await quota.reserve(conn, county, 30, "send:1", "t", ttl_seconds=3600, period=seeded.period)
    period = period_text(seeded.period)
    listed = (
        await signed_in.get(f"/v1/tenants/510000/quota/{period}", headers=bearer(seeded.api_key))
    ).json()
    overview = (await signed_in.get(f"/dashboard/t/510000?period={period}")).text
    page = (await signed_in.get(f"/dashboard/t/510000/activity?period={period}")).text
    for child in listed["children"]:
        code, subtree = child["code"], child["subtree"]
        bar = re.search(
            r'data-used="(\d+)" data-reserved="(\d+)" data-limit="(\d+)"', row(overview, code)
        )
        assert bar, code
        used, limit = re.findall(r'<td class="num[^"]*"[^>]*>([0-9,]+)</td>', row(page, code))
        assert int(used.replace(",", "")) == int(bar[1]) + int(bar[2]), code
        assert int(bar[1]) + int(bar[2]) == subtree["used"] + subtree["reserved"], code
        assert int(limit.replace(",", "")) == int(bar[3]) == child["limit"], code
    # 成都市's line: its counties' 1,350 posted and 30 held, not its own account's nothing.
    assert "1,380" in row(page, "510100")


@pytest.mark.parametrize(
    ("child", "limit", "status", "says"),
    [
        ("510300", "-5", 422, "整数"),
        ("510300", "lots", 422, "整数"),
        ("510300", "99999999", 409, "510000"),  # more than the province has left to grant
        ("510104", "10", 404, "没有下级"),  # a grandchild, not a child
    ],
)
async def test_allocate_errors_show_inline(
    signed_in: httpx.AsyncClient, seeded: Seeded, child: str, limit: str, status: int, says: str
) -> None:
    period = period_text(seeded.period)
    form = {"child": child, "period": period, "limit": limit}
    response = await signed_in.post("/dashboard/t/510000/quota", data=form, headers=SAME_ORIGIN)
    assert response.status_code == status
    error = re.search(r'id="allocate-error">([^<]*)<', response.text)
    assert error
    assert says in error[1]
    assert 'data-value="5000"' in row(response.text, "510300")  # nothing changed


async def test_allocate_needs_quota_write(client: httpx.AsyncClient, seeded: Seeded) -> None:
    await sign_in(client, seeded.reader_key)
    page = (await client.get("/dashboard/t/510000/activity")).text
    assert 'id="no-quota-scope"' in page
    form = {"child": "510300", "period": period_text(seeded.period), "limit": "1"}
    response = await client.post("/dashboard/t/510000/quota", data=form, headers=SAME_ORIGIN)
    assert response.status_code == 403
    assert "quota:write" in response.text


async def test_a_suspended_subtree_reads_but_cannot_allocate(
    client: httpx.AsyncClient, seeded: Seeded, conn: asyncpg.Connection
) -> None:
    root = await make_key(conn, "000000")
    suspended = await client.patch(
        "/v1/tenants/510000", json={"status": "suspended"}, headers=bearer(root)
    )
    assert suspended.status_code == 200
    assert (await sign_in(client, seeded.province_key)).status_code == 303
    overview = await client.get("/dashboard/t/510000")
    assert overview.status_code == 200
    assert 'id="suspended"' in overview.text
    page = (await client.get("/dashboard/t/510000/activity")).text
    assert 'id="suspended-read-only"' in page
    assert "<input" not in row(page, "510300")  # no form to allocate with
    form = {"child": "510300", "period": period_text(seeded.period), "limit": "1"}
    response = await client.post("/dashboard/t/510000/quota", data=form, headers=SAME_ORIGIN)
    assert response.status_code == 403
    error = re.search(r'id="allocate-error">([^<]*)<', response.text)
    assert error
    assert "tenant 510000 is suspended" in error[1]
    assert 'data-value="5000"' in row(response.text, "510300")  # nothing changed


async def test_tenant_page_lists_sends_replies_and_opt_outs(
    signed_in: httpx.AsyncClient, seeded: Seeded, conn: asyncpg.Connection
) -> None:
    county_key = await _county_key(conn)
    sent = await signed_in.post(
        "/v1/messages",
        json={"to": ["13800138000", "13900139000"], "body": "明天上午九点开会"},
        headers={**bearer(county_key), "Idempotency-Key": "dash-1"},
    )
    assert sent.status_code == 202, sent.text
    send_id = sent.json()["id"]
    tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    await conn.execute(
        "INSERT INTO inbound (tenant_id, gateway, reference, phone, address, text, opt_out) "
        "VALUES ($1, 'outbox', 'r1', '+8613800138000', '10690000000001', '退订', true)",
        tenant_id,
    )
    await conn.execute(
        "INSERT INTO opt_outs (tenant_id, phone) VALUES ($1, '+8613800138000')", tenant_id
    )
    page = (await signed_in.get("/dashboard/t/510104/activity")).text
    assert f'<tr data-send="{send_id}">' in page
    api = (await signed_in.get(f"/v1/messages/{send_id}", headers=bearer(seeded.api_key))).json()
    for status, n in api["statuses"].items():
        assert f'data-status="{status}">{WORDS[status]} {n}<' in page  # e.g. 待发送 2
    assert f'href="/dashboard/sends/{send_id}"' in page
    assert "退订" in page
    assert "+8613800138000" in page
    recipients = (await signed_in.get(f"/dashboard/sends/{send_id}")).text
    assert "+8613900139000" in recipients
    assert "明天上午九点开会" in recipients


async def test_statements_need_billing_read(client: httpx.AsyncClient, seeded: Seeded) -> None:
    await sign_in(client, seeded.reader_key)  # dashboard:read alone
    overview = (await client.get("/dashboard/t/510000")).text
    assert 'href="/dashboard/billing"' not in overview
    for path in ("/dashboard/billing", "/dashboard/billing/2026-01/statement.csv"):
        response = await client.get(path)
        assert response.status_code == 403
        assert "billing:read" in response.text


async def _county_key(conn: asyncpg.Connection) -> str:
    from tests.factories import make_key

    return await make_key(conn, "510104")


async def test_billing_page_before_and_after_the_close(
    signed_in: httpx.AsyncClient, seeded: Seeded, conn: asyncpg.Connection
) -> None:
    month = date(2026, 1, 1)
    page = (await signed_in.get("/dashboard/billing?period=2026-01")).text
    assert 'id="not-closed"' in page
    await add_usage(conn, "510104", date(2026, 1, 5), "中国移动", 100)
    await add_usage(conn, "510000", date(2026, 1, 6), "中国移动", 30)
    root_key = await _root_key(conn)
    closed = await signed_in.post("/v1/billing/2026-01/close", headers=bearer(root_key))
    assert closed.status_code == 200, closed.text
    page = (await signed_in.get(f"/dashboard/billing?period={month:%Y-%m}")).text
    statement = (
        await signed_in.get("/v1/billing/2026-01/statement", headers=bearer(seeded.api_key))
    ).json()
    total = re.search(r'<tr id="statement-total">.*?</tr>', page, re.S)
    assert total
    assert f'data-value="{statement["totals"]["cost_micros"]}"' in total[0]
    assert f'data-value="{statement["totals"]["segments"]}"' in total[0]
    for level in statement["levels"]:
        assert f'<tr data-level="{level["level"]}">' in page
    assert 'href="/dashboard/billing/2026-01/statement.csv"' in page
    assert 'href="/dashboard/billing/2026-01/statement.xlsx"' in page


async def _root_key(conn: asyncpg.Connection) -> str:
    from tests.factories import make_key

    return await make_key(conn, "000000")


async def test_static_files_are_served_by_the_hub(client: httpx.AsyncClient) -> None:
    css = await client.get("/dashboard/static/dashboard.css")
    js = await client.get("/dashboard/static/dashboard.js")
    assert css.status_code == js.status_code == 200
    assert len(css.content) + len(js.content) < 20_000  # small and hand-written
