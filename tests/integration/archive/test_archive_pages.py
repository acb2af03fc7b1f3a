"""The archive in the console: a 查看 person of 锦江区 opens its month's page and downloads
its sheet (the same stored bytes as the API's), finds the link on the overview, gets 404 for
the neighbouring county and 422 for a malformed month, as HTML pages."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from hub import calendar
from hub.settings import Settings
from tenants.scopes import Role
from tests.factories import bearer, make_key
from tests.integration.archive.conftest import CLOSED, NOTICE, Month, close, make_month
from tests.integration.users.conftest import make_user, signed_in

READER = "jj.reader"


@pytest.fixture
async def month(conn: asyncpg.Connection, settings: Settings) -> Month:
    return await make_month(conn, settings)


async def test_a_reader_opens_the_page_and_its_sheet_and_nothing_of_the_neighbour(
    client: httpx.AsyncClient, conn: asyncpg.Connection, month: Month
) -> None:
    shut = calendar.period_text(CLOSED)
    await close(conn, CLOSED)
    await make_user(conn, "510104", READER, {Role.READ})
    await signed_in(client, conn, READER)
    # The overview links the month the hub is in (read on both sides of the request: at
    # 23:59:59 on a month's last day it may turn while the page is made).
    before = calendar.current_period()
    overview = await client.get("/dashboard/t/510104")
    months = {calendar.period_text(m) for m in (before, calendar.current_period())}
    links = {m for m in months if f'href="/dashboard/t/510104/archive/{m}"' in overview.text}
    assert links, (months, overview.text)
    page = await client.get(f"/dashboard/t/510104/archive/{shut}")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert NOTICE in page.text
    sheet = await client.get(f"/dashboard/t/510104/archive/{shut}.xlsx")
    assert sheet.status_code == 200
    api = await client.get(
        f"/v1/tenants/510104/archive/{shut}.xlsx", headers=bearer(await make_key(conn, "510104"))
    )
    assert sheet.content == api.content  # the one stored copy
    neighbour = await client.get(f"/dashboard/t/510105/archive/{shut}")
    assert neighbour.status_code == 404
    assert neighbour.headers["content-type"].startswith("text/html")
    assert (await client.get("/dashboard/t/510104/archive/2027-13")).status_code == 422
