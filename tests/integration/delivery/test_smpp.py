"""The SMPP adapter against a fake SMSC on smpp34's server API (in-process, or a child process
where the connection must really drop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Literal

import pytest

from hub.delivery.gateway import Accepted, Failed, Inbound, Outbound, Outcome, Receipt, Unknown
from hub.delivery.gateways.smpp import (
    ReceiptJoiner,
    SmppGateway,
    SmppUnavailable,
    _chunked,
    build,
    encode,
    gsm_codes,
    gsm_decode,
    read_receipt,
)
from hub.settings import GatewayConfig
from tests.peers.smsc import DROP, HOLD, FakeSmsc, SmscProcess, free_port

pytestmark = [pytest.mark.peer]

WINDOW = 4
SENDER = "10690000123456"
UNDELIVERED, INVALID = "8613900000001", "8613900000002"
LONG = "【朝阳区委组织部】" + "请各位同志于本周五下午三点到三楼会议室参加学习，带好笔记本。" * 5
ESME_RINVMSGLEN, ESME_RSYSERR, ESME_RTHROTTLED = 0x01, 0x08, 0x58
WAIT = 60.0  # seconds before a wait gives up (a hang guard, not a speed check)


class Recorded:
    """The Events sink: keeps what the adapter pushes and wakes whoever waits for it."""

    def __init__(self) -> None:
        self.got: list[Receipt] = []
        self.replies: list[Inbound] = []
        self._changed = asyncio.Condition()

    async def receipts(self, gateway: str, receipts: Sequence[Receipt]) -> None:
        async with self._changed:
            self.got += receipts
            self._changed.notify_all()

    async def inbound(self, gateway: str, replies: Sequence[Inbound]) -> None:
        async with self._changed:
            self.replies += replies
            self._changed.notify_all()

    async def until(self, ready: Callable[[], bool]) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(ready), WAIT)

    def receipt_for(self, reference: str) -> list[Receipt]:
        return [r for r in self.got if r.reference == reference]


def message(id: int, phone: str, text: str, encoding: Literal["gsm7", "ucs2"] = "ucs2") -> Outbound:
    return Outbound(id, f"+{phone}", text, 1, encoding, SENDER)


def gateway_for(port: int, **options: int) -> SmppGateway:
    config = GatewayConfig(
        name="smpp-test",
        kind="smpp",
        port=port,
        username="hub",
        password="secret",
        options={"window": WINDOW, **options},
    )
    return build(config)


async def until(ready: Callable[[], bool]) -> None:
    """Poll state the adapter and the peer keep without telling anyone (bound, binds)."""
    async with asyncio.timeout(WAIT):
        while not ready():  # noqa: ASYNC110 - nothing to wait on but the state itself
            await asyncio.sleep(0.02)


@pytest.fixture
async def smsc() -> AsyncIterator[FakeSmsc]:
    peer = FakeSmsc(undelivered={UNDELIVERED}, invalid={INVALID})
    await peer.start()
    yield peer
    await peer.stop()


@pytest.fixture
async def events() -> Recorded:
    return Recorded()


@pytest.fixture
async def gateway(smsc: FakeSmsc, events: Recorded) -> AsyncIterator[SmppGateway]:
    gateway = gateway_for(smsc.port)
    await gateway.start(events)
    yield gateway
    await gateway.close()


def references(outcomes: list[Outcome]) -> list[str]:
    assert all(isinstance(o, Accepted) for o in outcomes), outcomes
    return [o.reference for o in outcomes if isinstance(o, Accepted)]


async def test_single_and_multipart_reach_the_smsc_once_and_report_once(
    gateway: SmppGateway, smsc: FakeSmsc, events: Recorded
) -> None:
    sent = [
        message(1, "8613800138000", "【测试】您好，会议改到周五。"),
        message(2, "8613800138001", LONG),
        message(3, "8613800138002", "Meeting moved to Friday 3pm, room 301. " * 5, "gsm7"),
    ]
    refs = references(await gateway.submit(sent))

    for m in sent:
        assert smsc.messages[m.phone[1:], m.text] == 1
    long_parts = [text for (phone, text) in smsc.parts if phone == "8613800138001"]
    assert len(long_parts) == 3
    assert all(len(p) <= 67 for p in long_parts)
    assert smsc.by_id[refs[1]] == ("8613800138001", LONG[:67])  # the first part's id
    await events.until(lambda: all(events.receipt_for(r) for r in refs))
    # Every receipt of those parts is read before the next message's (one session, in order).
    refs += references(await gateway.submit([message(4, "8613800138003", "【测试】收到")]))
    await events.until(lambda: bool(events.receipt_for(refs[-1])))
    assert sorted(r.reference for r in events.got) == sorted(refs)
    assert {(r.status, r.code) for r in events.got} == {("delivered", "DELIVRD")}


async def test_an_undelivered_multipart_message_reports_undelivered_once(
    gateway: SmppGateway, events: Recorded
) -> None:
    [ref] = references(await gateway.submit([message(5, UNDELIVERED, LONG)]))
    # The batch's encoded text is not kept past it (a login code is forgotten once delivered).
    assert _chunked.cache_info().currsize == 0
    await events.until(lambda: bool(events.receipt_for(ref)))
    assert [(r.status, r.code) for r in events.receipt_for(ref)] == [("undelivered", "UNDELIV/001")]


async def test_concurrent_submits_share_the_window(gateway: SmppGateway, smsc: FakeSmsc) -> None:
    batches = [
        [message(100 * b + i, f"86138{b:03d}{i:05d}", f"【测试】第{b}批第{i}条") for i in range(25)]
        for b in range(3)
    ]
    results = await asyncio.gather(*(gateway.submit(batch) for batch in batches))
    assert len({ref for outcomes in results for ref in references(outcomes)}) == 75
    assert all(smsc.messages[m.phone[1:], m.text] == 1 for batch in batches for m in batch)


async def test_a_submit_cancelled_while_its_messages_wait_writes_none_of_them(
    gateway: SmppGateway, smsc: FakeSmsc
) -> None:
    """The window full (WINDOW submits the SMSC holds unanswered), a second call's messages wait
    for it; that call cancelled, none of them is written once the window frees on the same
    session."""
    smsc.answer_next(*[HOLD] * WINDOW)
    held = [message(200 + i, f"861380020{i:04d}", "【测试】占满窗口") for i in range(WINDOW)]
    waiting = [message(300 + i, f"861380030{i:04d}", "【测试】等待窗口") for i in range(3)]
    first = asyncio.create_task(gateway.submit(held))
    await until(lambda: smsc.received == WINDOW)
    second = asyncio.create_task(gateway.submit(waiting))
    for _ in range(5):  # loop turns, not time: its tasks start and wait for the window
        await asyncio.sleep(0)
    assert not second.done()  # waiting, not refused
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    for n, event in enumerate(smsc.unanswered):  # the held ones answered: the window frees
        event.accept(f"late{n}")
    assert len(references(await asyncio.wait_for(first, WAIT))) == WINDOW
    references(await gateway.submit([message(400, "8613800400000", "【测试】之后")]))
    assert smsc.received == WINDOW + 1  # the session stayed up, and only that one went
    assert smsc.binds == 1
    assert not any(smsc.parts[m.phone[1:], m.text] for m in waiting)


async def test_closing_answers_what_still_waited_as_never_sent(
    smsc: FakeSmsc, events: Recorded
) -> None:
    """Closed with a call's messages in flight and more not yet sent: those in flight are
    unknown (they may be at the SMSC), the others failed for now (nothing of them was written)."""
    gateway = gateway_for(smsc.port)
    await gateway.start(events)
    smsc.answer_next(*[HOLD] * WINDOW)
    sent = [message(500 + i, f"861380050{i:04d}", "【测试】关闭") for i in range(WINDOW + 2)]
    submitting = asyncio.create_task(gateway.submit(sent))
    await until(lambda: smsc.received == WINDOW)
    await gateway.close()
    outcomes = await asyncio.wait_for(submitting, WAIT)
    assert smsc.received == WINDOW
    assert [type(o) for o in outcomes] == [Unknown] * WINDOW + [Failed] * 2
    assert all(isinstance(o, Failed) and not o.permanent for o in outcomes[WINDOW:])
    with pytest.raises(SmppUnavailable):
        await gateway.submit([message(600, "8613800600000", "【测试】关闭后")])


async def test_replies_arrive_as_inbound(
    gateway: SmppGateway, smsc: FakeSmsc, events: Recorded
) -> None:
    await smsc.send_mo("8613800138000", SENDER, "收到，准时参加")
    await smsc.send_mo("8613800138001", SENDER + "9", "我" * 150)  # three parts
    await events.until(lambda: len(events.replies) == 2)
    assert events.replies == [
        Inbound(phone="8613800138000", to=SENDER, text="收到，准时参加"),
        Inbound(phone="8613800138001", to=SENDER + "9", text="我" * 150),
    ]


async def test_throttled_is_transient(gateway: SmppGateway, smsc: FakeSmsc) -> None:
    smsc.fail_next(ESME_RTHROTTLED)
    [outcome] = await gateway.submit([message(6, "8613800138000", "【测试】一")])
    # About the destination, not the SMSC: it does not count against the circuit breaker.
    assert outcome == Failed(6, permanent=False, code="ESME_RTHROTTLED", per_recipient=True)
    references(await gateway.submit([message(6, "8613800138000", "【测试】一")]))
    assert smsc.messages["8613800138000", "【测试】一"] == 1


async def test_a_submit_whose_answer_is_lost_is_unknown_and_never_sent_again(
    gateway: SmppGateway, smsc: FakeSmsc
) -> None:
    """The SMSC takes the submit_sm and the session drops before its submit_sm_resp: the SMSC
    may deliver it, so it is not sent again (a retry would reach the phone twice)."""
    smsc.answer_next(DROP)
    [outcome] = await gateway.submit([message(8, "8613800138000", "【测试】只发一次")])
    assert isinstance(outcome, Unknown), outcome
    assert (outcome.message_id, outcome.code) == (8, "no_submit_sm_resp")
    assert smsc.received == 1
    await until(lambda: smsc.binds == 2 and gateway.bound)  # the session comes back
    references(await gateway.submit([message(9, "8613800138001", "【测试】下一条")]))
    assert smsc.received == 2
    assert smsc.messages["8613800138000", "【测试】只发一次"] == 1


@pytest.mark.slow
async def test_a_submit_never_answered_times_out_unknown(
    gateway: SmppGateway, smsc: FakeSmsc
) -> None:
    """No submit_sm_resp at all, the session up: smpp34 gives up after its 30 s."""
    smsc.answer_next(HOLD)
    [outcome] = await gateway.submit([message(10, "8613800138000", "【测试】无应答")])
    assert isinstance(outcome, Unknown), outcome
    assert smsc.received == 1


async def test_a_later_part_refused_leaves_the_message_sent_in_part(
    gateway: SmppGateway, smsc: FakeSmsc, events: Recorded
) -> None:
    """Part 1 taken, part 2 refused (after 3 tries, being transient): part 1 is at the SMSC and
    billed by the carrier, so the message is Accepted for 1 part and nothing is sent again; its
    receipt is part 1's, under the message's reference."""
    smsc.answer_next(0, ESME_RTHROTTLED, ESME_RTHROTTLED, ESME_RTHROTTLED)
    [outcome] = await gateway.submit([message(11, "8613800138000", LONG)])
    assert isinstance(outcome, Accepted), outcome
    assert outcome.parts == 1
    assert "part 2/3 was refused (ESME_RTHROTTLED) after 1 accepted" in outcome.detail
    assert smsc.received == 4  # part 1 once, part 2 three times (each refused), part 3 never
    assert smsc.by_id[outcome.reference] == ("8613800138000", LONG[:67])
    await events.until(lambda: bool(events.receipt_for(outcome.reference)))
    assert [r.status for r in events.got] == ["delivered"]


async def test_a_long_message_whose_first_part_is_unanswered_is_unknown_for_that_part(
    gateway: SmppGateway, smsc: FakeSmsc
) -> None:
    smsc.answer_next(DROP)
    [outcome] = await gateway.submit([message(14, "8613800138000", LONG)])
    assert isinstance(outcome, Unknown), outcome
    assert outcome.parts == 1  # only part 1 was written: the carrier bills at most that
    assert smsc.received == 1


async def test_a_later_part_unanswered_is_never_written_again(
    gateway: SmppGateway, smsc: FakeSmsc
) -> None:
    smsc.answer_next(0, DROP)
    [outcome] = await gateway.submit([message(12, "8613800138000", LONG)])
    assert isinstance(outcome, Accepted), outcome
    assert outcome.parts == 2  # part 1 accepted, part 2 maybe
    assert "part 2/3 had no answer" in outcome.detail
    assert smsc.received == 2


async def test_a_later_part_refused_for_good_is_not_retried(
    gateway: SmppGateway, smsc: FakeSmsc
) -> None:
    smsc.answer_next(0, 0, ESME_RINVMSGLEN)
    [outcome] = await gateway.submit([message(13, "8613800138000", LONG)])
    assert isinstance(outcome, Accepted), outcome
    assert outcome.parts == 2
    assert smsc.received == 3


async def test_an_invalid_destination_is_permanent(gateway: SmppGateway) -> None:
    [outcome] = await gateway.submit([message(7, INVALID, "【测试】二")])
    assert outcome == Failed(7, permanent=True, code="ESME_RINVDSTADR")


async def test_a_session_failing_every_submit_with_syserr_is_bound_again(
    gateway: SmppGateway, smsc: FakeSmsc
) -> None:
    smsc.fail_next(ESME_RSYSERR, WINDOW)
    sent = [message(10 + i, f"861380013800{i}", f"【测试】{i}") for i in range(WINDOW)]
    outcomes = await gateway.submit(sent)
    assert {(o.permanent, o.code) for o in outcomes if isinstance(o, Failed)} == {
        (False, "ESME_RSYSERR")
    }
    assert len(outcomes) == WINDOW
    await until(lambda: smsc.binds == 2 and gateway.bound)
    references(await gateway.submit(sent))


async def test_the_peer_restarting_is_survived(tmp_path: Path) -> None:
    port = free_port()
    first, second = SmscProcess(port), SmscProcess(port, tmp_path / "counts.json")
    await first.start()
    events = Recorded()
    gateway = gateway_for(port)
    try:
        await gateway.start(events)
        references(await gateway.submit([message(20, "8613800138000", "【测试】重启前")]))
        await first.kill()
        try:
            [outcome] = await gateway.submit([message(21, "8613800138000", "【测试】重启后")])
            # Written before the drop was seen, the submit's fate is unknown; refused, it may retry.
            assert isinstance(outcome, Unknown) or (
                isinstance(outcome, Failed) and not outcome.permanent
            ), outcome
        except SmppUnavailable:
            pass  # the adapter saw the connection drop before this submit
        await second.start()
        await until(lambda: gateway.bound)
        [ref] = references(await gateway.submit([message(21, "8613800138000", "【测试】重启后")]))
        await events.until(lambda: bool(events.receipt_for(ref)))
    finally:
        await gateway.close()
        await first.kill()
        counts = await second.stop()
    assert counts["binds"] == 1
    assert counts["messages"] == [["8613800138000", "【测试】重启后", 1]]


async def test_an_smsc_that_is_not_there_makes_submit_raise() -> None:
    gateway = gateway_for(free_port())
    await gateway.start(Recorded())  # logged, retried in the background
    try:
        with pytest.raises(SmppUnavailable):
            await gateway.submit([message(30, "8613800138000", "【测试】三")])
    finally:
        await gateway.close()


# --- the pieces, without a peer


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="windw"):
        gateway_for(2775, windw=5)


def test_long_ucs2_is_cut_at_67_units_never_inside_a_surrogate_pair() -> None:
    text = "a" * 66 + "😀" + "b" * 10  # the emoji would straddle units 67 and 68
    pdus = encode(text, "ucs2", reference=7)
    assert (pdus.data_coding, pdus.esm_class) == (8, 0x40)
    bodies = [p[6:].decode("utf-16-be") for p in pdus.payloads]
    assert bodies == ["a" * 66, "😀" + "b" * 10]
    assert [p[:6] for p in pdus.payloads] == [
        b"\x05\x00\x03\x07\x02\x01",
        b"\x05\x00\x03\x07\x02\x02",
    ]
    assert len(encode("字" * 70, "ucs2", 0).payloads) == 1
    assert len(encode("字" * 71, "ucs2", 0).payloads) == 2


def test_gsm7_uses_the_default_alphabet_and_falls_back_to_ucs2() -> None:
    codes = gsm_codes("a@[€")
    assert codes == [b"a", b"\x00", b"\x1b\x3c", b"\x1b\x65"]
    assert gsm_decode(b"".join(codes)) == "a@[€"
    assert encode("x" * 160, "gsm7", 0).payloads == [b"x" * 160]
    parts = encode("x" * 152 + "[" + "y" * 10, "gsm7", 0).payloads  # the escape is not split
    assert [len(p) - 6 for p in parts] == [152, 12]
    assert encode("你好", "gsm7", 0).data_coding == 8


def test_a_text_encoded_again_gets_its_own_reference_and_list() -> None:
    first = encode("字" * 100, "ucs2", reference=1)
    first.payloads.append(b"spoiled")  # what a caller does to its list is its own
    again = encode("字" * 100, "ucs2", reference=2)  # from the memory of texts
    assert [p[:6] for p in again.payloads] == [bytes([5, 0, 3, 2, 2, n]) for n in (1, 2)]
    assert [p[6:] for p in again.payloads] == [p[6:] for p in first.payloads[:2]]
    single = encode("hello", "gsm7", 0)
    single.payloads.clear()
    assert encode("hello", "gsm7", 5).payloads == [b"hello"]


def test_receipt_text_is_read() -> None:
    zone = __import__("zoneinfo").ZoneInfo("Asia/Shanghai")
    text = "id:0A1B sub:001 dlvrd:000 submit date:2611271200 done date:2611271201 stat:REJECTD "
    receipt = read_receipt(text + "err:045 text:id:zzz stat:DELIVRD", {}, zone)
    assert receipt is not None
    assert (receipt.reference, receipt.status, receipt.code) == (
        "0A1B",
        "undelivered",
        "REJECTD/045",
    )
    assert receipt.at is not None
    assert (receipt.at.hour, receipt.at.minute) == (12, 1)
    assert read_receipt("id:1 stat:ENROUTE err:000", {}, zone) is None


def test_a_part_receipt_read_before_its_submit_resp_waits_for_it() -> None:
    joiner = ReceiptJoiner()
    delivered = Receipt("p1", "delivered", "DELIVRD")
    joiner.sending()
    assert joiner.receipt(delivered) == []  # p1's submit_sm_resp is not handled yet
    assert joiner.sent("p1", "p1", parts=2) == []  # the first part: counted, one to go
    joiner.sending()
    assert joiner.sent("p1", "p2", parts=2) == []
    assert joiner.receipt(Receipt("p2", "undelivered", "UNDELIV/001")) == [
        Receipt("p1", "undelivered", "UNDELIV/001")
    ]
    assert joiner.receipt(Receipt("single", "delivered")) == [Receipt("single", "delivered")]


def test_a_message_sent_in_part_reports_once_its_sent_parts_have() -> None:
    joiner = ReceiptJoiner()
    joiner.sending()
    assert joiner.sent("p1", "p1", parts=3) == []
    assert joiner.receipt(Receipt("p1", "delivered", "DELIVRD")) == []
    joiner.sending()
    assert joiner.sent("p1", None, parts=3) == []  # part 2 refused
    assert joiner.partial("p1", accepted=1) == [Receipt("p1", "delivered", "DELIVRD")]
    # The receipt comes after: it completes the message at once.
    joiner.sending()
    assert joiner.sent("q1", "q1", parts=2) == []
    joiner.sending()
    assert joiner.sent("q1", None, parts=2) == []
    assert joiner.partial("q1", accepted=1) == []
    assert joiner.receipt(Receipt("q1", "undelivered", "UNDELIV/001")) == [
        Receipt("q1", "undelivered", "UNDELIV/001")
    ]
