"""Gateway callbacks (secret, forward-only receipts, unknown references) and replies."""

from __future__ import annotations

from datetime import date

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis

from hub.delivery import inbound, service
from hub.delivery.gateway import Inbound, Receipt
from hub.settings import DeliverySettings, GatewayConfig
from tests.factories import bearer, make_key
from tests.integration.delivery.conftest import SECRET

GATEWAY = GatewayConfig(name="outbox", kind="outbox", secret=SECRET)


async def _sent_message(conn: asyncpg.Connection, reference: str) -> int:
    tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    send_id = await conn.fetchval(
        "INSERT INTO sends (tenant_id, signature, body, encoding, segments_each, priority, dedup,"
        " recipients, repeats, rejects, segments, list_price_micros, actor)"
        " VALUES ($1, '锦江区', 'x', 'ucs2', 1, 'normal', true, 1, 0, '[]', 1, 60000, 't')"
        " RETURNING id",
        tenant_id,
    )
    return int(
        await conn.fetchval(
            "INSERT INTO messages (send_id, tenant_id, phone, carrier, status, segments, gateway,"
            " reference, sent_at)"
            " VALUES ($1, $2, '+8613800138000', '中国移动', 'sent', 1, 'outbox', $3, hub_now())"
            " RETURNING id",
            send_id,
            tenant_id,
            reference,
        )
    )


async def test_a_late_receipt_counts_on_the_day_its_message_went_out(
    live_db: asyncpg.Connection, county_key: str
) -> None:
    """Billed on delivery: a receipt after midnight (here, after the month's end) is usage of
    the day the message was sent, so the month's close, after its grace window, bills it."""
    message = await _sent_message(live_db, "ref-late")
    await live_db.execute(
        "UPDATE messages SET sent_at = '2026-10-31 23:50:00+08' WHERE id = $1", message
    )
    on_delivery = msgspec.structs.replace(GATEWAY, bills_on="delivered")
    async with live_db.transaction():
        receipt = Receipt("ref-late", "delivered", "DELIVRD")
        assert await service.apply_receipts(live_db, on_delivery, [receipt]) == (1, 0)
    entries = await live_db.fetch("SELECT day, kind::text AS kind, segments FROM usage_entries")
    assert sorted((r["day"], r["kind"], r["segments"]) for r in entries) == [
        (date(2026, 10, 31), "billable", 1),
        (date(2026, 10, 31), "delivered", 1),
    ]


async def test_receipts_move_forward_only_and_unknown_ones_are_kept(
    live_db: asyncpg.Connection, county_key: str
) -> None:
    message = await _sent_message(live_db, "ref-1")
    delivered = Receipt("ref-1", "delivered", "DELIVRD")
    async with live_db.transaction():
        assert await service.apply_receipts(live_db, GATEWAY, [delivered]) == (1, 0)
    # The same receipt again, and a late "undelivered": nothing changes.
    async with live_db.transaction():
        assert await service.apply_receipts(
            live_db, GATEWAY, [delivered, Receipt("ref-1", "undelivered", "X")]
        ) == (0, 0)
    status = await live_db.fetchval("SELECT status::text FROM messages WHERE id = $1", message)
    assert status == "delivered"
    async with live_db.transaction():
        assert await service.apply_receipts(live_db, GATEWAY, [Receipt("nobody", "delivered")]) == (
            0,
            1,
        )
    assert await live_db.fetchval("SELECT count(*) FROM unmatched_receipts") == 1


async def test_a_receipt_before_its_sent_is_applied_once_sent_is_recorded(
    live_db: asyncpg.Connection, county_key: str
) -> None:
    message = await _sent_message(live_db, "ref-2")
    await live_db.execute(
        "UPDATE messages SET status = 'sending', reference = NULL WHERE id = $1", message
    )
    async with live_db.transaction():
        await service.apply_receipts(live_db, GATEWAY, [Receipt("ref-2", "delivered")])
    await live_db.execute(
        "UPDATE messages SET status = 'sent', reference = 'ref-2', sent_at = hub_now()"
        " WHERE id = $1",
        message,
    )
    async with live_db.transaction():
        assert await service.apply_late_receipts(live_db, DeliverySettings(gateways=[GATEWAY])) == 1
    status = await live_db.fetchval("SELECT status::text FROM messages WHERE id = $1", message)
    assert status == "delivered"


@pytest.mark.parametrize(
    ("params", "status"),
    [({}, 401), ({"secret": "wrong"}, 401), ({"secret": GATEWAY.secret}, 400)],
)
async def test_callbacks_need_the_gateways_secret(
    client: httpx.AsyncClient, params: dict[str, str], status: int
) -> None:
    # The outbox takes no callbacks: with the right secret it is a 400 with the JSON error shape.
    resp = await client.post("/v1/gateways/outbox/receipts", params=params, content=b"[]")
    assert resp.status_code == status, resp.text
    assert "error" in resp.json()


async def test_callbacks_to_an_unknown_gateway_are_404(client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/gateways/nope/receipts", params={"secret": "x"})
    assert resp.status_code == 404


@pytest.mark.parametrize(
    ("text", "opt_out"),
    [
        ("T", True),
        (" td ", True),
        ("退订", True),
        ("取消", True),
        ("N", True),
        ("收到，谢谢", False),
        ("TT", False),
    ],
)
def test_opt_out_words(text: str, opt_out: bool) -> None:
    assert inbound.is_opt_out(text) is opt_out


async def test_replies_reach_their_tenant_opt_out_and_are_listed(
    client: httpx.AsyncClient, live_db: asyncpg.Connection, redis: ArqRedis, county_key: str
) -> None:
    extension = await live_db.fetchval("SELECT sms_extension FROM tenants WHERE code = '510104'")
    settings = DeliverySettings()
    address = settings.service_number + extension
    replies = [
        Inbound("+8613800138000", address + "9", "收到", reference="mo-1"),
        Inbound("13800138001", address, "退订", reference="mo-2"),
        Inbound("13800138001", address, "退订", reference="mo-2"),  # told twice
        Inbound("13800138002", "10690000999999", "T", reference="mo-3"),  # no such tenant
    ]
    async with live_db.transaction():
        stored = await inbound.store(live_db, settings, "outbox", replies)
    assert len(stored) == 2
    opted = await live_db.fetch("SELECT phone FROM opt_outs")
    assert [r["phone"] for r in opted] == ["+8613800138001"]

    page = (await client.get("/v1/inbound", headers=bearer(county_key))).json()
    assert [(i["phone"], i["text"], i["opt_out"]) for i in page["items"]] == [
        ("+8613800138000", "收到", False),
        ("+8613800138001", "退订", True),
    ]
    # The province sees them with subtree=true, not without.
    province = await make_key(live_db, "510000")
    assert (await client.get("/v1/inbound", headers=bearer(province))).json()["items"] == []
    seen = await client.get("/v1/inbound", params={"subtree": "true"}, headers=bearer(province))
    assert len(seen.json()["items"]) == 2
    # A later send to the opted-out phone ends as opted_out.
    resp = await client.post(
        "/v1/messages", json={"to": ["13800138001"], "body": "通知"}, headers=bearer(county_key)
    )
    assert resp.json()["counts"]["opted_out"] == 1


async def test_a_reply_addressed_by_extension_alone_reaches_its_tenant(
    live_db: asyncpg.Connection, county_key: str
) -> None:
    # Alibaba gives a reply's dest_code: the extension the hub sent, with no number before it.
    extension = await live_db.fetchval("SELECT sms_extension FROM tenants WHERE code = '510104'")
    async with live_db.transaction():
        stored = await inbound.store(
            live_db, DeliverySettings(), "ali", [Inbound("13800138000", extension, "TD")]
        )
    assert len(stored) == 1
    tenant = await live_db.fetchval(
        "SELECT t.code FROM inbound i JOIN tenants t ON t.id = i.tenant_id"
    )
    assert tenant == "510104"
