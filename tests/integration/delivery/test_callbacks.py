"""Gateway callbacks (secret, forward-only receipts, unknown references) and replies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, time, timedelta

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis

from hub import calendar
from hub.db import PoolDatabase, SingleConnectionDatabase, create_pool
from hub.delivery import inbound, service
from hub.delivery.gateway import Inbound, Receipt
from hub.delivery.gateways.smpp import build as build_smpp
from hub.settings import DeliverySettings, GatewayConfig, Settings
from tests.factories import bearer, hold_references, make_key
from tests.integration.delivery.conftest import (
    SECRET,
    eventually,
    live_client,
    with_gateways,
)
from tests.peers.smsc import FakeSmsc

GATEWAY = GatewayConfig(name="outbox", kind="outbox", secret=SECRET)


async def _sent_message(conn: asyncpg.Connection, reference: str, gateway: str = "outbox") -> int:
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
            " VALUES ($1, $2, '+8613800138000', '中国移动', 'sent', 1, $4, $3, hub_now())"
            " RETURNING id",
            send_id,
            tenant_id,
            reference,
            gateway,
        )
    )
    await hold_references(conn, message)
    return message


async def test_a_receipt_matches_only_a_message_still_holding_its_reference(
    live_db: asyncpg.Connection, county_key: str
) -> None:
    """Receipts look a reference up in `message_references`, and what it says is checked on the
    message: a row naming a reference its message no longer holds matches nothing."""
    message = await _sent_message(live_db, "ref-now")
    await live_db.execute(
        "UPDATE message_references SET reference = 'ref-before' WHERE message_id = $1", message
    )
    async with live_db.transaction():
        receipt = Receipt("ref-before", "delivered", "DELIVRD")
        assert await service.apply_receipts(live_db, GATEWAY, [receipt]) == (0, 1, [])
    status = await live_db.fetchval("SELECT status::text FROM messages WHERE id = $1", message)
    assert status == "sent"
    kept = await live_db.fetchval("SELECT reference FROM unmatched_receipts")
    assert kept == "ref-before"


async def test_a_late_receipt_counts_on_the_day_its_message_went_out(
    live_db: asyncpg.Connection, county_key: str
) -> None:
    """Billed on delivery: a receipt after midnight (after a month's end, too) is usage of the
    day the message was sent, so the month's close, after its grace window, bills it."""
    message = await _sent_message(live_db, "ref-late")
    midnight = datetime.combine(calendar.business_day(), time(0), calendar.BUSINESS_TZ)
    sent_at = midnight - timedelta(minutes=10)  # 23:50 yesterday, Beijing time
    await live_db.execute("UPDATE messages SET sent_at = $2 WHERE id = $1", message, sent_at)
    on_delivery = msgspec.structs.replace(GATEWAY, bills_on="delivered")
    async with live_db.transaction():
        receipt = Receipt("ref-late", "delivered", "DELIVRD")
        assert await service.apply_receipts(live_db, on_delivery, [receipt]) == (1, 0, [])
    entries = await live_db.fetch("SELECT day, kind::text AS kind, segments FROM usage_entries")
    yesterday = calendar.business_day() - timedelta(days=1)
    assert sorted((r["day"], r["kind"], r["segments"]) for r in entries) == [
        (yesterday, "billable", 1),
        (yesterday, "delivered", 1),
    ]


async def test_receipts_move_forward_only_and_unknown_ones_are_kept(
    live_db: asyncpg.Connection, county_key: str
) -> None:
    message = await _sent_message(live_db, "ref-1")
    delivered = Receipt("ref-1", "delivered", "DELIVRD")
    async with live_db.transaction():
        assert await service.apply_receipts(live_db, GATEWAY, [delivered]) == (1, 0, [])
    # The same receipt again, and a late "undelivered": nothing changes.
    async with live_db.transaction():
        assert await service.apply_receipts(
            live_db, GATEWAY, [delivered, Receipt("ref-1", "undelivered", "X")]
        ) == (0, 0, [])
    status = await live_db.fetchval("SELECT status::text FROM messages WHERE id = $1", message)
    assert status == "delivered"
    async with live_db.transaction():
        nobody = Receipt("nobody", "delivered")
        assert await service.apply_receipts(live_db, GATEWAY, [nobody]) == (0, 1, [])
    assert await live_db.fetchval("SELECT count(*) FROM unmatched_receipts") == 1


async def test_a_receipt_before_its_sent_is_applied_once_sent_is_recorded(
    live_db: asyncpg.Connection, county_key: str
) -> None:
    message = await _sent_message(live_db, "ref-2")
    await live_db.execute(
        "UPDATE messages SET status = 'sending', reference = NULL, submitted_at = hub_now()"
        " WHERE id = $1",
        message,
    )
    async with live_db.transaction():
        await service.apply_receipts(live_db, GATEWAY, [Receipt("ref-2", "delivered")])
    await live_db.execute(
        "UPDATE messages SET status = 'sent', reference = 'ref-2', sent_at = hub_now()"
        " WHERE id = $1",
        message,
    )
    async with live_db.transaction():
        taken = await service.apply_late_receipts(live_db, DeliverySettings(gateways=[GATEWAY]))
    assert taken == (1, 0, [])  # applied, none kept again, no heir
    status = await live_db.fetchval("SELECT status::text FROM messages WHERE id = $1", message)
    assert status == "delivered"


async def _status(conn: asyncpg.Connection, message: int) -> str:
    return str(await conn.fetchval("SELECT status::text FROM messages WHERE id = $1", message))


async def test_a_receipt_reaches_only_the_newest_message_holding_its_reference(
    live_db: asyncpg.Connection, county_key: str
) -> None:
    """A gateway that reused an id (an SMSC restarted): the receipt is the newer message's."""
    old = await _sent_message(live_db, "reused")
    await live_db.execute(
        "UPDATE messages SET sent_at = sent_at - interval '1 hour' WHERE id = $1", old
    )
    new = await _sent_message(live_db, "reused")
    async with live_db.transaction():
        receipt = Receipt("reused", "delivered", "DELIVRD")
        assert await service.apply_receipts(live_db, GATEWAY, [receipt]) == (1, 0, [])
    assert (await _status(live_db, old), await _status(live_db, new)) == ("sent", "delivered")
    # A repeat of it changes nothing, and never falls through to the older message.
    async with live_db.transaction():
        assert await service.apply_receipts(live_db, GATEWAY, [receipt]) == (0, 0, [])
    assert await _status(live_db, old) == "sent"


async def test_a_receipt_past_the_window_of_the_message_holding_it_is_kept_not_applied(
    live_db: asyncpg.Connection, county_key: str
) -> None:
    old = await _sent_message(live_db, "stale")
    await live_db.execute(
        "UPDATE messages SET sent_at = hub_now() - make_interval(secs => $2) - interval '1 s'"
        " WHERE id = $1",
        old,
        GATEWAY.receipt_window_seconds,
    )
    async with live_db.transaction():
        receipt = Receipt("stale", "delivered", "DELIVRD")
        assert await service.apply_receipts(live_db, GATEWAY, [receipt]) == (0, 1, [])
    assert await _status(live_db, old) == "sent"
    assert await live_db.fetchval("SELECT count(*) FROM unmatched_receipts") == 1


async def test_an_early_receipt_for_a_reused_id_waits_for_its_message(
    live_db: asyncpg.Connection, county_key: str
) -> None:
    """An old message, final days ago, held the id; the receipt is for a new message not yet
    recorded `sent`: it is kept (not dropped as a repeat) and reaches the new message."""
    old = await _sent_message(live_db, "again")
    await live_db.execute(
        "UPDATE messages SET status = 'delivered', sent_at = sent_at - interval '4 days'"
        " WHERE id = $1",
        old,
    )
    new = await _sent_message(live_db, "again")
    await live_db.execute(
        "UPDATE messages SET status = 'sending', reference = NULL, submitted_at = hub_now()"
        " WHERE id = $1",
        new,
    )
    async with live_db.transaction():
        receipt = Receipt("again", "undelivered", "UNDELIV")
        assert await service.apply_receipts(live_db, GATEWAY, [receipt]) == (0, 1, [])
    await live_db.execute(
        "UPDATE messages SET status = 'sent', reference = 'again', sent_at = hub_now()"
        " WHERE id = $1",
        new,
    )
    async with live_db.transaction():
        late = await service.apply_late_receipts(live_db, DeliverySettings(gateways=[GATEWAY]))
        assert late == (1, 0, [])
    assert (await _status(live_db, old), await _status(live_db, new)) == (
        "delivered",
        "undelivered",
    )


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


# --- one bad item among good ones ------------------------------------------------------------

ALIYUN = GatewayConfig(
    name="ali",
    kind="aliyun",
    secret=SECRET,
    username="access-key-id",
    password="access-key-secret",
    options={"template_code": "SMS_1"},
)
KANNEL = GatewayConfig(
    name="kannel",
    kind="kannel",
    secret=SECRET,
    url="http://127.0.0.1:9",
    options={"callback_url": "http://hub.test"},
)


@pytest.fixture
async def gateway_api(live_settings: Settings, redis: ArqRedis) -> AsyncIterator[httpx.AsyncClient]:
    """The hub's API with an Alibaba and a Kannel gateway beside the outbox."""
    settings = with_gateways(live_settings, *live_settings.delivery.gateways, ALIYUN, KANNEL)
    async for api in live_client(settings, redis):
        yield api


async def _extension(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SELECT sms_extension FROM tenants WHERE code = '510104'"))


async def address_of(conn: asyncpg.Connection) -> str:
    return DeliverySettings().service_number + await _extension(conn)


async def test_an_alibaba_receipt_push_with_bad_entries_records_the_good_one(
    live_db: asyncpg.Connection,
    county_key: str,
    gateway_api: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    message = await _sent_message(live_db, "BIZ1:13800138000", gateway="ali")
    good = {"phone_number": "13800138000", "success": True, "biz_id": "BIZ1", "err_code": "OK"}
    push = [
        good,
        {"phone_number": "13800138001", "biz_id": "BIZ1"},  # no `success`
        {"phone_number": 13800138002, "success": True, "biz_id": "BIZ1"},  # a number
        {"phone_number": "13800138003", "success": True, "biz_id": "BIZ\x001"},  # a NUL
        {
            "phone_number": "13800138004",
            "success": False,
            "biz_id": "BIZ1",
            "err_code": "E" * 10**5,
        },
        "not an entry",
    ]
    resp = await gateway_api.post("/v1/gateways/ali/receipts", params={"secret": SECRET}, json=push)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    # Acknowledged as Alibaba expects (code 0: it does not push the good one again) ...
    assert (answer["code"], answer["msg"]) == (0, "接收成功")
    # ... naming each bad entry and why.
    reasons = {r["index"]: r["reason"] for r in answer["rejected"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    assert "missing required field `success`" in reasons[1]
    assert "Expected `str`, got `int`" in reasons[2]
    assert "control" in reasons[3]
    assert "code is 100000 characters long" in reasons[4]
    assert "Expected `object`" in reasons[5]
    status = await live_db.fetchval("SELECT status::text FROM messages WHERE id = $1", message)
    assert status == "delivered"
    assert await live_db.fetchval("SELECT count(*) FROM unmatched_receipts") == 0
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 5
    assert all(line.startswith("gateway ali: receipts item ") for line in refused)


async def test_an_alibaba_reply_push_with_bad_entries_stores_the_good_one(
    live_db: asyncpg.Connection, county_key: str, gateway_api: httpx.AsyncClient
) -> None:
    to = await _extension(live_db)
    push = [
        {"phone_number": "13800138000", "content": "收到", "dest_code": to, "sequence_id": 1},
        {"phone_number": "13800138001", "content": "收\x00到", "dest_code": to, "sequence_id": 2},
        {"phone_number": "13800138002", "content": 3, "dest_code": to, "sequence_id": 3},
        {"content": "收到", "dest_code": to, "sequence_id": 4},  # no phone
        {"phone_number": "13800138004", "content": "长" * 50_000, "dest_code": to},
        {"phone_number": "13800138005", "content": "x", "dest_code": to, "sequence_id": [[[]]]},
    ]
    resp = await gateway_api.post("/v1/gateways/ali/inbound", params={"secret": SECRET}, json=push)
    assert resp.status_code == 200, resp.text
    assert [r["index"] for r in resp.json()["rejected"]] == [1, 2, 3, 4, 5]
    rows = await live_db.fetch("SELECT phone, text, reference FROM inbound")
    assert [tuple(r) for r in rows] == [("+8613800138000", "收到", "1")]


async def test_an_alibaba_push_with_nothing_good_is_400(
    live_db: asyncpg.Connection, county_key: str, gateway_api: httpx.AsyncClient
) -> None:
    push = [{"phone_number": "13800138001", "content": "\x00", "dest_code": "1"}]
    resp = await gateway_api.post("/v1/gateways/ali/inbound", params={"secret": SECRET}, json=push)
    assert resp.status_code == 400, resp.text
    answer = resp.json()
    assert answer["error"] == "bad_callback"
    assert "item 0: text holds a NUL character" in answer["detail"]
    assert answer["rejected"] == [{"index": 0, "reason": "text holds a NUL character"}]
    assert await live_db.fetchval("SELECT count(*) FROM inbound") == 0


@pytest.mark.parametrize(
    ("kind", "query", "reason"),
    [
        ("inbound", {"from": "1380013800\x00", "text": "收到"}, "phone '1380013800\\x00'"),
        ("inbound", {"from": "13800138000", "text": "收\x00到"}, "text holds a NUL character"),
        ("inbound", {"from": "13800138000", "text": "x" * 40_801}, "more than 40800"),
        ("receipts", {"ref": "77", "status": "1", "at": "9" * 25}, "out of range"),
        ("receipts", {"ref": "7\x007", "status": "1"}, "reference '7\\x007'"),
    ],
)
async def test_a_bad_kannel_callback_is_400_never_500(
    live_db: asyncpg.Connection,
    county_key: str,
    gateway_api: httpx.AsyncClient,
    kind: str,
    query: dict[str, str],
    reason: str,
) -> None:
    params = {"secret": SECRET, "to": await address_of(live_db), **query}
    resp = await gateway_api.post(f"/v1/gateways/kannel/{kind}", params=params)
    assert resp.status_code == 400, resp.text
    answer = resp.json()
    assert answer["error"] == "bad_callback"
    [rejected] = answer["rejected"]
    assert reason in rejected["reason"]
    assert await live_db.fetchval("SELECT count(*) FROM inbound") == 0


async def test_what_an_adapter_pushes_is_stored_but_its_bad_items(
    live_db: asyncpg.Connection,
    live_settings: Settings,
    redis: ArqRedis,
    county_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The Recorder, as SMPP and the outbox push to it: one bad item never fails the batch
    (the adapter would retry it for ever, holding back everything after it)."""
    recorder = service.Recorder(SingleConnectionDatabase(live_db), live_settings, redis)
    message = await _sent_message(live_db, "outbox-1")
    to = await address_of(live_db)
    await recorder.inbound(
        "outbox",
        [
            Inbound("13800138000", to, "收\x00到"),
            Inbound("13800138001", to, "收到"),
            Inbound("1380013800\x002", to, "收到"),
            Inbound("13800138003", to, "\ud800"),
            Inbound("13800138004", to, "x" * 40_801),
        ],
    )
    await recorder.receipts(
        "outbox",
        [Receipt("outbox-\x001", "delivered"), Receipt("outbox-1", "delivered", "DELIVRD")],
    )
    rows = await live_db.fetch("SELECT phone, text FROM inbound")
    assert [tuple(r) for r in rows] == [("+8613800138001", "收到")]
    status = await live_db.fetchval("SELECT status::text FROM messages WHERE id = $1", message)
    assert status == "delivered"
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused == [
        "gateway outbox: reply 0 of 5 refused: 'text holds a NUL character'",
        "gateway outbox: reply 2 of 5 refused: \"phone '1380013800\\\\x002' holds a control or "
        'unprintable character"',
        "gateway outbox: reply 3 of 5 refused: 'text is not valid Unicode'",
        "gateway outbox: reply 4 of 5 refused: 'text is 40801 characters long, more than 40800'",
        "gateway outbox: receipt 0 of 2 refused: \"reference 'outbox-\\\\x001' holds a control or "
        'unprintable character"',
    ]


@pytest.mark.peer
async def test_a_reply_with_a_nul_over_smpp_does_not_hold_back_the_next(
    live_db: asyncpg.Connection, live_settings: Settings, redis: ArqRedis, county_key: str
) -> None:
    smsc = FakeSmsc()
    await smsc.start()
    smpp = build_smpp(
        GatewayConfig(name="smpp", kind="smpp", port=smsc.port, username="hub", password="secret")
    )
    assert live_settings.db.dsn
    pool = PoolDatabase(await create_pool(live_settings.db, live_settings.db.dsn))
    try:
        await smpp.start(service.Recorder(pool, live_settings, redis))
        to = await address_of(live_db)
        await smsc.send_mo("8613800138000", to, "收\x00到")  # UCS-2: the NUL arrives as sent
        await smsc.send_mo("8613800138001", to, "收到")

        async def stored() -> bool:
            return bool(await live_db.fetchval("SELECT count(*) FROM inbound"))

        await eventually(stored, patience=30)
    finally:
        await smpp.close()
        await smsc.stop()
        await pool.close()
    rows = await live_db.fetch("SELECT phone, text FROM inbound")
    assert [tuple(r) for r in rows] == [("+8613800138001", "收到")]


async def test_a_receipt_for_a_message_closed_as_outcome_unknown_counts_it_once(
    live_db: asyncpg.Connection, county_key: str
) -> None:
    """Closed as "outcome unknown", a message was counted used and billable then (as if
    accepted); its receipt, once the gateway is asked, only tells what became of it."""
    message = await _sent_message(live_db, "ref-unknown")
    await live_db.execute(
        "UPDATE messages SET error = 'outcome unknown: its worker stopped' WHERE id = $1", message
    )
    on_delivery = msgspec.structs.replace(GATEWAY, bills_on="delivered")
    async with live_db.transaction():
        receipt = Receipt("ref-unknown", "delivered", "DELIVRD")
        assert await service.apply_receipts(live_db, on_delivery, [receipt]) == (1, 0, [])
    kinds = await live_db.fetch("SELECT kind::text AS kind, segments FROM usage_entries")
    assert [(r["kind"], r["segments"]) for r in kinds] == [("delivered", 1)]
    assert await _status(live_db, message) == "delivered"


async def test_a_receipt_kept_for_a_message_past_its_window_is_not_taken_again(
    live_db: asyncpg.Connection, county_key: str
) -> None:
    """A receipt kept as unmatched whose message is past its receipt window can never apply:
    the sweeper leaves it (its `received_at` unchanged) for the purge, not a new life each round."""
    message = await _sent_message(live_db, "too-late")
    await live_db.execute(
        "UPDATE messages SET submitted_at = hub_now() - interval '1 hour',"
        " sent_at = hub_now() - make_interval(secs => $2) - interval '1 s' WHERE id = $1",
        message,
        GATEWAY.receipt_window_seconds,
    )
    await live_db.execute(
        "INSERT INTO unmatched_receipts (gateway, reference, status, code, received_at)"
        " VALUES ('outbox', 'too-late', 'delivered', 'DELIVRD', hub_now() - interval '1 minute')"
    )
    before = await live_db.fetchval("SELECT received_at FROM unmatched_receipts")
    async with live_db.transaction():
        late = await service.apply_late_receipts(live_db, DeliverySettings(gateways=[GATEWAY]))
    assert late == (0, 0, [])
    assert await live_db.fetchval("SELECT received_at FROM unmatched_receipts") == before
    assert await _status(live_db, message) == "sent"
