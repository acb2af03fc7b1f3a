"""At most once, through the hub and the real peers: a message handed to a gateway that never
answered is not sent again ("outcome unknown", billed as the crash case is); a long message whose
later part was refused is not sent again and is billed for the parts that went; a receipt for a
reused gateway id reaches only the newest message holding it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from arq.connections import ArqRedis

from hub.billing import service as billing
from hub.calendar import current_period
from hub.settings import GatewayConfig, Settings
from tests.factories import bearer
from tests.integration.delivery.conftest import (
    audit_clean,
    eventually,
    live_client,
    running_worker,
    statuses,
    wait_statuses,
    with_gateways,
)
from tests.peers.aliyun import AliyunFake, running
from tests.peers.kannel import HttpListener, SlowAnswers, kannel
from tests.peers.smsc import DROP, FakeSmsc

pytestmark = [pytest.mark.peer]

# A retry comes at once: a message the hub wrongly retried would reach the peer again quickly.
FAST_RETRY: dict[str, Any] = {"retry_base_seconds": 0.05, "retry_cap_seconds": 0.1}
ESME_RTHROTTLED = 0x58
PHONE = "13800138000"
LONG = (
    "各乡镇（街道）党委组织委员："
    + "请于本周五前报送年度党员发展计划及培养对象名单，逾期将影响全市汇总。" * 2
)
# Long enough for a missing duplicate to have arrived: the hub retries within 0.1 s.
SETTLE_SECONDS = 1.0


def smpp(port: int) -> GatewayConfig:
    return GatewayConfig(
        name="smsc", kind="smpp", port=port, username="hub", password="pw", rate=1e6
    )


async def send(
    settings: Settings, redis: ArqRedis, key: str, phones: list[str], body: str
) -> dict[str, Any]:
    async for client in live_client(settings, redis):
        resp = await client.post(
            "/v1/messages", json={"to": phones, "body": body}, headers=bearer(key)
        )
    assert resp.status_code == 202, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


async def settled(conn: asyncpg.Connection, send_id: int) -> None:
    """Wait until none of the send's messages is waiting or being sent."""

    async def done() -> bool:
        counts = await statuses(conn, send_id)
        return not counts.get("accepted") and not counts.get("sending")

    await eventually(done)


async def message_row(conn: asyncpg.Connection, send_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT status::text, error, reference, segments, segments_sent FROM messages"
        " WHERE send_id = $1",
        send_id,
    )
    assert row is not None
    return dict(row)


async def quota_parts(conn: asyncpg.Connection, send_id: int) -> tuple[int, int]:
    """(used, released) of the send's reservation."""
    row = await conn.fetchrow(
        "SELECT r.used_part, r.released_part FROM quota_reservations r"
        " JOIN sends s ON s.reservation_id = r.id WHERE s.id = $1",
        send_id,
    )
    assert row is not None
    return row["used_part"], row["released_part"]


async def billable(conn: asyncpg.Connection) -> int:
    """The county's billable segments this month, as billing counts them (the worker's roll-up
    cron may have folded the usage entries into the daily rollup meanwhile)."""
    path = await conn.fetchval("SELECT path FROM tenants WHERE code = '510104'")
    return sum(r.billable for r in await billing.usage(conn, path, current_period(), subtree=True))


async def test_an_smpp_submit_whose_answer_is_lost_is_not_sent_again(
    live_settings: Settings, live_db: asyncpg.Connection, redis: ArqRedis, county_key: str
) -> None:
    smsc = FakeSmsc()
    await smsc.start()
    smsc.answer_next(DROP)  # taken by the SMSC; the session drops before its submit_sm_resp
    try:
        settings = with_gateways(live_settings, smpp(smsc.port), **FAST_RETRY)
        sent = await send(settings, redis, county_key, [PHONE], "明早八点开会")
        async with running_worker(settings):
            await settled(live_db, sent["id"])
            await asyncio.sleep(SETTLE_SECONDS)
    finally:
        await smsc.stop()
    assert smsc.received == 1, "the hub sent it again"
    row = await message_row(live_db, sent["id"])
    assert row["status"] == "sent"
    assert row["error"].startswith("outcome unknown: no_submit_sm_resp")
    # As when a worker dies holding it: its quota used, its segment billable.
    assert await quota_parts(live_db, sent["id"]) == (1, 0)
    assert await billable(live_db) == 1
    assert await audit_clean(live_db) == []


async def test_a_long_message_whose_later_part_is_refused_is_billed_for_what_went(
    live_settings: Settings, live_db: asyncpg.Connection, redis: ArqRedis, county_key: str
) -> None:
    smsc = FakeSmsc()
    await smsc.start()
    # Part 1 taken, part 2 refused on every try the adapter makes.
    smsc.answer_next(0, ESME_RTHROTTLED, ESME_RTHROTTLED, ESME_RTHROTTLED)
    try:
        settings = with_gateways(live_settings, smpp(smsc.port), **FAST_RETRY)
        sent = await send(settings, redis, county_key, [PHONE], LONG)
        assert sent["segments_per_message"] == 2
        async with running_worker(settings):
            # Part 1's receipt is the message's.
            await wait_statuses(live_db, sent["id"], {"delivered": 1})
            await asyncio.sleep(SETTLE_SECONDS)
    finally:
        await smsc.stop()
    first = [n for (phone, _), n in smsc.parts.items() if phone == f"86{PHONE}"]
    assert first == [1], f"parts that reached the SMSC: {smsc.parts}"
    assert not smsc.messages, "the message reached the SMSC whole: part 2 was sent again"
    row = await message_row(live_db, sent["id"])
    assert (row["segments"], row["segments_sent"]) == (2, 1)
    assert await quota_parts(live_db, sent["id"]) == (1, 1)  # the part that went, and the rest
    assert await billable(live_db) == 1
    assert await audit_clean(live_db) == []


async def test_a_receipt_for_a_reused_smsc_id_touches_only_the_newest_message(
    live_settings: Settings, live_db: asyncpg.Connection, redis: ArqRedis, county_key: str
) -> None:
    """An SMSC restarted counts its message ids from the start again: the receipt for the new
    message (which the fake SMSC pushes at once, often before the hub has recorded `sent`) must
    reach the new message, and must not deliver the old one that held the same id days ago."""
    first = FakeSmsc(id_prefix="r", receipts=False)
    await first.start()
    try:
        settings = with_gateways(live_settings, smpp(first.port))
        old = await send(settings, redis, county_key, ["13800138001"], "旧通知")
        async with running_worker(settings):
            await wait_statuses(live_db, old["id"], {"sent": 1})
    finally:
        await first.stop()
    # Its receipt never came, and it went four days ago: past any carrier's validity.
    await live_db.execute(
        "UPDATE messages SET sent_at = sent_at - interval '4 days',"
        " submitted_at = submitted_at - interval '4 days' WHERE send_id = $1",
        old["id"],
    )
    second = FakeSmsc(id_prefix="r")
    await second.start()
    try:
        settings = with_gateways(live_settings, smpp(second.port))
        new = await send(settings, redis, county_key, ["13800138002"], "新通知")
        async with running_worker(settings):
            await wait_statuses(live_db, new["id"], {"delivered": 1})
    finally:
        await second.stop()
    old_row, new_row = await message_row(live_db, old["id"]), await message_row(live_db, new["id"])
    assert old_row["reference"] == new_row["reference"] == "r1"
    assert old_row["status"] == "sent", "a receipt for the new message delivered the old one"
    assert await audit_clean(live_db) == []


async def test_a_kannel_request_that_times_out_is_not_sent_again(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    tmp_path: Path,
) -> None:
    listener = HttpListener()  # Kannel's DLR calls land here; this test needs none of them
    await listener.start()
    config = GatewayConfig(
        name="kannel",
        kind="kannel",
        secret="kannel-callback-secret",
        rate=1e6,
        options={"callback_url": listener.url, "timeout": 0.5},
    )
    try:
        async with kannel(tmp_path, f"{listener.url}/inbound") as peer:
            proxy = SlowAnswers(peer.ports["sendsms_port"])
            await proxy.start()
            proxy.hold_next(1, 3.0)  # smsbox takes it; its answer comes after the hub gave up
            try:
                config = msgspec.structs.replace(
                    config, url=proxy.url, username=peer.username, password=peer.password
                )
                settings = with_gateways(live_settings, config, **FAST_RETRY)
                sent = await send(settings, redis, county_key, [PHONE], "明早八点开会")
                async with running_worker(settings):
                    await settled(live_db, sent["id"])
                    await peer.wait_arrived(1)
                    await asyncio.sleep(SETTLE_SECONDS)
            finally:
                await proxy.close()
            arrived = peer.arrived()
    finally:
        await listener.close()
    assert len(arrived) == 1, "the hub sent it again"
    row = await message_row(live_db, sent["id"])
    assert row["status"] == "sent"
    assert row["error"].startswith("outcome unknown: timeout")
    assert await quota_parts(live_db, sent["id"]) == (1, 0)
    assert await billable(live_db) == 1
    assert await audit_clean(live_db) == []


async def test_an_aliyun_request_that_times_out_is_not_sent_again(
    live_settings: Settings, live_db: asyncpg.Connection, redis: ArqRedis, county_key: str
) -> None:
    with running(AliyunFake()) as fake:
        fake.delay_next(1, 1.5)  # it sends the SMS once its pause is over, answering no one
        config = fake.gateway(options={"timeout": 0.3})
        settings = with_gateways(live_settings, config, **FAST_RETRY)
        sent = await send(settings, redis, county_key, [PHONE], "明早八点开会")
        async with running_worker(settings):
            await settled(live_db, sent["id"])
            await eventually(lambda: len(fake.sent) >= 1)
            await asyncio.sleep(SETTLE_SECONDS)
        assert [s.phone for s in fake.sent] == [PHONE], "the hub sent it again"
        assert fake.calls == 1
    row = await message_row(live_db, sent["id"])
    assert row["status"] == "sent"
    assert row["error"].startswith("outcome unknown: timeout")
    assert await quota_parts(live_db, sent["id"]) == (1, 0)
    assert await billable(live_db) == 1
    assert await audit_clean(live_db) == []
