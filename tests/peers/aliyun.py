"""A fake Alibaba Cloud SMS provider: the dysmsapi `SendBatchSms` contract over real HTTP.

It runs in uvicorn on a loopback port, in a thread of its own (so it works under any test event
loop), and checks what the real endpoint checks before sending anything: the common parameters,
the AccessKey, the timestamp window, nonce reuse and the HMAC-SHA1 signature — computed here the
way Alibaba's documentation spells it (form-encode, then `+`→%20, `*`→%2A, %7E→`~`), not with the
adapter's code, so a mistake in one is not mirrored by the other. Then the business fields.

It answers as Alibaba does: HTTP 200 with `Code: "OK"` and a `BizId`, or HTTP 200 with an
`isv.*`/`isp.*` code; authentication errors as HTTP 400/404 with the RPC gateway's codes. Each
phone and the text it would show (`【sign name】` + the rendered template) is recorded in `sent`.

Trouble on demand: `illegal_numbers` (any request containing one is refused with
`isv.MOBILE_NUMBER_ILLEGAL`, as Alibaba refuses a request whole), `fail_next(n, code, status=…)`
for the next n calls (`isv.BUSINESS_LIMIT_CONTROL`, `isp.SYSTEM_ERROR`, an HTTP 500…) and
`delay_next(n, seconds)`. `reports()` builds the SmsReport array for what was sent, and `push()`
posts it to a callback URL, pushing again (Alibaba: after 1, 5, 10 minutes; here after
`retry_delays`) until it is answered HTTP 200 with exactly `{"code":0,"msg":"接收成功"}` —
stricter than Alibaba, which only wants a numeric `code`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote_plus
from zoneinfo import ZoneInfo

import httpx
import msgspec
import uvicorn

from hub.settings import GatewayConfig
from tests.peers import wall_clock

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SHANGHAI = ZoneInfo("Asia/Shanghai")
ACK = {"code": 0, "msg": "接收成功"}
# The RPC gateway's common parameters, all required.
COMMON = (
    *("AccessKeyId", "Action", "Format", "Version", "Timestamp"),
    *("SignatureMethod", "SignatureVersion", "SignatureNonce", "Signature"),
)
# Parameters with one right value: name -> (value, status, code, message when it is another).
FIXED = {
    "Action": ("SendBatchSms", 404, "InvalidAction.NotFound", "Specified api is not found."),
    "Version": ("2017-05-25", 400, "InvalidVersion", "Specified parameter Version is not valid."),
    "SignatureMethod": ("HMAC-SHA1", 400, "InvalidSignatureMethod", "Unsupported method."),
    "SignatureVersion": ("1.0", 400, "InvalidSignatureVersion", "Unsupported version."),
    "Format": ("JSON", 400, "InvalidParameter.Format", "This fake only answers JSON."),
}
MAX_SKEW = timedelta(minutes=15)
_MOBILE = re.compile(r"^1[3-9][0-9]{9}$")
_VARIABLE = re.compile(r"\$\{(\w+)\}")


class Refused(Exception):
    """An error answer: HTTP status, Alibaba code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


class Sent(msgspec.Struct, frozen=True):
    """One phone of an accepted request, and the text it would show."""

    phone: str
    sign_name: str
    text: str
    biz_id: str
    out_id: str
    send_time: str
    extend_code: str = ""  # SmsUpExtendCodeJson: a reply's dest_code


class PushAttempt(msgspec.Struct, frozen=True):
    status: int  # 0: no answer at all
    body: bytes

    @property
    def acknowledged(self) -> bool:
        try:
            return self.status == 200 and msgspec.json.decode(self.body) == ACK
        except msgspec.DecodeError:
            return False


def doc_signature(secret: str, method: str, params: Mapping[str, str]) -> tuple[str, str]:
    """(StringToSign, Signature) by the recipe of Alibaba's documentation."""

    def encode(value: str) -> str:
        return quote_plus(value, encoding="utf-8").replace("+", "%20").replace("*", "%2A")

    pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
    canonical = "&".join(f"{encode(k)}={encode(v)}" for k, v in pairs).replace("%7E", "~")
    to_sign = f"{method}&{encode('/')}&{encode(canonical).replace('%7E', '~')}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return to_sign, base64.b64encode(digest).decode()


def _check_time(timestamp: str) -> None:
    try:
        stamp = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise Refused(400, "InvalidTimeStamp.Format", "Timestamp is not ISO 8601 UTC.") from None
    if abs(wall_clock() - stamp) > MAX_SKEW:
        raise Refused(400, "InvalidTimeStamp.Expired", "Specified time stamp has expired.")


def _shanghai_now() -> str:
    return wall_clock().astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


class AliyunFake:
    """The provider's state; the instance is also the ASGI app (see `serve`)."""

    def __init__(
        self,
        *,
        access_key_id: str = "LTAI5tFakeAccessKey",
        secret: str = "fake-access-key-secret",
        template_code: str = "SMS_460001",
        template: str = "${content}",
        sign_names: Sequence[str] = (),
    ) -> None:
        self.access_key_id = access_key_id
        self.secret = secret
        self.template_code = template_code
        self.template = template
        self.sign_names = set(sign_names)  # empty: any sign name is approved
        self.url = ""
        self._lock = threading.Lock()
        self._biz_ids = itertools.count(900619746936498440)
        self.reset()

    def gateway(self, *, options: Mapping[str, Any] | None = None, **fields: Any) -> GatewayConfig:
        """The hub's gateway `ali` on this fake (running: its url is set), unpaced, with
        `fields` and `options` over that."""
        return msgspec.structs.replace(
            GatewayConfig(
                name="ali",
                kind="aliyun",
                url=self.url,
                username=self.access_key_id,
                password=self.secret,
                rate=1e6,
                options={"template_code": self.template_code, **(options or {})},
            ),
            **fields,
        )

    def reset(self) -> None:
        with self._lock:
            self.sent: list[Sent] = []
            self.calls = 0
            self.answers: list[str] = []  # the Code of every answer, in order
            self.illegal_numbers: set[str] = set()
            self._failures: list[tuple[int, str]] = []  # (status, code), one per coming call
            self._delays: list[float] = []
            self._nonces: set[str] = set()

    # -- scripting --

    def fail_next(self, calls: int, code: str, *, status: int = 200) -> None:
        with self._lock:
            self._failures += [(status, code)] * calls

    def delay_next(self, calls: int, seconds: float) -> None:
        with self._lock:
            self._delays += [seconds] * calls

    def count(self, phone: str, text: str) -> int:
        with self._lock:
            return sum(1 for s in self.sent if s.phone == phone and s.text == text)

    # -- HTTP --

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        try:
            status, answer = 200, await self._handle(scope, body)
        except Refused as refused:
            status = refused.status
            answer = {"Code": refused.code, "Message": refused.message}
        answer["RequestId"] = str(uuid.uuid4()).upper()
        with self._lock:
            self.answers.append(str(answer["Code"]))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json;charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": msgspec.json.encode(answer)})

    async def _handle(self, scope: Scope, body: bytes) -> dict[str, Any]:
        params = dict(parse_qsl(scope["query_string"].decode(), keep_blank_values=True))
        params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        with self._lock:
            self.calls += 1
        self._authenticate(scope["method"], params)
        with self._lock:
            delay = self._delays.pop(0) if self._delays else 0.0
            failure = self._failures.pop(0) if self._failures else None
        await asyncio.sleep(delay)
        if failure is not None:
            raise Refused(failure[0], failure[1], "scripted failure")
        return self._send_batch(params)

    def _authenticate(self, method: str, params: Mapping[str, str]) -> None:
        for name in COMMON:
            if not params.get(name):
                raise Refused(400, f"Missing{name}", f"{name} is mandatory for this action.")
        for name, (value, status, code, message) in FIXED.items():
            if params[name] != value:
                raise Refused(status, code, message)
        if params["AccessKeyId"] != self.access_key_id:
            raise Refused(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        _check_time(params["Timestamp"])
        to_sign, expected = doc_signature(self.secret, method, params)
        if not hmac.compare_digest(expected, params["Signature"]):
            raise Refused(
                400,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. "
                f"server string to sign is:{to_sign}",
            )
        with self._lock:
            if params["SignatureNonce"] in self._nonces:
                raise Refused(400, "SignatureNonceUsed", "Specified signature nonce was used.")
            self._nonces.add(params["SignatureNonce"])

    def _send_batch(self, params: Mapping[str, str]) -> dict[str, Any]:
        for name in ("PhoneNumberJson", "SignNameJson", "TemplateCode"):
            if not params.get(name):
                raise Refused(400, f"Missing{name}", f"{name} is mandatory for this action.")
        try:
            phones = msgspec.json.decode(params["PhoneNumberJson"], type=list[str])
            signs = msgspec.json.decode(params["SignNameJson"], type=list[str])
            values = msgspec.json.decode(
                params.get("TemplateParamJson") or "[]", type=list[dict[str, str]]
            )
            extend_codes = msgspec.json.decode(
                params.get("SmsUpExtendCodeJson") or "[]", type=list[str]
            )
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise Refused(200, "isv.INVALID_JSON_PARAM", f"JSON 参数不合法: {exc}") from None
        if extend_codes and len(extend_codes) != len(phones):
            raise Refused(200, "isv.INVALID_PARAMETERS", "参数异常: 数组长度不一致")
        texts = self._render(phones, signs, values, params)
        biz_id = f"{next(self._biz_ids)}^0"
        out_id = params.get("OutId", "")
        with self._lock:
            self.sent += [
                Sent(phone, sign, text, biz_id, out_id, _shanghai_now(), extend)
                for phone, sign, text, extend in zip(
                    phones, signs, texts, extend_codes or [""] * len(phones), strict=True
                )
            ]
        return {"Code": "OK", "Message": "OK", "BizId": biz_id}

    def _render(
        self,
        phones: list[str],
        signs: list[str],
        values: list[dict[str, str]],
        params: Mapping[str, str],
    ) -> list[str]:
        """The text each phone would show, or the isv.* refusal of the whole request."""
        if not 1 <= len(phones) <= 100:
            raise Refused(200, "isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制")
        if len(signs) != len(phones) or (values and len(values) != len(phones)):
            raise Refused(200, "isv.INVALID_PARAMETERS", "参数异常: 数组长度不一致")
        if len(params.get("OutId", "")) > 256:
            raise Refused(200, "isv.INVALID_PARAMETERS", "参数异常: OutId 过长")
        if params["TemplateCode"] != self.template_code:
            raise Refused(200, "isv.SMS_TEMPLATE_ILLEGAL", "模板不合法")
        if self.sign_names and not set(signs) <= self.sign_names:
            raise Refused(200, "isv.SMS_SIGNATURE_ILLEGAL", "签名不合法")
        if any(not _MOBILE.match(p) or p in self.illegal_numbers for p in phones):
            raise Refused(200, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        return [
            f"【{sign}】{self._fill(variables)}"
            for sign, variables in zip(signs, values or [{}] * len(phones), strict=True)
        ]

    def _fill(self, variables: Mapping[str, str]) -> str:
        """The template with its ${…} variables replaced."""
        missing = set(_VARIABLE.findall(self.template)) - set(variables)
        if missing:
            raise Refused(200, "isv.TEMPLATE_MISSING_PARAMETERS", f"模板缺少变量 {sorted(missing)}")
        return _VARIABLE.sub(lambda match: variables[match[1]], self.template)

    # -- receipts --

    def reports(self, *, undelivered: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """The SmsReport array for everything sent; `undelivered`: phone → carrier error code."""
        failing = undelivered or {}
        with self._lock:
            sent = list(self.sent)
        return [
            {
                "phone_number": s.phone,
                "send_time": s.send_time,
                "report_time": _shanghai_now(),
                "success": s.phone not in failing,
                "err_code": failing.get(s.phone, "DELIVERED"),
                "err_msg": "用户接收失败" if s.phone in failing else "用户接收成功",
                "sms_size": "1",
                "biz_id": s.biz_id,
                "out_id": s.out_id,
            }
            for s in sent
        ]

    async def push(
        self,
        url: str,
        entries: Sequence[Mapping[str, Any]],
        *,
        retry_delays: Sequence[float] = (0.05, 0.05, 0.05),
    ) -> list[PushAttempt]:
        """POST `entries` to `url` until acknowledged, at most 1 + len(retry_delays) times."""
        attempts: list[PushAttempt] = []
        body = msgspec.json.encode(list(entries))
        async with httpx.AsyncClient(timeout=5.0) as client:
            for delay in (0.0, *retry_delays):
                await asyncio.sleep(delay)
                try:
                    answer = await client.post(
                        url, content=body, headers={"Content-Type": "application/json"}
                    )
                except httpx.TransportError as exc:
                    attempts.append(PushAttempt(0, repr(exc).encode()))
                    continue
                attempts.append(PushAttempt(answer.status_code, answer.content))
                if attempts[-1].acknowledged:
                    break
        return attempts


@contextmanager
def serve(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> Iterator[str]:
    """Run an ASGI app in uvicorn on a loopback address (a free port unless `port`), in a
    thread, over TLS with `certfile` and `keyfile` if given; yields its base URL."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="error",
        lifespan="off",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="aliyun-fake", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"{'https' if certfile else 'http'}://{host}:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def running(fake: AliyunFake) -> Iterator[AliyunFake]:
    """The fake, listening; `fake.url` is its endpoint."""
    with serve(fake) as url:
        fake.url = url
        yield fake
