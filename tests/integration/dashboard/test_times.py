"""Every time on a page is Beijing time: a known instant, 02:00 UTC on 16 March 2027 (the tests'
pinned clock, 10:00 in Shanghai), is shown as 10:00, never as the 02:00 asyncpg hands over."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import asyncpg
import httpx

from tests.factories import bearer, make_key
from tests.integration.dashboard.conftest import SAME_ORIGIN, Seeded, add_usage

KNOWN = datetime(2027, 3, 16, 2, 0, tzinfo=UTC)  # 2027-03-16 10:00 in Beijing
# 20:30 UTC on the 15th is already the 16th in Beijing (04:30): a date is Beijing's too.
LATE = datetime(2027, 3, 15, 20, 30, tzinfo=UTC)


def text_of(html: str, pattern: str) -> str:
    match = re.search(pattern, html, re.S)
    assert match, f"{pattern!r} not on the page"
    return match[0]


async def _send_at_known_instants(conn: asyncpg.Connection, client: httpx.AsyncClient) -> int:
    """A county's send, its reply and opt-out, 锦江区's ledger and every quota alert at KNOWN
    (the opt-out LATE)."""
    county_key = await make_key(conn, "510104")
    sent = await client.post(
        "/v1/messages",
        json={"to": ["13800138000"], "body": "明天上午九点开会"},
        headers={**bearer(county_key), "Idempotency-Key": "times-1"},
    )
    assert sent.status_code == 202, sent.text
    send_id: int = sent.json()["id"]
    tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    await conn.execute("UPDATE sends SET created_at = $2 WHERE id = $1", send_id, KNOWN)
    await conn.execute("UPDATE messages SET updated_at = $2 WHERE send_id = $1", send_id, KNOWN)
    await conn.execute(
        "INSERT INTO inbound (tenant_id, gateway, reference, phone, address, text, opt_out,"
        " received_at) VALUES ($1, 'outbox', 'r1', '+8613800138000', '10690000000001', '收到',"
        " false, $2)",
        tenant_id,
        KNOWN,
    )
    await conn.execute(
        "INSERT INTO opt_outs (tenant_id, phone, created_at) VALUES ($1, '+8613900139000', $2)",
        tenant_id,
        LATE,
    )
    await conn.execute(
        "UPDATE quota_entries SET created_at = $2 WHERE account_id IN"
        " (SELECT id FROM quota_accounts WHERE tenant_id = $1)",
        tenant_id,
        KNOWN,
    )
    await conn.execute("UPDATE quota_events SET created_at = $1", KNOWN)  # every 80/100 % alert
    return send_id


async def test_the_tenant_page_shows_beijing_time(
    signed_in: httpx.AsyncClient, seeded: Seeded, conn: asyncpg.Connection
) -> None:
    send_id = await _send_at_known_instants(conn, signed_in)
    page = (await signed_in.get("/dashboard/t/510104/activity")).text
    sends = text_of(page, rf'<tr data-send="{send_id}">.*?</tr>')
    assert "2027-03-16 10:00" in sends  # with its year: lists span new year
    assert "02:00" not in sends
    entries = text_of(page, r'<table class="data" id="entries">.*?</table>')
    assert "时间（北京时间）" in entries
    assert "2027-03-16 10:00:00" in entries
    assert "02:00:00" not in entries
    replies = text_of(page, r'<section class="card" id="replies">.*?</section>')
    assert "2027-03-16 10:00" in replies
    assert "02:00" not in replies
    opt_outs = text_of(page, r'<section class="card" id="opt-outs">.*?</section>')
    assert "2027-03-16" in opt_outs  # Beijing's day, not UTC's 2027-03-15
    assert "2027-03-15" not in opt_outs
    assert "页面上的时间均为北京时间" in page


async def test_the_recipients_page_shows_beijing_time(
    signed_in: httpx.AsyncClient, seeded: Seeded, conn: asyncpg.Connection
) -> None:
    send_id = await _send_at_known_instants(conn, signed_in)
    page = (await signed_in.get(f"/dashboard/sends/{send_id}")).text
    heading = text_of(page, r"<h1>.*?</h1>")
    assert "2027-03-16 10:00（北京时间）" in heading
    recipients = text_of(page, r'<table class="data" id="recipients">.*?</table>')
    assert "2027-03-16 10:00:00" in recipients
    assert "02:00:00" not in recipients


async def test_the_overview_alert_shows_beijing_time(
    signed_in: httpx.AsyncClient, seeded: Seeded, conn: asyncpg.Connection
) -> None:
    await _send_at_known_instants(conn, signed_in)
    page = (await signed_in.get("/dashboard/t/510000")).text
    alerts = re.findall(r"已用 \d+%，([^<]*) 记录", page)
    assert alerts
    assert set(alerts) == {"2027-03-16 10:00"}


async def test_the_billing_page_says_when_the_month_closed_in_beijing_time(
    signed_in: httpx.AsyncClient, seeded: Seeded, conn: asyncpg.Connection
) -> None:
    await add_usage(conn, "510104", date(2026, 1, 5), "中国移动", 100)
    root_key = await make_key(conn, "000000")
    closed = await signed_in.post(
        "/v1/billing/2026-01/close", headers={**bearer(root_key), **SAME_ORIGIN}
    )
    assert closed.status_code == 200, closed.text
    await conn.execute(
        "UPDATE billing_periods SET closed_at = $1 WHERE period = '2026-01-01'", KNOWN
    )
    page = (await signed_in.get("/dashboard/billing?period=2026-01")).text
    note = text_of(page, r'<p class="muted" id="closed-at">.*?</p>')
    assert "2027-03-16 10:00（北京时间）" in note
