"""Composing on a phone (375 px, Debian's Chromium through Playwright, as test_browser.py): a
发送 user pastes numbers, one of them bad, sees the preview fill in as they type (compose.js
asking the page's preview route), then sends, double-clicking 发送: one send, and its page.
Screenshots go to test-artifacts/."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest
from arq.connections import ArqRedis
from playwright.async_api import Browser

from hub.settings import Settings
from tenants.scopes import Role
from tests.factories import grant, make_small_tree
from tests.integration.dashboard.test_browser import browser, shot  # noqa: F401 - a fixture
from tests.integration.delivery.conftest import free_port, serving_hub
from tests.integration.users.conftest import PASSWORD, make_user

pytestmark = pytest.mark.slow


@pytest.fixture
async def hub_url(settings: Settings, fresh_db: str, redis: ArqRedis) -> AsyncIterator[str]:
    conn = await asyncpg.connect(fresh_db)
    try:
        await make_small_tree(conn)
        await grant(conn, {"000000": 10_000, "510000": 1_000, "510100": 500, "510104": 100})
        await make_user(conn, "510104", "jj.sender", {Role.SEND})
    finally:
        await conn.close()
    live = msgspec.structs.replace(settings, db=msgspec.structs.replace(settings.db, dsn=fresh_db))
    async with serving_hub(live, redis, free_port()) as url:
        yield url


async def test_compose_on_a_phone_preview_then_send_once(
    hub_url: str,
    browser: Browser,  # noqa: F811 - the fixture imported above
    fresh_db: str,
) -> None:
    page = await browser.new_page(viewport={"width": 375, "height": 812})
    await page.goto(f"{hub_url}/dashboard/login")
    await page.fill("#login", "jj.sender")
    await page.fill("#password", PASSWORD)
    await page.click("#sign-in")
    await page.wait_for_url("**/dashboard/t/510104")
    await page.click("#nav-compose")
    await page.wait_for_url("**/dashboard/compose")
    assert await page.query_selector("#priority option[value=urgent]") is None
    await page.fill("#to", "13800138000\n12345\n186-1234-5678")
    await page.fill("#body", "今晚七点在三楼开会，请准时参加")
    # compose.js fills the preview as one types.
    await page.wait_for_selector("#pv-recipients")
    assert await page.text_content("#pv-recipients") == "2"
    assert "【锦江区】今晚七点" in (await page.text_content("#preview-text") or "")
    assert await page.text_content("#pv-segments") == "2 条"
    assert "第 2 行 12345" in (await page.text_content("#preview-rejected") or "")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways: {width}px"
    await shot(page, "compose-01-preview")
    await page.dblclick("#send-button")
    await page.wait_for_url("**/dashboard/sends/*")
    await shot(page, "compose-02-sent")
    conn = await asyncpg.connect(fresh_db)
    try:
        sends = await conn.fetch("SELECT id FROM sends WHERE actor LIKE 'user:%'")
        assert len(sends) == 1
        assert page.url.endswith(f"/dashboard/sends/{sends[0]['id']}")
        messages = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE send_id = $1", sends[0]["id"]
        )
        assert messages == 2
    finally:
        await conn.close()
