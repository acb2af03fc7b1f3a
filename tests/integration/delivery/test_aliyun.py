"""The aliyun adapter against a fake Alibaba Cloud SMS provider over real HTTP
(tests/peers/aliyun.py).

The signature itself is checked against the two worked examples Alibaba publishes (the ECS
DescribeRegions example and the SMS SendSms example), so adapter and fake cannot agree on a wrong
algorithm.
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import httpx
import msgspec
import pytest

from hub.delivery.gateway import (
    Accepted,
    CallbackAnswer,
    Failed,
    HttpCallback,
    Inbound,
    Outbound,
    Outcome,
    Parsed,
    Receipt,
    Unknown,
)
from hub.delivery.gateways import aliyun
from hub.settings import GatewayConfig
from tests.peers import wall_clock
from tests.peers.aliyun import AliyunFake, Receive, Scope, Send, running, serve

pytestmark = [pytest.mark.peer]

SIGN = "朝阳区委组织部"
OTHER_SIGN = "成都市委组织部"
BODY = "请各党支部于本周五前报送学习材料，逾期不候。回T退订"
TEXT = f"【{SIGN}】{BODY}"
ACK_BODY = '{"code":0,"msg":"接收成功"}'.encode()


class _NoEvents:
    async def receipts(self, gateway: str, receipts: Sequence[Receipt]) -> None:
        raise AssertionError("the aliyun adapter pushes nothing itself")

    async def inbound(self, gateway: str, replies: Sequence[Inbound]) -> None:
        raise AssertionError("the aliyun adapter pushes nothing itself")


class CallbackListener:
    """Plays the hub's /v1/gateways/{name}/receipts|inbound endpoint for the fake's pushes."""

    def __init__(self, gateway: aliyun.AliyunGateway, *, busy_first: int = 0) -> None:
        self.gateway = gateway
        self.busy_first = busy_first  # answer 503 to this many pushes first
        self.parsed: list[Parsed] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        call = HttpCallback(
            method=scope["method"],
            query=dict(parse_qsl(scope["query_string"].decode())),
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            body=body,
        )
        answer = self._answer(scope["path"], call)
        headers = [(b"content-type", answer.media_type.encode())]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})

    def _answer(self, path: str, call: HttpCallback) -> CallbackAnswer:
        if self.busy_first > 0:
            self.busy_first -= 1
            return CallbackAnswer(503, b"busy", "text/plain")
        try:
            parsed = self.gateway.parse_callback(
                "receipts" if path.endswith("/receipts") else "inbound", call
            )
        except ValueError as exc:  # what the hub does with a malformed callback
            return CallbackAnswer(400, str(exc).encode(), "text/plain")
        if parsed.rejected and not (parsed.receipts or parsed.replies):  # and with one of
            return CallbackAnswer(400, b"nothing could be taken", "text/plain")  # bad items only
        self.parsed.append(parsed)
        return parsed.answer


def message(id: int, phone: str, text: str = TEXT) -> Outbound:
    return Outbound(
        id=id, phone=phone, text=text, segments=1, encoding="ucs2", sender="10690000100042"
    )


def phones(count: int, start: int = 13800000000) -> list[str]:
    return [f"+86{start + n}" for n in range(count)]


def config(fake: AliyunFake, **options: str | int | float | bool) -> GatewayConfig:
    return GatewayConfig(
        name="ali",
        kind="aliyun",
        url=fake.url,
        username=fake.access_key_id,
        password=fake.secret,
        options={"template_code": fake.template_code, "sign_name": SIGN, **options},
    )


def by_id(outcomes: Sequence[Outcome]) -> dict[int, Outcome]:
    found = {outcome.message_id: outcome for outcome in outcomes}
    assert len(found) == len(outcomes), "one outcome per message"
    return found


@pytest.fixture
def fake() -> Iterator[AliyunFake]:
    """A provider per test: a request still in flight from another test cannot be counted here."""
    with running(AliyunFake(sign_names=[SIGN, OTHER_SIGN])) as provider:
        yield provider


@pytest.fixture
async def gateway(fake: AliyunFake) -> AsyncIterator[aliyun.AliyunGateway]:
    built = aliyun.build(config(fake))
    await built.start(_NoEvents())
    yield built
    await built.close()


async def gateway_with(fake: AliyunFake, **changes: object) -> aliyun.AliyunGateway:
    options = changes.pop("options", {})
    assert isinstance(options, dict)
    settings = msgspec.structs.replace(config(fake, **options), **changes)
    return aliyun.build(settings)


# ---- sending ---------------------------------------------------------------------------------


async def test_a_batch_is_accepted_and_reaches_the_provider_with_its_exact_text(
    gateway: aliyun.AliyunGateway, fake: AliyunFake
) -> None:
    numbers = phones(150)
    outcomes = by_id(await gateway.submit([message(i, p) for i, p in enumerate(numbers)]))

    assert fake.calls == 2  # 100 + 50: PhoneNumberJson takes at most 100
    references = set()
    for i, phone in enumerate(numbers):
        outcome = outcomes[i]
        assert isinstance(outcome, Accepted)
        biz_id, _, national = outcome.reference.rpartition(":")
        assert national == phone.removeprefix("+86")
        assert biz_id.endswith("^0")
        assert fake.count(national, TEXT) == 1
        references.add(outcome.reference)
    assert len(references) == 150
    assert {s.out_id for s in fake.sent} == {"0", "100"}  # the first message id of each request
    # Each phone carries the tenant's extension, which comes back as a reply's dest_code.
    assert {s.extend_code for s in fake.sent} == {"100042"}


async def test_each_signature_and_body_goes_in_requests_of_its_own(
    gateway: aliyun.AliyunGateway, fake: AliyunFake
) -> None:
    other = f"【{OTHER_SIGN}】请于明日上午九点到会议室开会。"
    plain = "请于周五前提交材料。"  # no 【】: the sign_name option is used
    batch = [
        message(1, "+8613800000001"),
        message(2, "+8613800000002", other),
        message(3, "+8613800000003"),
        message(4, "+8613800000004", plain),
        message(5, "+8613800000001", other),
    ]
    outcomes = by_id(await gateway.submit(batch))

    assert all(isinstance(o, Accepted) for o in outcomes.values())
    assert fake.calls == 3
    assert fake.count("13800000001", TEXT) == fake.count("13800000003", TEXT) == 1
    assert fake.count("13800000002", other) == fake.count("13800000001", other) == 1
    assert fake.count("13800000004", f"【{SIGN}】{plain}") == 1


async def test_the_same_phone_twice_goes_in_two_requests(
    gateway: aliyun.AliyunGateway, fake: AliyunFake
) -> None:
    outcomes = await gateway.submit([message(1, "+8613800000001"), message(2, "+8613800000001")])

    references = {o.reference for o in outcomes if isinstance(o, Accepted)}
    assert len(references) == 2
    assert fake.calls == 2
    assert fake.count("13800000001", TEXT) == 2


async def test_an_illegal_number_fails_alone_and_nobody_gets_a_message_twice(
    gateway: aliyun.AliyunGateway, fake: AliyunFake
) -> None:
    numbers = phones(10)
    fake.illegal_numbers.add("13800000007")
    outcomes = by_id(await gateway.submit([message(i, p) for i, p in enumerate(numbers)]))

    bad = outcomes[7]
    assert isinstance(bad, Failed)
    assert bad.permanent
    assert bad.code == "isv.MOBILE_NUMBER_ILLEGAL"
    for i, phone in enumerate(numbers):
        if i != 7:
            assert isinstance(outcomes[i], Accepted)
            assert fake.count(phone.removeprefix("+86"), TEXT) == 1
    assert fake.count("13800000007", TEXT) == 0
    # Halving 10 → 5 → 3 → 1 to find it: 7 requests, not one per phone.
    assert fake.answers.count("isv.MOBILE_NUMBER_ILLEGAL") == 4
    assert fake.calls == 7


async def test_a_number_outside_the_mainland_fails_without_a_request(
    gateway: aliyun.AliyunGateway, fake: AliyunFake
) -> None:
    outcomes = by_id(
        await gateway.submit([message(1, "+85291234567"), message(2, "+8613800000002")])
    )

    assert outcomes[1] == Failed(
        1,
        permanent=True,
        code="number_not_supported",
        detail="SendBatchSms takes mainland China mobile numbers only",
        per_recipient=True,
    )
    assert isinstance(outcomes[2], Accepted)
    assert fake.calls == 1


async def test_limit_control_is_transient(gateway: aliyun.AliyunGateway, fake: AliyunFake) -> None:
    fake.fail_next(100, "isv.BUSINESS_LIMIT_CONTROL")
    outcomes = await gateway.submit([message(i, p) for i, p in enumerate(phones(3))])

    assert {(o.permanent, o.code) for o in outcomes if isinstance(o, Failed)} == {
        (False, "isv.BUSINESS_LIMIT_CONTROL")
    }
    assert len(outcomes) == 3
    assert fake.sent == []
    assert fake.calls == 5  # the request and its halves down to single phones: 2n - 1


async def test_limit_control_on_one_phone_does_not_hold_back_the_others(
    gateway: aliyun.AliyunGateway, fake: AliyunFake
) -> None:
    fake.fail_next(1, "isv.BUSINESS_LIMIT_CONTROL")
    outcomes = await gateway.submit([message(i, p) for i, p in enumerate(phones(4))])

    assert all(isinstance(o, Accepted) for o in outcomes)
    assert fake.calls == 3
    assert len(fake.sent) == 4


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("isp.SYSTEM_ERROR", 200),
        ("isv.AMOUNT_NOT_ENOUGH", 200),  # a pause until the account is topped up
        ("Throttling.User", 400),
        ("InternalError", 500),
        ("ServiceUnavailable", 503),
    ],
)
async def test_provider_trouble_is_transient_for_the_whole_request(
    gateway: aliyun.AliyunGateway, fake: AliyunFake, code: str, status: int
) -> None:
    fake.fail_next(1, code, status=status)
    outcomes = await gateway.submit([message(i, p) for i, p in enumerate(phones(3))])

    assert all(isinstance(o, Failed) and not o.permanent and o.code == code for o in outcomes)
    assert fake.calls == 1
    assert fake.sent == []


async def test_a_timeout_leaves_the_outcome_unknown(fake: AliyunFake) -> None:
    """The request was written: Alibaba may send it, so it must never go again."""
    gateway = await gateway_with(fake, options={"timeout": 0.2})
    fake.delay_next(1, 1.0)
    try:
        outcomes = await gateway.submit([message(1, "+8613800000001")])
    finally:
        await gateway.close()

    [outcome] = outcomes
    assert isinstance(outcome, Unknown)
    assert (outcome.message_id, outcome.code) == (1, "timeout")


async def test_an_unapproved_signature_fails_only_its_own_messages(
    gateway: aliyun.AliyunGateway, fake: AliyunFake
) -> None:
    stray = "【某某公司】促销活动开始啦"
    outcomes = by_id(
        await gateway.submit([message(1, "+8613800000001", stray), message(2, "+8613800000002")])
    )

    failed = outcomes[1]
    assert isinstance(failed, Failed)
    assert failed.permanent
    assert failed.code == "isv.SMS_SIGNATURE_ILLEGAL"
    assert isinstance(outcomes[2], Accepted)


async def test_a_wrong_template_fails_permanently(fake: AliyunFake) -> None:
    gateway = await gateway_with(fake, options={"template_code": "SMS_000000"})
    try:
        outcomes = await gateway.submit([message(1, "+8613800000001")])
    finally:
        await gateway.close()

    assert isinstance(outcomes[0], Failed)
    assert outcomes[0].permanent
    assert outcomes[0].code == "isv.SMS_TEMPLATE_ILLEGAL"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"password": "not-the-secret"}, "SignatureDoesNotMatch"),
        ({"username": "LTAI5tSomeoneElse"}, "InvalidAccessKeyId.NotFound"),
    ],
)
async def test_refused_credentials_make_the_gateway_unavailable(
    fake: AliyunFake, change: dict[str, str], code: str
) -> None:
    # An operator's mistake, not the messages': raise, so every message is retried (possibly
    # through the fallback gateway) instead of failing for good.
    gateway = await gateway_with(fake, **change)
    try:
        with pytest.raises(aliyun.AliyunUnavailable, match=re.escape(code)):
            await gateway.submit([message(i, p) for i, p in enumerate(phones(150))])
    finally:
        await gateway.close()

    assert fake.answers == [code, code]
    assert fake.sent == []


async def test_a_clock_off_by_an_hour_makes_the_gateway_unavailable(fake: AliyunFake) -> None:
    gateway = aliyun.AliyunGateway(config(fake), clock=lambda: wall_clock() - timedelta(hours=1))
    try:
        with pytest.raises(aliyun.AliyunUnavailable, match=r"InvalidTimeStamp\.Expired"):
            await gateway.submit([message(1, "+8613800000001")])
    finally:
        await gateway.close()


async def test_requests_that_were_answered_keep_their_outcomes(
    gateway: aliyun.AliyunGateway, fake: AliyunFake
) -> None:
    # One of the two requests is refused as if the key were wrong, the other goes through:
    # raising would resend the accepted ones, so only the refused ones fail, transiently.
    fake.fail_next(1, "SignatureDoesNotMatch", status=400)
    outcomes = await gateway.submit([message(i, p) for i, p in enumerate(phones(150))])

    failed = [o for o in outcomes if isinstance(o, Failed)]
    accepted = [o for o in outcomes if isinstance(o, Accepted)]
    assert {(o.permanent, o.code) for o in failed} == {(False, "unavailable")}
    assert sorted([len(failed), len(accepted)]) == [50, 100]
    assert len(fake.sent) == len(accepted)


async def test_an_unreachable_endpoint_raises(fake: AliyunFake) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    gateway = await gateway_with(fake, url=closed)
    try:
        with pytest.raises(aliyun.AliyunUnavailable, match="cannot reach"):
            await gateway.submit([message(1, "+8613800000001")])
    finally:
        await gateway.close()


async def test_nothing_to_send_sends_nothing(
    gateway: aliyun.AliyunGateway, fake: AliyunFake
) -> None:
    assert await gateway.submit([]) == []
    assert fake.calls == 0


# ---- callbacks -------------------------------------------------------------------------------


async def test_pushed_receipts_match_the_accepted_references(
    gateway: aliyun.AliyunGateway, fake: AliyunFake
) -> None:
    numbers = phones(3)
    outcomes = await gateway.submit([message(i, p) for i, p in enumerate(numbers)])
    accepted = {o.message_id: o.reference for o in outcomes if isinstance(o, Accepted)}
    listener = CallbackListener(gateway)

    with serve(listener) as url:
        entries = fake.reports(undelivered={"13800000002": "MK:0001"})
        attempts = await fake.push(f"{url}v1/gateways/ali/receipts?secret=s", entries)

    assert len(attempts) == 1
    assert attempts[0].status == 200
    assert attempts[0].body == ACK_BODY
    [parsed] = listener.parsed
    assert parsed.answer == CallbackAnswer(200, ACK_BODY, "application/json")
    receipts = {r.reference: r for r in parsed.receipts}
    assert set(receipts) == set(accepted.values())
    assert receipts[accepted[0]].status == "delivered"
    assert receipts[accepted[0]].code == "DELIVERED"
    assert receipts[accepted[2]].status == "undelivered"
    assert receipts[accepted[2]].code == "MK:0001"
    at = receipts[accepted[0]].at
    assert at is not None
    assert str(at.tzinfo) == "Asia/Shanghai"
    assert abs(at - wall_clock()) < timedelta(minutes=1)


async def test_the_provider_pushes_again_until_acknowledged(
    gateway: aliyun.AliyunGateway, fake: AliyunFake
) -> None:
    await gateway.submit([message(1, "+8613800000001")])
    listener = CallbackListener(gateway, busy_first=2)

    with serve(listener) as url:
        attempts = await fake.push(f"{url}v1/gateways/ali/receipts", fake.reports())

    assert [a.status for a in attempts] == [503, 503, 200]
    assert attempts[-1].acknowledged
    assert len(listener.parsed) == 1


async def test_a_malformed_push_is_refused_and_never_acknowledged(
    gateway: aliyun.AliyunGateway, fake: AliyunFake
) -> None:
    listener = CallbackListener(gateway)
    with serve(listener) as url:
        attempts = await fake.push(f"{url}v1/gateways/ali/receipts", [{"biz_id": "1^0"}])

    assert [a.status for a in attempts] == [400] * 4
    assert listener.parsed == []


@pytest.mark.parametrize(
    "body", [b"", b"{}", b'{"phone_number": "13800000001"}', b"[" * 5000 + b"]" * 5000]
)
def test_a_push_that_is_no_array_raises_value_error(
    gateway: aliyun.AliyunGateway, body: bytes
) -> None:
    with pytest.raises(ValueError, match="SmsReport"):
        gateway.parse_callback("receipts", HttpCallback("POST", {}, {}, body))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'[{"phone_number": "13800000001"}]', "missing required field `success`"),
        (b"[1]", "Expected `object`, got `int`"),
        (b'[{"phone_number": 1, "success": true, "biz_id": "b"}]', "Expected `str`"),
        (b'[{"phone_number": "1\\u0000", "success": true, "biz_id": "b"}]', "control"),
    ],
)
def test_a_bad_entry_is_rejected_with_its_reason(
    gateway: aliyun.AliyunGateway, body: bytes, reason: str
) -> None:
    parsed = gateway.parse_callback("receipts", HttpCallback("POST", {}, {}, body))
    assert parsed.receipts == []
    [rejected] = parsed.rejected
    assert rejected.index == 0
    assert reason in rejected.reason


def test_receipts_parse_to_references_and_shanghai_times(gateway: aliyun.AliyunGateway) -> None:
    body = msgspec.json.encode(
        [
            {
                "phone_number": "13800000001",
                "send_time": "2026-11-27 09:00:00",
                "report_time": "2026-11-27 09:00:05",
                "success": True,
                "err_code": "DELIVERED",
                "err_msg": "用户接收成功",
                "sms_size": "1",
                "biz_id": "900619746936498440^0",
                "out_id": "17",
            },
            {
                "phone_number": "13800000002",
                "success": "false",  # tolerated: some pushes send booleans as strings
                "biz_id": "900619746936498440^0",
                "err_code": "MK:0001",
                "report_time": "not a time",
            },
        ]
    )
    parsed = gateway.parse_callback("receipts", HttpCallback("POST", {}, {}, body))

    assert parsed.receipts == [
        Receipt(
            reference="900619746936498440^0:13800000001",
            status="delivered",
            code="DELIVERED",
            at=datetime(2026, 11, 27, 1, 0, 5, tzinfo=UTC),
        ),
        Receipt(reference="900619746936498440^0:13800000002", status="undelivered", code="MK:0001"),
    ]
    assert parsed.answer.body.decode() == '{"code":0,"msg":"接收成功"}'


def test_replies_parse_to_inbound(gateway: aliyun.AliyunGateway) -> None:
    body = msgspec.json.encode(
        [
            {
                "phone_number": "13800000001",
                "send_time": "2026-11-27 09:00:00",
                "content": "退订",
                "sign_name": SIGN,
                "dest_code": "1234",
                "sequence_id": 1234567890,
            },
            {
                "phone_number": "13800000002",
                "content": "收到",
                "dest_code": "99",
                "sequence_id": "7",
            },
        ]
    )
    parsed = gateway.parse_callback("inbound", HttpCallback("POST", {}, {}, body))

    assert parsed.replies == [
        Inbound(
            phone="13800000001",
            to="1234",
            text="退订",
            reference="1234567890",
            at=datetime(2026, 11, 27, 1, 0, 0, tzinfo=UTC),
        ),
        Inbound(phone="13800000002", to="99", text="收到", reference="7"),
    ]
    assert parsed.answer == aliyun.ACK
    assert parsed.receipts == []
    assert parsed.rejected == []
    with pytest.raises(ValueError, match="SmsUp"):
        gateway.parse_callback("inbound", HttpCallback("POST", {}, {}, b'{"content": 1}'))


# ---- the signature ---------------------------------------------------------------------------


def test_signature_of_alibabas_describe_regions_example() -> None:
    # Alibaba's worked example (RPC signature mechanism): AccessKey testid / testsecret.
    params = {
        "TimeStamp": "2016-02-23T12:46:24Z",
        "Format": "XML",
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "Version": "2014-05-26",
        "SignatureVersion": "1.0",
    }
    assert aliyun.string_to_sign("GET", params) == (
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML"
        "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
        "%26SignatureVersion%3D1.0%26TimeStamp%3D2016-02-23T12%253A46%253A24Z"
        "%26Version%3D2014-05-26"
    )
    assert aliyun.sign("testsecret", "GET", params) == "CT9X0VtwR86fNWSnsc6v8YGOjuE="


def test_signature_of_alibabas_sms_example() -> None:
    # The SMS documentation's example (testId / testSecret): UTF-8 sign name, JSON parameter.
    params = {
        "AccessKeyId": "testId",
        "Action": "SendSms",
        "Format": "XML",
        "OutId": "123",
        "PhoneNumbers": "15300000001",
        "RegionId": "cn-hangzhou",
        "SignName": "阿里云短信测试专用",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
        "SignatureVersion": "1.0",
        "TemplateCode": "SMS_71390007",
        "TemplateParam": '{"customer":"test"}',
        "Timestamp": "2017-07-12T02:42:19Z",
        "Version": "2017-05-25",
    }
    assert aliyun.sign("testSecret", "GET", params) == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("a*b", "a%2Ab"),
        ("a~b", "a~b"),
        ("a b", "a%20b"),
        ("a+b", "a%2Bb"),
        ("-_.", "-_."),
        ("/=&", "%2F%3D%26"),
        ("【】", "%E3%80%90%E3%80%91"),
    ],
)
def test_percent_encoding_rules(raw: str, encoded: str) -> None:
    assert aliyun.percent_encode(raw) == encoded


async def test_the_fake_checks_signatures_and_nonces(fake: AliyunFake) -> None:
    params = {
        "AccessKeyId": fake.access_key_id,
        "Action": "SendBatchSms",
        "Format": "JSON",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "n-1",
        "SignatureVersion": "1.0",
        "Timestamp": wall_clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Version": "2017-05-25",
        "PhoneNumberJson": '["13800000001"]',
        "SignNameJson": f'["{SIGN}"]',
        "TemplateCode": fake.template_code,
        "TemplateParamJson": '[{"content": "a*b~c d"}]',
    }
    signed = {**params, "Signature": aliyun.sign(fake.secret, "POST", params)}
    async with httpx.AsyncClient() as client:
        tampered = await client.post(fake.url, data={**signed, "TemplateCode": "SMS_1"})
        good = await client.post(fake.url, data=signed)
        replayed = await client.post(fake.url, data=signed)

    assert (tampered.status_code, tampered.json()["Code"]) == (400, "SignatureDoesNotMatch")
    assert good.status_code == 200
    assert good.json()["Code"] == "OK"
    assert (replayed.status_code, replayed.json()["Code"]) == (400, "SignatureNonceUsed")
    assert fake.count("13800000001", f"【{SIGN}】a*b~c d") == 1


# ---- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({}, "template_code"),
        ({"template_code": "SMS_1", "batch": 101}, "batch"),
        ({"template_code": "SMS_1", "colour": "red"}, "colour"),
    ],
)
def test_build_checks_options(options: dict[str, str | int], error: str) -> None:
    settings = GatewayConfig(
        name="ali", kind="aliyun", username="id", password="secret", options=dict(options)
    )
    with pytest.raises(ValueError, match=error):
        aliyun.build(settings)
