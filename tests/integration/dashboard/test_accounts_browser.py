"""People in a real browser (Debian's Chromium through Playwright, as test_browser.py): the
operator's admin signs in with the SMS code, invites a 发送 user, who opens the one-time link,
sets a password, signs in, sees the console and cannot open the users page. Screenshots go to
test-artifacts/."""

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
from tests.integration.users.conftest import PASSWORD, last_code, make_user

pytestmark = pytest.mark.slow


@pytest.fixture
async def hub_url(settings: Settings, fresh_db: str, redis: ArqRedis) -> AsyncIterator[str]:
    conn = await asyncpg.connect(fresh_db)
    try:
        await make_small_tree(conn)
        await grant(conn, {"000000": 10_000, "510000": 1_000, "510100": 500, "510104": 100})
        await make_user(conn, "000000", "op.admin", {Role.ADMIN, Role.SEND, Role.REVIEW})
    finally:
        await conn.close()
    live = msgspec.structs.replace(settings, db=msgspec.structs.replace(settings.db, dsn=fresh_db))
    async with serving_hub(live, redis, free_port()) as url:
        yield url


async def _code(dsn: str, phone: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return await last_code(conn, phone)
    finally:
        await conn.close()


async def test_an_admin_invites_a_sender_who_signs_in(
    hub_url: str,
    browser: Browser,  # noqa: F811 - the fixture imported above
    fresh_db: str,
) -> None:
    admin = await browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    await admin.goto(f"{hub_url}/dashboard/")
    assert "/dashboard/login" in admin.url
    await shot(admin, "accounts-01-login")
    await admin.fill("#login", "op.admin")
    await admin.fill("#password", PASSWORD)
    await admin.click("#sign-in")
    await admin.wait_for_url("**/dashboard/code")
    await shot(admin, "accounts-02-code")
    await admin.fill("#code", await _code(fresh_db, "+8613800138000"))
    await admin.click("#enter-code")
    await admin.wait_for_url("**/dashboard/t/000000")
    await admin.click("#nav-users")
    await admin.wait_for_url("**/dashboard/users")
    await admin.fill("#invite-tenant", "510104")
    await admin.fill("#invite-login-name", "jj.sender")
    await admin.fill("#invite-name", "锦江发送员")
    await admin.fill("#invite-phone", "139 0013 9000")
    await admin.check("#invite-role_send")
    await admin.click("#invite-send")
    link = await admin.input_value("#invite-link")
    assert "/dashboard/invite/" in link
    await shot(admin, "accounts-03-invited")

    # The sender, in a browser of their own.
    context = await browser.new_context(viewport={"width": 390, "height": 844})
    sender = await context.new_page()
    await sender.goto(link)
    assert await sender.text_content("#invite-login") == "jj.sender"
    await sender.fill("#password", "锦江区的好密码2027")
    await sender.fill("#confirm", "锦江区的好密码2027")
    await shot(sender, "accounts-04-set-password")
    await sender.click("#set-password")
    await sender.wait_for_url("**/dashboard/login**")
    await sender.fill("#login", "jj.sender")
    await sender.fill("#password", "锦江区的好密码2027")
    await sender.click("#sign-in")
    await sender.wait_for_url("**/dashboard/t/510104")  # no code for a sender
    assert "jj.sender" in (await sender.text_content("#whoami") or "")
    assert await sender.query_selector("#nav-users") is None
    await shot(sender, "accounts-05-sender-console")
    refused = await sender.goto(f"{hub_url}/dashboard/users")
    assert refused is not None
    assert refused.status == 403
    await shot(sender, "accounts-06-sender-refused")
    # The link was good once.
    again = await sender.goto(link)
    assert again is not None
    assert again.status == 404
    await context.close()
