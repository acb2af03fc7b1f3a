"""Usage facts as messages become billable, dedup savings apart, folded into the daily rollup."""

from __future__ import annotations

import asyncpg
import httpx
from arq.connections import ArqRedis

from hub.billing import service as billing
from hub.calendar import current_period
from hub.db import SingleConnectionDatabase
from hub.delivery import service as delivery
from hub.delivery.gateway import Receipt
from hub.settings import GatewayConfig, Settings
from tests.factories import bearer
from tests.integration.delivery.conftest import RunWorker, live_client, with_gateways
from tests.peers.aliyun import AliyunFake, running

PHONES = ["13800138000", "13800138001", "18612345678", "13311110000"]  # 移动 twice, 联通, 电信


async def _usage(conn: asyncpg.Connection, code: str = "510104") -> dict[str, tuple[int, int]]:
    path = await conn.fetchval("SELECT path FROM tenants WHERE code = $1", code)
    rows = await billing.usage(conn, path, current_period(), subtree=True)
    return {f"{r.tenant}/{r.carrier}": (r.billable, r.dedup) for r in rows}


async def test_sent_segments_become_billable_per_carrier_and_dedup_is_counted_apart(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, county_key: str, run_worker: RunWorker
) -> None:
    body = "各党支部：" + "请于本周五前报送年度党员发展计划。" * 5  # 2 segments
    first = await client.post(
        "/v1/messages", json={"to": PHONES, "body": body}, headers=bearer(county_key)
    )
    assert first.json()["segments_per_message"] == 2
    # The same notice again to two of them (and one new phone): two are deduplicated.
    again = await client.post(
        "/v1/messages",
        json={"to": [*PHONES[:2], "13900000000"], "body": body},
        headers=bearer(county_key),
    )
    assert again.json()["counts"]["deduplicated"] == 2
    # Nothing sent yet: nothing saved yet either (the original might still fail, and then the
    # duplicates go out themselves).
    assert await _usage(live_db) == {}

    await run_worker()
    expected = {
        "510104/中国移动": (6, 4),  # 138…000, 138…001, then 139…: 3 messages of 2 segments
        "510104/中国联通": (2, 0),
        "510104/中国电信": (2, 0),
    }
    assert await _usage(live_db) == expected
    # Folding the entries into the rollup changes nothing a reader sees.
    async with live_db.transaction():
        assert await billing.roll_up(live_db) == 3
    assert await live_db.fetchval("SELECT count(*) FROM usage_entries") == 0
    assert await _usage(live_db) == expected
    # The province reads its subtree's usage.
    assert await _usage(live_db, "510000") == expected


async def test_rejected_opted_out_and_refused_recipients_are_never_billable(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    await live_db.execute(
        "INSERT INTO opt_outs (tenant_id, phone)"
        " SELECT id, '+8613800138001' FROM tenants WHERE code = '510104'"
    )
    outbox = GatewayConfig(
        name="outbox", kind="outbox", options={"receipt_delay": 0, "refused_suffix": "0000"}
    )
    settings = with_gateways(live_settings, outbox)
    to = [*PHONES, "12345"]  # 138…001 opted out, 133…0000 refused by the gateway, 12345 invalid
    async for client in live_client(settings, redis):
        sent = await client.post(
            "/v1/messages", json={"to": to, "body": "通知"}, headers=bearer(county_key)
        )
    assert [r["to"] for r in sent.json()["rejected"]] == ["12345"]
    await run_worker(settings)
    rows = await live_db.fetch("SELECT phone, status::text AS status FROM messages")
    statuses = {r["phone"]: r["status"] for r in rows}
    assert statuses["+8613311110000"] == "failed"
    # Only the two delivered ones count: 138…000 (移动) and 186… (联通).
    assert await _usage(live_db) == {"510104/中国移动": (1, 0), "510104/中国联通": (1, 0)}


async def test_a_gateway_billing_on_delivery_bills_only_what_was_delivered(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    outbox = GatewayConfig(
        name="outbox",
        kind="outbox",
        bills_on="delivered",
        options={"receipt_delay": 0, "undelivered_suffix": "0000"},
    )
    settings = with_gateways(live_settings, outbox)
    async for client in live_client(settings, redis):
        await client.post(
            "/v1/messages", json={"to": PHONES, "body": "通知"}, headers=bearer(county_key)
        )
    await run_worker(settings)
    # 13311110000 was undelivered: not billable.
    assert await _usage(live_db) == {"510104/中国移动": (2, 0), "510104/中国联通": (1, 0)}


async def test_on_a_gateway_billing_on_delivery_the_quota_waits_as_long_as_the_receipts(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    """What went waits in the send's reservation for its receipts: the reservation lasts as
    long as a receipt may come (past its own timeout), so a late receipt's segments are counted
    used where billing counts them billable, not dropped with an expired reservation."""
    window = 72 * 3600.0
    assert window > live_settings.quota.reservation_ttl_seconds
    with running(AliyunFake()) as fake:  # it reports no receipts unless asked
        ali = fake.gateway(bills_on="delivered", receipt_window_seconds=window)
        settings = with_gateways(live_settings, ali)
        async for client in live_client(settings, redis):
            sent = await client.post(
                "/v1/messages", json={"to": PHONES[:2], "body": "通知"}, headers=bearer(county_key)
            )
        send_id = sent.json()["id"]
        await run_worker(settings)
    reservation = await live_db.fetchrow(
        "SELECT r.status::text AS status, r.expires_at >= hub_now()"
        " + make_interval(secs => $2::float8 - 60) AS lasts"
        " FROM quota_reservations r JOIN sends s ON s.reservation_id = r.id WHERE s.id = $1",
        send_id,
        window,
    )
    assert reservation is not None
    assert (reservation["status"], reservation["lasts"]) == ("pending", True)

    references = [
        r["reference"]
        for r in await live_db.fetch("SELECT reference FROM messages WHERE send_id = $1", send_id)
    ]
    recorder = delivery.Recorder(SingleConnectionDatabase(live_db), settings, redis)
    await recorder.receipts("ali", [Receipt(ref, "delivered", "DELIVRD") for ref in references])
    assert await _usage(live_db) == {"510104/中国移动": (2, 0)}
    county = await live_db.fetchrow(
        "SELECT a.used, a.reserved FROM quota_accounts a JOIN tenants t ON t.id = a.tenant_id"
        " WHERE t.code = '510104' AND a.period = $1",
        current_period(),
    )
    assert county is not None
    assert (county["used"], county["reserved"]) == (2, 0)
