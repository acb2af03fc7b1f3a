"""The console's operation log page and its XLSX: the same entries and filters as the API, for
管理 only; a 发送 user is refused (403), a sibling county's admin finds nothing (404); every
cell of the download is inert."""

from __future__ import annotations

import io

import asyncpg
import httpx
from openpyxl import load_workbook

from hub.oplog import service as oplog
from tenants.scopes import Role
from tenants.service import get_by_code
from tests.integration.users.conftest import SAME_ORIGIN, make_user, signed_in


async def _county_id(conn: asyncpg.Connection) -> int:
    county = await get_by_code(conn, "510104")
    assert county is not None
    return county.id


async def test_an_admin_reads_filters_and_pages_and_sees_her_sign_in(
    conn: asyncpg.Connection, client: httpx.AsyncClient, tree: None
) -> None:
    await make_user(conn, "510104", "admin1", {Role.ADMIN}, phone="13800138002")
    county = await _county_id(conn)
    for i in range(60):
        await oplog.record(conn, "cli:ops", "quota.set", tenant_id=county, object=f"n:{i}")
    await signed_in(client, conn, "admin1", "+8613800138002")
    page = await client.get("/dashboard/t/510104/operations", params={"action": "session."})
    assert page.status_code == 200, page.text
    assert "session.sign_in" in page.text
    assert "user:admin1" in page.text
    assert "127.0.0.1" in page.text
    assert "n:0" not in page.text  # another action
    first = await client.get("/dashboard/t/510104/operations", params={"actor": "cli:ops"})
    assert first.text.count('<tr data-id="') == 50
    assert "n:59" in first.text
    assert 'id="operations-next"' in first.text
    link = first.text.split('id="operations-next"')[0].rsplit('href="', 1)[1].split('"')[0]
    second = await client.get(link.replace("&amp;", "&"))
    assert second.text.count('<tr data-id="') == 10
    assert "n:0<" in second.text


async def test_a_sender_gets_403_and_a_sibling_admin_404(
    conn: asyncpg.Connection, client: httpx.AsyncClient, tree: None
) -> None:
    await make_user(conn, "510104", "sender1", {Role.SEND}, phone="13800138003")
    await make_user(conn, "510105", "sibling1", {Role.ADMIN}, phone="13800138004")
    await signed_in(client, conn, "sender1", "+8613800138003")
    assert (await client.get("/dashboard/t/510104/operations")).status_code == 403
    assert (await client.get("/dashboard/t/510104/operations.xlsx")).status_code == 403
    await client.post("/dashboard/logout", headers=SAME_ORIGIN)
    await signed_in(client, conn, "sibling1", "+8613800138004")
    assert (await client.get("/dashboard/t/510104/operations")).status_code == 404
    assert (await client.get("/dashboard/t/510104/operations.xlsx")).status_code == 404
    assert (await client.get("/dashboard/t/510105/operations")).status_code == 200


async def test_the_xlsx_is_inert(
    conn: asyncpg.Connection, client: httpx.AsyncClient, tree: None
) -> None:
    await make_user(conn, "510104", "admin2", {Role.ADMIN}, phone="13800138005")
    county = await _county_id(conn)
    hostile = ['=HYPERLINK("http://x","y")', "+1+1", "-2", "@SUM(A1)"]
    for text in hostile:
        await oplog.record(
            conn, "cli:ops", "tenant.rename", tenant_id=county, object=text, after={"name": text}
        )
    await signed_in(client, conn, "admin2", "+8613800138005")
    got = await client.get("/dashboard/t/510104/operations.xlsx", params={"actor": "cli:ops"})
    assert got.status_code == 200, got.text
    sheet = load_workbook(io.BytesIO(got.content)).active
    assert sheet is not None
    rows = list(sheet.iter_rows(min_row=2))
    assert len(rows) == 4
    for row in rows:
        for cell in row:
            assert cell.data_type != "f"
        assert row[7].value in hostile
        assert row[7].data_type == "s"
        assert row[7].quotePrefix
