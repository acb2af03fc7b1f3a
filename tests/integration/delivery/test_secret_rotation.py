"""Rotating a gateway's callback secret without refusing its receipts (docs/OPERATIONS.md,
"Rotating secrets"): the new secret goes in `secret` and the old one in `previous_secrets`;
receipts carrying either are applied; once the old one is removed, it is refused."""

from __future__ import annotations

import asyncpg
import httpx
import msgspec
from arq.connections import ArqRedis

from hub.settings import GatewayConfig, Settings
from tests.factories import hold_references
from tests.integration.delivery.conftest import live_client, with_gateways

OLD, NEW = "old-secret-of-the-gateway", "new-secret-of-the-gateway"
ROTATING = GatewayConfig(
    name="ali",
    kind="aliyun",
    secret=NEW,
    previous_secrets=[OLD],
    username="access-key-id",
    password="access-key-secret",
    options={"template_code": "SMS_1"},
)


async def _sent(conn: asyncpg.Connection, biz_id: str, phone: str) -> int:
    """A message the Alibaba gateway took (reference `<BizId>:<phone>`), awaiting its receipt."""
    tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    send_id = await conn.fetchval(
        "INSERT INTO sends (tenant_id, signature, body, encoding, segments_each, priority, dedup,"
        " recipients, repeats, rejects, segments, list_price_micros, actor)"
        " VALUES ($1, '锦江区', 'x', 'ucs2', 1, 'normal', true, 1, 0, '[]', 1, 60000, 't')"
        " RETURNING id",
        tenant_id,
    )
    message = int(
        await conn.fetchval(
            "INSERT INTO messages (send_id, tenant_id, phone, carrier, status, segments, gateway,"
            " reference, sent_at)"
            " VALUES ($1, $2, $3, '中国移动', 'sent', 1, 'ali', $4, hub_now()) RETURNING id",
            send_id,
            tenant_id,
            "+86" + phone,
            f"{biz_id}:{phone}",
        )
    )
    await hold_references(conn, message)
    return message


async def _push(api: httpx.AsyncClient, secret: str, biz_id: str, phone: str) -> int:
    """Alibaba's receipt push for one message, carrying `secret` (in the query, as it is
    configured at Alibaba's console, or in the header)."""
    receipt = [{"phone_number": phone, "success": True, "biz_id": biz_id, "err_code": "DELIVRD"}]
    if biz_id.endswith("h"):
        answer = await api.post(
            "/v1/gateways/ali/receipts", headers={"X-Hub-Gateway-Secret": secret}, json=receipt
        )
    else:
        answer = await api.post(
            "/v1/gateways/ali/receipts", params={"secret": secret}, json=receipt
        )
    return answer.status_code


async def _status(conn: asyncpg.Connection, message: int) -> str:
    return str(await conn.fetchval("SELECT status::text FROM messages WHERE id = $1", message))


async def test_receipts_with_the_old_secret_are_taken_until_it_is_removed(
    live_settings: Settings, redis: ArqRedis, live_db: asyncpg.Connection, county_key: str
) -> None:
    during = with_gateways(live_settings, ROTATING)
    after = with_gateways(live_settings, msgspec.structs.replace(ROTATING, previous_secrets=[]))
    messages = {
        biz: await _sent(live_db, biz, f"1380013800{n}")
        for n, biz in enumerate(["OLD1", "NEW1h", "OLD2h", "NEW2", "WRONG"])
    }
    # During the rotation (the hub restarted with both): the gateway still sends the old
    # secret, then the new one; both are applied.
    async for api in live_client(during, redis):
        assert await _push(api, OLD, "OLD1", "13800138000") == 200
        assert await _push(api, NEW, "NEW1h", "13800138001") == 200
        assert await _push(api, "not-a-secret", "WRONG", "13800138004") == 401
        assert await _push(api, "", "WRONG", "13800138004") == 401
    # The old secret removed (every gateway sends the new one): it is refused.
    async for api in live_client(after, redis):
        assert await _push(api, OLD, "OLD2h", "13800138002") == 401
        assert await _push(api, NEW, "NEW2", "13800138003") == 200
    assert {biz: await _status(live_db, m) for biz, m in messages.items()} == {
        "OLD1": "delivered",
        "NEW1h": "delivered",
        "OLD2h": "sent",  # refused: Alibaba keeps it and retries, to a gateway configured anew
        "NEW2": "delivered",
        "WRONG": "sent",
    }
