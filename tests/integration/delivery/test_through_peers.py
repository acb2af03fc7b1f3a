"""End to end through the hub: API → queue → worker → a real gateway peer → receipts and replies
back into the hub (Kannel's real dlr-url callbacks over HTTP; SMPP deliver_sm)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import msgspec
import pytest
from arq.connections import ArqRedis

from hub.delivery.gateways.kannel import KannelGateway
from hub.settings import GatewayConfig, Settings
from tests.factories import bearer
from tests.integration.delivery.conftest import (
    audit_clean,
    eventually,
    free_port,
    live_client,
    running_worker,
    serving_hub,
    wait_statuses,
    with_gateways,
)
from tests.peers.kannel import kannel
from tests.peers.smsc import FakeSmsc

pytestmark = [pytest.mark.peer]

LONG = (
    "各乡镇（街道）党委组织委员："
    + "请于本周五前报送年度党员发展计划及培养对象名单，逾期将影响全市汇总。" * 2
)
PHONES = ["13800138000", "18612345678", "13311112222"]


async def _extension(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SELECT sms_extension FROM tenants WHERE code = '510104'"))


async def test_smpp_submit_receipts_and_replies(
    live_settings: Settings, live_db: asyncpg.Connection, redis: ArqRedis, county_key: str
) -> None:
    smsc = FakeSmsc(undelivered={"8613311112222"})
    await smsc.start()
    try:
        gateway = GatewayConfig(
            name="smsc", kind="smpp", port=smsc.port, username="hub", password="pw", rate=1e6
        )
        settings = with_gateways(live_settings, gateway)
        async for client in live_client(settings, redis):
            short = await client.post(
                "/v1/messages",
                json={"to": PHONES, "body": "明早八点开会"},
                headers=bearer(county_key),
            )
            long = await client.post(
                "/v1/messages", json={"to": PHONES[:1], "body": LONG}, headers=bearer(county_key)
            )
        assert long.json()["segments_per_message"] > 1
        async with running_worker(settings):
            await wait_statuses(live_db, short.json()["id"], {"delivered": 2, "undelivered": 1})
            await wait_statuses(live_db, long.json()["id"], {"delivered": 1})
            # A reply to the county's address, on the same SMPP session.
            address = settings.delivery.service_number + await _extension(live_db)
            await smsc.send_mo("8618612345678", address, "退订")
            await _wait_for_inbound(live_db)
        # Each message reached the peer exactly once, whole.
        assert all(n == 1 for n in smsc.messages.values())
        assert sum(smsc.messages.values()) == 4
        assert any(text.endswith(LONG) for _, text in smsc.messages)
        reply = await live_db.fetchrow("SELECT phone, text, opt_out FROM inbound")
        assert reply is not None
        assert dict(reply) == {"phone": "+8618612345678", "text": "退订", "opt_out": True}
        assert await audit_clean(live_db) == []
    finally:
        await smsc.stop()


async def test_kannel_delivers_and_its_dlr_callbacks_reach_the_hub(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    config = GatewayConfig(
        name="kannel",
        kind="kannel",
        secret="kannel-callback-secret",
        rate=1e6,
        url="http://127.0.0.1:1",  # Kannel's own, once it runs; its sms-service needs ours first
        options={"callback_url": f"http://127.0.0.1:{port}"},
    )
    async with kannel(tmp_path, KannelGateway(config).inbound_get_url) as peer:
        config = msgspec.structs.replace(
            config, url=peer.url, username=peer.username, password=peer.password
        )
        settings = with_gateways(live_settings, config)
        async with serving_hub(settings, redis, port):
            async for client in live_client(settings, redis):
                resp = await client.post(
                    "/v1/messages", json={"to": PHONES, "body": LONG}, headers=bearer(county_key)
                )
            send_id = resp.json()["id"]
            async with running_worker(settings):
                # `delivered` comes only from Kannel's own DLR calls to the hub's receipts URL.
                await wait_statuses(live_db, send_id, {"delivered": 3})
            arrived = await peer.wait_arrived(3)
            assert sorted(a.phone for a in arrived) == sorted(f"+86{p}" for p in PHONES)
            assert {a.text("ucs2") for a in arrived} == {f"【锦江区】{LONG}"}
            # A reply through Kannel's sms-service reaches the county.
            address = settings.delivery.service_number + await _extension(live_db)
            await peer.inject("+8613800138000", address, "收到，准时参加")
            await _wait_for_inbound(live_db)
        reply = await live_db.fetchrow("SELECT phone, text, opt_out FROM inbound")
        assert reply is not None
        assert dict(reply) == {
            "phone": "+8613800138000",
            "text": "收到，准时参加",
            "opt_out": False,
        }
        assert await audit_clean(live_db) == []


async def _wait_for_inbound(conn: asyncpg.Connection) -> None:
    async def stored() -> bool:
        return bool(await conn.fetchval("SELECT count(*) FROM inbound"))

    await eventually(stored, patience=30)
