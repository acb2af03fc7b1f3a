"""The Kannel adapter against a real Kannel 1.4.5 (bearerbox, smsbox, fakesmsc) on loopback.

What the fake SMSC receives is read from fakesmsc itself; receipts and replies are the HTTP calls
Kannel really makes, caught by a small listener standing in for the hub and parsed with the
adapter's `parse_callback`, as the hub's callback endpoints will.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest

from hub.delivery.gateway import (
    Accepted,
    Failed,
    HttpCallback,
    Inbound,
    Outbound,
    Receipt,
    ReceiptStatus,
    Unknown,
)
from hub.delivery.gateways.kannel import KannelGateway, KannelUnreachable, build
from hub.messages.segments import count_segments, signed
from hub.settings import GatewayConfig
from tests.peers.kannel import HttpListener, KannelPeer, SlowAnswers, kannel

# Most tests here drive the real Kannel; the parsing ones at the end need none.
pytestmark = [pytest.mark.peer]

NAME = "kannel"
SECRET = "kannel-callback-secret"
SENDER = "1069000012345"  # the service number and a tenant's extension
RECEIPTS = f"/v1/gateways/{NAME}/receipts"
INBOUND = f"/v1/gateways/{NAME}/inbound"

# 142 characters: three UCS-2 parts of at most 67.
LONG_CHINESE = signed(
    "省委组织部",
    "各位同志：请于本周五上午九点到三楼会议室参加党员学习会议，会议时长约两小时，"
    "请准时出席并带好笔记本和党章。无法参加的同志请提前向所在支部书记请假并说明理由。"
    "会后将组织分组讨论，请各支部提前准备发言材料，每人发言不超过五分钟，"
    "讨论记录由各支部组织委员整理后于下周一前报送。",
)


class NoEvents:
    """Kannel pushes nothing on a connection of its own: its events all come over HTTP."""

    async def receipts(self, gateway: str, receipts: Sequence[Receipt]) -> None:
        raise AssertionError("kannel pushes no receipts itself")

    async def inbound(self, gateway: str, replies: Sequence[Inbound]) -> None:
        raise AssertionError("kannel pushes no replies itself")


def make_config(callback_url: str, peer: KannelPeer | None = None, **changes: Any) -> GatewayConfig:
    options: dict[str, str | int | float | bool] = {"callback_url": callback_url}
    options.update(changes.pop("options", {}))
    fields: dict[str, Any] = {
        "name": NAME,
        "kind": "kannel",
        "secret": SECRET,
        "url": peer.url if peer else "http://127.0.0.1:9",
        "username": peer.username if peer else "",
        "password": peer.password if peer else "",
        "options": options,
    }
    return GatewayConfig(**(fields | changes))


def outbound(message_id: int, phone: str, text: str, sender: str = SENDER) -> Outbound:
    segments = count_segments(text)
    return Outbound(message_id, phone, text, segments.count, segments.encoding, sender)


@pytest.fixture
async def listener() -> AsyncIterator[HttpListener]:
    server = HttpListener()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def peer(tmp_path: Path, listener: HttpListener) -> AsyncIterator[KannelPeer]:
    get_url = build(make_config(listener.url)).inbound_get_url
    async with kannel(tmp_path, get_url) as running:
        yield running


@pytest.fixture
async def gateway(peer: KannelPeer, listener: HttpListener) -> AsyncIterator[KannelGateway]:
    adapter = build(make_config(listener.url, peer))
    await adapter.start(NoEvents())
    yield adapter
    await adapter.close()


def final_receipts(gateway: KannelGateway, calls: list[HttpCallback]) -> list[Receipt]:
    return [r for call in calls for r in gateway.parse_callback("receipts", call).receipts]


async def test_messages_arrive_whole_and_receipts_name_them(
    gateway: KannelGateway, peer: KannelPeer, listener: HttpListener
) -> None:
    messages = [
        outbound(101, "+8613800138101", "Your code is 4711"),
        outbound(102, "+8613800138102", signed("组织部", "明天开会")),
        outbound(103, "+8613800138103", LONG_CHINESE),
        outbound(104, "+8613800138104", signed("组织部", "收到请回复  好的 👍")),
        outbound(105, "+8613800138105", "Meeting moved to room 3, " * 8),
        outbound(106, "+8613800138106", "Room 3\nat 9:00 (bring €5 & your ID)"),
    ]
    assert (messages[2].encoding, messages[2].segments) == ("ucs2", 3)
    assert (messages[4].encoding, messages[4].segments) == ("gsm7", 2)

    outcomes = await gateway.submit(messages)

    assert sorted(outcomes, key=lambda o: o.message_id) == [
        Accepted(m.id, str(m.id)) for m in messages
    ]
    for message in messages:
        [arrived] = await peer.wait_arrived(1, message.phone)
        assert arrived.sender == SENDER
        assert arrived.text(message.encoding) == message.text
        assert arrived.parts == message.segments
    calls = await listener.wait_for(
        RECEIPTS,
        lambda calls: (
            {r.reference for r in final_receipts(gateway, calls)} >= {str(m.id) for m in messages}
        ),
    )
    receipts = final_receipts(gateway, calls)
    assert {r.reference for r in receipts} == {str(m.id) for m in messages}
    assert {r.status for r in receipts} == {"delivered"}
    assert all(r.at is not None for r in receipts)
    assert all(call.query["secret"] == SECRET for call in calls)


async def test_intermediate_reports_give_no_receipt(
    peer: KannelPeer, listener: HttpListener
) -> None:
    """With every DLR type asked for, Kannel also reports its SMSC's ack (8); only the final
    report per message becomes a receipt."""
    adapter = build(make_config(listener.url, peer, options={"dlr_mask": 31}))
    messages = [
        outbound(201, "+8613800138201", "hello"),
        outbound(202, "+8613800138202", LONG_CHINESE),
    ]
    try:
        assert all(isinstance(o, Accepted) for o in await adapter.submit(messages))

        def both_final_and_ack(calls: list[HttpCallback]) -> bool:
            seen = {(call.query["ref"], call.query["status"]) for call in calls}
            return all((str(m.id), s) in seen for m in messages for s in ("1", "8"))

        calls = await listener.wait_for(RECEIPTS, both_final_and_ack)
    finally:
        await adapter.close()
    acks = [call for call in calls if call.query["status"] == "8"]
    assert [adapter.parse_callback("receipts", call).receipts for call in acks] == [[]] * len(acks)
    receipts = final_receipts(adapter, calls)
    assert sorted(r.reference for r in receipts) == ["201", "202"]
    assert {r.status for r in receipts} == {"delivered"}


async def test_many_messages_in_flight_at_once(peer: KannelPeer, listener: HttpListener) -> None:
    adapter = build(make_config(listener.url, peer, options={"concurrency": 8}))
    messages = [
        outbound(1000 + n, f"+86139{n:08d}", signed("组织部", f"第{n}号通知")) for n in range(60)
    ]
    try:
        outcomes = await adapter.submit(messages)
    finally:
        await adapter.close()

    assert sorted(o.message_id for o in outcomes if isinstance(o, Accepted)) == [
        m.id for m in messages
    ]
    arrived = await peer.wait_arrived(len(messages))
    assert sorted((a.phone, a.text("ucs2")) for a in arrived) == sorted(
        (m.phone, m.text) for m in messages
    )
    references = {str(m.id) for m in messages}
    calls = await listener.wait_for(
        RECEIPTS, lambda calls: {r.reference for r in final_receipts(adapter, calls)} >= references
    )
    assert {r.reference for r in final_receipts(adapter, calls)} == references


@pytest.mark.parametrize(
    ("changes", "sender", "status", "answer"),
    [
        pytest.param({"password": "wrong"}, SENDER, 403, "Authorization failed", id="password"),
        pytest.param({}, "", 400, "Sender missing", id="no-sender"),
    ],
)
async def test_a_refusal_is_permanent(
    peer: KannelPeer,
    listener: HttpListener,
    changes: dict[str, Any],
    sender: str,
    status: int,
    answer: str,
) -> None:
    adapter = build(make_config(listener.url, peer, **changes))
    try:
        [outcome] = await adapter.submit([outbound(301, "+8613800138301", "hi", sender=sender)])
    finally:
        await adapter.close()
    assert isinstance(outcome, Failed)
    assert (outcome.message_id, outcome.permanent, outcome.code) == (301, True, f"http_{status}")
    assert answer in outcome.detail


async def test_a_message_kannel_would_cut_is_refused(
    peer: KannelPeer, listener: HttpListener
) -> None:
    """Kannel drops what does not fit in the sendsms-user's max-messages; the adapter refuses
    such a message rather than let it arrive cut, and sends the rest of the batch."""
    adapter = build(make_config(listener.url, peer, options={"max_parts": 2}))
    fits = outbound(401, "+8613800138401", "你好" * 60)  # 122 characters: 2 parts
    too_long = outbound(402, "+8613800138402", LONG_CHINESE)  # 3 parts
    try:
        outcomes = await adapter.submit([fits, too_long])
    finally:
        await adapter.close()
    assert outcomes[0] == Accepted(401, "401")
    assert isinstance(outcomes[1], Failed)
    assert (outcomes[1].permanent, outcomes[1].code) == (True, "too_long")
    [arrived] = await peer.wait_arrived(1, fits.phone)
    assert arrived.text("ucs2") == fits.text


async def test_while_its_smsc_is_down_kannel_queues(
    gateway: KannelGateway, peer: KannelPeer, listener: HttpListener
) -> None:
    """Kannel answers `3: Queued for later delivery` while no SMSC is connected: accepted, and
    delivered (with its receipt) once the link is back."""
    await peer.disconnect_smsc()
    messages = [
        outbound(701, "+8613800138701", "hi"),
        outbound(702, "+8613800138702", LONG_CHINESE),
    ]

    outcomes = await gateway.submit(messages)

    assert outcomes == [Accepted(701, "701"), Accepted(702, "702")]
    assert peer.arrived() == []  # no fake SMSC client is connected: nothing could have arrived
    await peer.connect_smsc()
    arrived = {a.phone: a for a in await peer.wait_arrived(2)}
    assert [arrived[m.phone].text(m.encoding) for m in messages] == [m.text for m in messages]
    calls = await listener.wait_for(
        RECEIPTS, lambda calls: len(final_receipts(gateway, calls)) >= 2
    )
    assert sorted(r.reference for r in final_receipts(gateway, calls)) == ["701", "702"]


async def test_kannel_down_raises(gateway: KannelGateway, peer: KannelPeer) -> None:
    """smsbox not answering at all: the batch is not the messages' fault, so the whole call
    fails and the worker retries every message (even with connections kept from before)."""
    assert await gateway.submit([outbound(501, "+8613800138501", "hi")]) == [Accepted(501, "501")]
    await peer.stop()
    with pytest.raises(KannelUnreachable):
        await gateway.submit(
            [outbound(502, "+8613800138502", "hi"), outbound(503, "+8613800138503", "hi")]
        )


async def test_an_answer_that_comes_too_late_leaves_the_outcome_unknown(
    peer: KannelPeer, listener: HttpListener
) -> None:
    """smsbox took the message, its answer came after the timeout: sent, maybe; never again."""
    proxy = SlowAnswers(peer.ports["sendsms_port"])
    await proxy.start()
    proxy.hold_next(1, 2.0)
    adapter = build(make_config(listener.url, peer, url=proxy.url, options={"timeout": 0.3}))
    await adapter.start(NoEvents())
    try:
        [outcome] = await adapter.submit([outbound(601, "+8613800138601", "明早八点开会")])
        assert isinstance(outcome, Unknown), outcome
        assert (outcome.message_id, outcome.code) == (601, "timeout")
        assert len(await peer.wait_arrived(1, "+8613800138601")) == 1  # Kannel had it
    finally:
        await adapter.close()
        await proxy.close()


async def test_a_reply_reaches_the_sms_service(
    gateway: KannelGateway, peer: KannelPeer, listener: HttpListener
) -> None:
    text = "收到，准时参加  谢谢 👍"  # two spaces and an emoji: nothing squeezed or lost
    await peer.inject("+8613800138601", SENDER + "42", text)

    [call] = await listener.wait_for(INBOUND, lambda calls: len(calls) >= 1)

    assert call.query["secret"] == SECRET
    parsed = gateway.parse_callback("inbound", call)
    [reply] = parsed.replies
    assert (reply.phone, reply.to, reply.text) == ("+8613800138601", SENDER + "42", text)
    assert reply.reference
    assert reply.at is not None
    assert parsed.receipts == []
    assert parsed.answer.status == 200


# Parsing what Kannel sends in cases the fake SMSC cannot produce.


def query_call(**query: str) -> HttpCallback:
    return HttpCallback(method="GET", query=query, headers={}, body=b"")


@pytest.fixture
def parser() -> KannelGateway:
    return build(make_config("http://127.0.0.1:8000"))


@pytest.mark.parametrize(
    ("status", "expected"),
    [("1", "delivered"), ("2", "undelivered"), ("16", "undelivered"), ("4", None), ("8", None)],
)
def test_dlr_types(parser: KannelGateway, status: str, expected: ReceiptStatus | None) -> None:
    call = query_call(ref="77", status=status, code="ACK/", at="1795750699")
    at = datetime(2026, 11, 27, 3, 38, 19, tzinfo=UTC)
    receipts = parser.parse_callback("receipts", call).receipts
    assert receipts == ([Receipt("77", expected, "ACK/", at)] if expected else [])


@pytest.mark.parametrize(
    ("smsc_answer", "code"),
    [
        ("id:0a1b sub:001 dlvrd:001 submit date:2611270338 stat:DELIVRD err:000 text:x", "DELIVRD"),
        (
            "id:0a1b sub:001 dlvrd:000 submit date:2611270338 stat:UNDELIV err:011 text:",
            "UNDELIV/011",
        ),
        (
            "NACK/0x0000000b/Invalid Destination Address",
            "NACK/0x0000000b/Invalid Destination Address",
        ),
        ("", ""),
    ],
)
def test_receipt_codes(parser: KannelGateway, smsc_answer: str, code: str) -> None:
    """An SMPP SMSC's receipt text gives `stat` (and a non-zero `err`), as the SMPP adapter
    reports them; any other answer is kept as Kannel gave it."""
    call = query_call(ref="77", status="2", code=smsc_answer)
    [receipt] = parser.parse_callback("receipts", call).receipts
    assert receipt.code == code


@pytest.mark.parametrize(
    ("kind", "query", "reason"),
    [
        ("receipts", {"status": "1"}, "kannel callback without `ref`"),
        ("receipts", {"ref": "1", "status": "%d"}, "is not a DLR type"),
        ("receipts", {"ref": "1", "status": "1", "at": "9" * 30}, "out of range"),
        ("receipts", {"ref": "1\x00", "status": "1"}, "reference '1\\x00' holds a control"),
        ("inbound", {"to": "1069", "text": "x"}, "kannel callback without `from`"),
        (
            "inbound",
            {"from": "1", "to": "1069", "text": "V\x0dY", "charset": "UTF-16BE"},
            "mo-recode",
        ),
        ("inbound", {"from": "1", "to": "1069", "text": "a\x00b"}, "text holds a NUL character"),
        ("inbound", {"from": "1", "to": "1069", "text": "x" * 40_801}, "more than 40800"),
    ],
)
def test_a_malformed_callback_is_its_only_item_rejected(
    parser: KannelGateway, kind: Literal["receipts", "inbound"], query: dict[str, str], reason: str
) -> None:
    parsed = parser.parse_callback(kind, query_call(**query))
    assert (parsed.receipts, parsed.replies) == ([], [])
    [rejected] = parsed.rejected
    assert rejected.index == 0
    assert reason in rejected.reason


@pytest.mark.parametrize(
    ("options", "secret"),
    [
        ({}, SECRET),
        ({"callback_url": "http://hub/%d"}, SECRET),
        ({"callback_url": "http://hub", "window": 5}, SECRET),
        ({"callback_url": "http://hub", "concurrency": 0}, SECRET),
        ({"callback_url": "http://hub"}, ""),
        ({"callback_url": "http://hub"}, "50%off"),
    ],
)
def test_configuration_errors(options: dict[str, str | int | float | bool], secret: str) -> None:
    config = GatewayConfig(
        name=NAME, kind="kannel", url="http://127.0.0.1:13013", secret=secret, options=options
    )
    with pytest.raises(ValueError, match="kannel gateway"):
        build(config)
