"""The dashboard in a real browser: the system Chromium driven by Playwright, against the hub
served by uvicorn on a free port (a committed database, as delivery's peer tests use).

Screenshots go to test-artifacts/ (gitignored). Chromium comes from apt (`apt-get install -y
chromium`), never from `playwright install`; without it these tests skip, or fail under
HUB_TEST_REQUIRE_PEERS=1 (CI).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import asyncpg
import httpx
import msgspec
import openpyxl
import pytest
from arq.connections import ArqRedis
from playwright.async_api import Browser, Page, Route, async_playwright

from hub.calendar import days_in, period_text
from hub.dashboard.controllers import number, yuan
from hub.db import ROOT
from hub.settings import Settings
from tests.factories import bearer, make_key
from tests.integration.dashboard.conftest import Seeded, add_usage, seed
from tests.integration.delivery.conftest import free_port, serving_hub
from tests.peers import require_binary

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.slow


class Hub(msgspec.Struct, frozen=True):
    url: str
    seeded: Seeded


@pytest.fixture
async def hub(settings: Settings, fresh_db: str, redis: ArqRedis) -> AsyncIterator[Hub]:
    """The seeded tree, committed, and the hub serving it on a real port."""
    conn = await asyncpg.connect(fresh_db)
    try:
        seeded = await seed(conn)
    finally:
        await conn.close()
    live = msgspec.structs.replace(settings, db=msgspec.structs.replace(settings.db, dsn=fresh_db))
    async with serving_hub(live, redis, free_port()) as url:
        yield Hub(url=url, seeded=seeded)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    require_binary(CHROMIUM, "chromium")
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def sign_in(page: Page, url: str, key: str) -> None:
    await page.goto(f"{url}/dashboard/")
    assert "/dashboard/login" in page.url
    await page.click("#key-sign-in summary")  # people sign in above; keys fold away below
    await page.fill("#key", key)
    await page.click("#sign-in-key")
    await page.wait_for_url("**/dashboard/t/510000")


async def data(page: Page, selector: str, attribute: str = "data-value") -> int:
    found = await page.get_attribute(selector, attribute)
    assert found is not None, f"{selector}[{attribute}]"
    return int(found)


async def api(url: str, path: str, key: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get(path, headers=bearer(key))
        response.raise_for_status()
        answer: dict[str, object] = response.json()
        return answer


# 02:00 UTC on 16 March 2027: 10:00 in Beijing (the tests' pinned clock).
KNOWN = datetime(2027, 3, 16, 2, 0, tzinfo=UTC)


async def test_times_read_in_beijing_whatever_the_browsers_zone(
    hub: Hub, browser: Browser, fresh_db: str
) -> None:
    """A send made at a known instant reads 10:00 (Beijing), not 02:00 (UTC), in a browser
    whose own zone is UTC or New York: the page, not the browser, says what time it was."""
    conn = await asyncpg.connect(fresh_db)
    try:
        county = await make_key(conn, "510104")
        async with httpx.AsyncClient(base_url=hub.url) as client:
            sent = await client.post(
                "/v1/messages",
                json={"to": ["13800138000"], "body": "今晚七点开会"},
                headers=bearer(county),
            )
        assert sent.status_code == 202, sent.text
        send_id = sent.json()["id"]
        await conn.execute("UPDATE sends SET created_at = $2 WHERE id = $1", send_id, KNOWN)
        await conn.execute("UPDATE messages SET updated_at = $2 WHERE send_id = $1", send_id, KNOWN)
    finally:
        await conn.close()
    for zone in ("UTC", "America/New_York"):
        context = await browser.new_context(locale="zh-CN", timezone_id=zone)
        page = await context.new_page()
        await sign_in(page, hub.url, hub.seeded.province_key)
        await page.goto(f"{hub.url}/dashboard/t/510104/activity")
        assert await page.inner_text(f'tr[data-send="{send_id}"] td >> nth=0') == "2027-03-16 10:00"
        assert "北京时间" in await page.inner_text("#time-zone")
        await page.goto(f"{hub.url}/dashboard/sends/{send_id}")
        assert "2027-03-16 10:00（北京时间）" in await page.inner_text("h1")
        assert await page.inner_text("#recipients tbody td >> nth=5") == "2027-03-16 10:00:00"
        await shot(page, f"times-{zone.replace('/', '-')}")
        await context.close()


async def test_overview_matches_the_api_drill_down_and_sign_out(hub: Hub, browser: Browser) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = await context.new_page()
    period = period_text(hub.seeded.period)
    await sign_in(page, hub.url, hub.seeded.province_key)
    assert await page.get_attribute("html", "lang") == "zh-CN"

    usage = await api(hub.url, f"/v1/usage?period={period}&subtree=true", hub.seeded.api_key)
    items = usage["items"]
    assert isinstance(items, list)
    expected = {
        "#kpi-segments": sum(i["segments"] for i in items),
        "#kpi-cost": sum(i["cost_micros"] for i in items),
        "#kpi-list": sum(i["list_price_micros"] for i in items),
        "#kpi-savings": sum(i["savings_micros"] for i in items),
        "#kpi-dedup": sum(i["dedup_savings_micros"] for i in items),
    }
    for selector, want in expected.items():
        assert await data(page, selector) == want, selector
        shown = await page.inner_text(selector)
        assert shown.startswith(number(want) if selector == "#kpi-segments" else yuan(want))
    quota = await api(hub.url, f"/v1/tenants/510000/quota/{period}", hub.seeded.api_key)
    subtree = quota["subtree"]
    assert isinstance(subtree, dict)
    assert await data(page, "#kpi-quota", "data-limit") == quota["limit"]
    assert await data(page, "#kpi-quota", "data-used") == subtree["used"]
    assert await page.locator("#daily-chart rect").count() == days_in(hub.seeded.period)
    await shot(page, "dashboard-overview")

    # Drill down into 成都市: its children, alerts for 锦江区 (85 %) and 青羊区 (100 %).
    await page.click('#children tr[data-code="510100"] a.drill')
    await page.wait_for_url("**/dashboard/t/510100?**")
    assert await page.inner_text("nav.crumbs strong") == "成都市"
    assert await page.locator('.alert.full[data-code="510105"]').is_visible()
    assert await page.locator('.alert.warn[data-code="510104"]').is_visible()
    city = await api(hub.url, f"/v1/tenants/510104/quota/{period}", hub.seeded.api_key)
    row = '#children tr[data-code="510104"] .quota-text'
    assert await data(page, row, "data-limit") == city["limit"]
    await shot(page, "dashboard-drill-down")
    # Sort by cost, highest first: 锦江区 spends the most in 成都市.
    await page.click('#children th a[data-sort="cost"]')
    await page.click('#children th a[data-sort="cost"]')
    await page.wait_for_url("**order=desc**")
    first = page.locator("#children tbody tr").first
    assert await first.get_attribute("data-code") == "510104"
    # …and back up through the breadcrumbs.
    await page.click('nav.crumbs a[data-code="510000"]')
    await page.wait_for_url("**/dashboard/t/510000?**")
    assert await page.inner_text("nav.crumbs strong") == "四川省"

    copied = await context.cookies()  # what a thief with the browser's cookie jar would hold
    assert [c["name"] for c in copied] == ["hub_dashboard"]
    assert copied[0]["httpOnly"]
    assert copied[0]["sameSite"] == "Strict"
    await page.click("#sign-out")
    await page.wait_for_url("**/dashboard/login")
    await page.goto(f"{hub.url}/dashboard/t/510000")
    assert "/dashboard/login" in page.url
    await context.close()

    # The copied cookie, replayed in another browser after the sign-out: refused.
    thief = await browser.new_context(locale="zh-CN")
    await thief.add_cookies(copied)  # type: ignore[arg-type]  # Cookie → SetCookieParam
    stolen = await thief.new_page()
    await stolen.goto(f"{hub.url}/dashboard/t/510000")
    assert "/dashboard/login" in stolen.url
    assert await stolen.locator("#kpi-segments").count() == 0
    await thief.close()


async def test_sign_out_everywhere_ends_the_other_browsers_sessions(
    hub: Hub, browser: Browser
) -> None:
    office = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    phone = await browser.new_context(viewport={"width": 375, "height": 812}, locale="zh-CN")
    desk, mobile = await office.new_page(), await phone.new_page()
    await sign_in(desk, hub.url, hub.seeded.province_key)
    await sign_in(mobile, hub.url, hub.seeded.province_key)
    assert await mobile.locator("#sign-out-everywhere").is_visible()
    await shot(mobile, "dashboard-sign-out-buttons-375px")

    await desk.click("#sign-out-everywhere")
    await desk.wait_for_url("**/dashboard/login")
    await mobile.reload()
    assert "/dashboard/login" in mobile.url
    await office.close()
    await phone.close()


async def test_allocate_quota_through_the_form(hub: Hub, browser: Browser) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = await context.new_page()
    period = period_text(hub.seeded.period)
    await sign_in(page, hub.url, hub.seeded.province_key)
    await page.click("#activity-link")
    await page.wait_for_url("**/dashboard/t/510000/activity**")
    form = '#child-limits tr[data-code="510300"]'

    await page.fill(f"{form} input[name=limit]", "很多")
    await page.click(f"{form} button")
    error = page.locator("#allocate-error")
    await error.wait_for()
    assert "整数" in await error.inner_text()
    assert await page.get_attribute(f"{form} input[name=limit]", "aria-invalid") == "true"
    await shot(page, "dashboard-allocate-error")

    await page.fill(f"{form} input[name=limit]", "6000")
    await page.click(f"{form} button")
    await page.locator("#allocate-saved").wait_for()
    assert await data(page, f"{form} td.limit") == 6000
    entry = page.locator(f'#entries tr[data-cause="limit:510300:{period}"]')
    assert await entry.count() >= 1
    quota = await api(hub.url, f"/v1/tenants/510300/quota/{period}", hub.seeded.api_key)
    assert quota["limit"] == 6000
    await shot(page, "dashboard-allocate-saved")
    await context.close()


async def test_readable_on_a_375px_phone(hub: Hub, browser: Browser) -> None:
    context = await browser.new_context(
        viewport={"width": 375, "height": 812}, device_scale_factor=2, locale="zh-CN"
    )
    page = await context.new_page()
    await sign_in(page, hub.url, hub.seeded.province_key)
    # Nothing wider than the screen but the tables' own scrolling boxes.
    page_width = await page.evaluate("document.documentElement.scrollWidth")
    assert page_width <= 375
    assert await page.locator("#kpi-segments").is_visible()
    await shot(page, "dashboard-overview-375px")
    await page.click("#activity-link")
    await page.wait_for_url("**/activity**")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    await shot(page, "dashboard-tenant-375px")
    await context.close()


async def test_statement_downloads(hub: Hub, browser: Browser, fresh_db: str) -> None:
    """CSV and XLSX from the billing page, through billing's own export: both parsed, their
    totals equal to the page's and the API's statement."""
    conn = await asyncpg.connect(fresh_db)
    try:
        await add_usage(conn, "510104", date(2026, 1, 5), "中国移动", 100)
        await add_usage(conn, "510300", date(2026, 1, 9), "中国联通", 50)
        root_key = await make_key(conn, "000000")
    finally:
        await conn.close()
    async with httpx.AsyncClient(base_url=hub.url) as client:
        closed = await client.post("/v1/billing/2026-01/close", headers=bearer(root_key))
        assert closed.status_code == 200, closed.text
        api = await client.get(
            "/v1/billing/2026-01/statement", headers=bearer(hub.seeded.province_key)
        )
    totals = api.json()["totals"]
    assert totals["segments"] == 150
    context = await browser.new_context(accept_downloads=True, locale="zh-CN")
    page = await context.new_page()
    await sign_in(page, hub.url, hub.seeded.province_key)
    await page.goto(f"{hub.url}/dashboard/billing?period=2026-01")
    shown = await page.get_attribute("#statement-total td:nth-child(4)", "data-value")
    assert shown == str(totals["cost_micros"])
    ARTIFACTS.mkdir(exist_ok=True)
    saved = {}
    for fmt in ("csv", "xlsx"):
        async with page.expect_download() as waiting:
            await page.click(f"#download-{fmt}")
        download = await waiting.value
        assert download.suggested_filename == f"statement-2026-01-510000.{fmt}"
        saved[fmt] = ARTIFACTS / download.suggested_filename
        await download.save_as(saved[fmt])
    await context.close()

    text = (await asyncio.to_thread(saved["csv"].read_bytes)).decode("utf-8")
    assert text.startswith("\ufeff")  # the BOM: Excel reads the Chinese correctly
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    assert rows[-1][0] == "合计"
    # Each line says when the month closed, on Beijing's clock, as the API's closed_at does.
    closed_at = datetime.fromisoformat(api.json()["closed_at"])
    assert closed_at.utcoffset() == timedelta(hours=8)
    assert {row[-1] for row in rows[1:-1]} == {f"{closed_at:%Y-%m-%d %H:%M}"}
    assert int(rows[-1][7]) == totals["segments"]
    assert Decimal(rows[-1][8]) * 1_000_000 == totals["cost_micros"]
    book = await asyncio.to_thread(openpyxl.load_workbook, saved["xlsx"])
    lines = [[c.value for c in row] for row in book["2026-01 明细"].iter_rows(min_row=2)]
    assert lines[-1][0] == "合计"
    assert sum(row[7] for row in lines[:-1]) == lines[-1][7] == totals["segments"]
    assert Decimal(str(lines[-1][8])) * 1_000_000 == totals["cost_micros"]


async def test_the_api_docs_render_with_the_network_cut_off(hub: Hub, browser: Browser) -> None:
    """Swagger UI and ReDoc come from the hub itself: with every request to anywhere else
    refused, both pages still render the API's operations."""
    context = await browser.new_context(locale="zh-CN")
    elsewhere: list[str] = []

    async def only_the_hub(route: Route) -> None:
        if route.request.url.startswith(hub.url):
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    await context.route("**/*", only_the_hub)
    page = await context.new_page()
    await page.goto(f"{hub.url}/schema/swagger")
    await page.wait_for_selector(".opblock", timeout=30_000)  # an operation, rendered
    assert await page.locator(".opblock").count() > 20
    await shot(page, "docs-swagger")
    await page.goto(f"{hub.url}/schema")
    # An operation's summary, as ReDoc renders it.
    summary = page.get_by_text("Send one text to many phones").first
    await summary.wait_for(state="attached", timeout=30_000)
    await shot(page, "docs-redoc")
    assert elsewhere == []
    await context.close()
