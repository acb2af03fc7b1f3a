"""The archive's page printed by a real Chromium (Debian's, through Playwright, as
tests/integration/dashboard/test_browser.py drives it) to PDF with `page.pdf`: the filed copy
a county keeps. The PDF is A4, has its pages, and carries the notice's Chinese text, the
running header (tenant and month) and the page numbers the print stylesheet asks for."""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest
from arq.connections import ArqRedis
from playwright.async_api import Browser
from pypdf import PdfReader

from hub import calendar
from hub.settings import Settings
from tenants.scopes import Role
from tests.integration.archive.conftest import CLOSED, NOTICE, close, make_month
from tests.integration.dashboard.test_browser import ARTIFACTS, browser  # noqa: F401
from tests.integration.delivery.conftest import free_port, serving_hub
from tests.integration.users.conftest import PASSWORD, make_user

pytestmark = pytest.mark.slow

A4 = (595.28, 841.89)  # points


READER = "sc.reader"  # 查看 in 四川省 (510000): reads its subtree's notices


class Served(msgspec.Struct, frozen=True):
    url: str


@pytest.fixture
async def served(settings: Settings, fresh_db: str, redis: ArqRedis) -> AsyncIterator[Served]:
    """The closed month's notices, that month closed, committed; the hub serving them."""
    conn = await asyncpg.connect(fresh_db)
    try:
        async with conn.transaction():
            await make_month(conn, settings)
            await close(conn, CLOSED)
            await make_user(conn, "510000", READER, {Role.READ})
    finally:
        await conn.close()
    live = msgspec.structs.replace(settings, db=msgspec.structs.replace(settings.db, dsn=fresh_db))
    async with serving_hub(live, redis, free_port()) as url:
        yield Served(url=url)


def _flat(text: str) -> str:
    """Text without spaces, its compatibility forms folded: the PDF's font maps some
    characters to their Kangxi radicals (⽉ for 月), which NFKC folds back."""
    return "".join(unicodedata.normalize("NFKC", text).split())


async def test_the_page_prints_to_an_a4_pdf_with_the_chinese_text_and_page_numbers(
    served: Served,
    browser: Browser,  # noqa: F811 - the fixture
) -> None:
    page = await browser.new_page()
    await page.goto(f"{served.url}/dashboard/login")
    await page.fill("#login", READER)
    await page.fill("#password", PASSWORD)
    await page.click("#sign-in")
    await page.wait_for_url("**/dashboard/t/510000")
    shut, word = calendar.period_text(CLOSED), f"{CLOSED.year}年{CLOSED.month}月"
    # The link names the month the hub is in (read on both sides: it may turn meanwhile).
    before = calendar.current_period()
    await page.goto(f"{served.url}/dashboard/t/510104")
    await page.click("#archive-link")
    months = {calendar.period_text(m) for m in (before, calendar.current_period())}
    assert any(page.url.endswith(f"/dashboard/t/510104/archive/{m}") for m in months), page.url
    await page.goto(f"{served.url}/dashboard/t/510104/archive/{shut}")
    assert f"锦江区 {word} 发送档案" in await page.title()
    await page.emulate_media(media="print")
    pdf = await page.pdf(prefer_css_page_size=True, print_background=True)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"archive-510104-{shut}.pdf").write_bytes(pdf)
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) >= 1
    for sheet in reader.pages:
        size = (float(sheet.mediabox.width), float(sheet.mediabox.height))
        assert size == pytest.approx(A4, abs=1)
    text = "".join(sheet.extract_text() for sheet in reader.pages)
    flat = _flat(text)
    assert _flat(NOTICE) in flat  # the notice, in Chinese, as text
    assert _flat(f"锦江区（510104）· {word} 发送档案") in flat  # the running header
    # The page numbers (页 may come out of the font's map as a radical, ⻚).
    assert re.search(rf"第1.,共{len(reader.pages)}.", flat), flat[:200]
    assert _flat("用浏览器的“打印") not in flat  # the screen's note is not printed
