"""Alibaba Cloud SMS (dysmsapi 2017-05-25): `SendBatchSms` over the signed RPC API; receipts
(SmsReport) and replies (SmsUp) pushed to the hub as JSON arrays.

Configuration (`GatewayConfig`):
- `url`: the endpoint, by default `https://dysmsapi.aliyuncs.com/` (a fake's URL in tests);
  `username` / `password`: the AccessKey ID and AccessKey secret.
- `options.template_code` (required): an approved template that is one variable and nothing else,
  `${content}`. The hub renders the body itself and sends it as that variable, and Alibaba puts
  the signature in front, so the phone shows exactly `Outbound.text`. The template must be of a
  type whose variable may hold a whole body (Alibaba answers `isv.PARAM_LENGTH_LIMIT` otherwise).
- `options.template_param`: that variable's name (default `content`).
- `options.sign_name`: the signature for a text that carries no leading `【…】`. A text's own
  `【signature】` wins: each tenant's approved signature goes out as its own.
- `options.batch`: phones per request, at most 100 (the PhoneNumberJson limit; default 100);
  `options.timeout` seconds per request (10); `options.concurrency` requests in flight (4);
  `options.region` (`cn-hangzhou`).

Requests: form-encoded POSTs signed per the RPC contract (HMAC-SHA1 over the sorted,
percent-encoded parameters, key = secret + "&"). Messages are grouped by signature and body (the
messages of one send share both) so that a refusal aimed at one tenant's signature or text does not
fail another's, then cut into requests of at most `batch` phones, one phone at most once a request.
Phones go as Alibaba expects mainland numbers: 11 digits, no `+86`. `OutId` is the hub id of the
request's first message (receipts echo it; it lets support find a request from our side).

Answers, per request (Alibaba accepts or refuses a request whole):
- `Code == "OK"`: every message is Accepted, `reference = f"{BizId}:{phone}"` with the 11-digit
  phone; a receipt carries `biz_id` and `phone_number`, so it maps back to exactly one message.
- A code that blames one phone without saying which (`isv.MOBILE_NUMBER_ILLEGAL`,
  `isv.BUSINESS_LIMIT_CONTROL`, the per-number frequency limit) on a request of several phones: the
  request is split in halves and each half resent, down to single phones. Nothing was sent (the
  request was refused whole), so this sends nobody anything twice; one bad number among 100 costs
  about 14 more requests and fails alone — permanently for an illegal number, transiently for a
  rate-limited one — instead of failing 99 good ones with it. Either way the phone is to blame,
  not the gateway (`per_recipient`): the circuit breaker does not count it.
- Transient (retry later): `isp.*` (`isp.SYSTEM_ERROR`), `Throttling*`, the console's day/month
  limits, `isv.AMOUNT_NOT_ENOUGH` and `isv.OUT_OF_SERVICE` (the account needs topping up: a pause,
  not a verdict on the message), HTTP 5xx.
- Unknown (never sent again, recorded "outcome unknown"): a request written and then left without
  an answer — the `timeout` ran out, the connection was lost mid-request. Alibaba may be sending
  it, and the API has no idempotency key, so a retry could deliver it twice.
- Permanent: any other `isv.*` code (template, signature, content, parameters) and any other
  error answer in Alibaba's JSON shape.
- The gateway itself unusable: the endpoint refuses the connection, rejects the AccessKey
  (`SignatureDoesNotMatch`, `InvalidAccessKeyId.NotFound`, …), the account (`isv.ACCOUNT_*`,
  `isp.RAM_PERMISSION_DENY`) or our clock (`InvalidTimeStamp.Expired`), or does not answer in
  Alibaba's shape at all (a wrong URL). That is an operator's problem, not the messages': if it
  holds for every request of the call, `submit` raises `AliyunUnavailable` so every message is
  retried (and the circuit can move traffic to the fallback); requests that were answered keep
  their outcomes and only the others become transient failures.

Callbacks (the hub passes them to `parse_callback` and sends back `Parsed.answer`):
- receipts: `[{phone_number, send_time, report_time, success, err_code, err_msg, sms_size,
  biz_id, out_id}, …]`; `report_time` is Asia/Shanghai wall-clock time. Alibaba retries a push
  that is not answered HTTP 200 with a numeric `code` (after 1, 5 and 10 minutes) and may repeat
  one anyway, so the hub must apply receipts idempotently.
- inbound: `[{phone_number, send_time, content, sign_name, dest_code, sequence_id}, …]`.
  `to` is `dest_code` as given. Each message is sent with `SmsUpExtendCodeJson` = the tenant's
  6-digit SMS extension, which Alibaba appends to the number the phone sees and reports back as
  the reply's `dest_code`; the hub routes a bare extension to its tenant (hub/delivery/inbound.py).
Both are answered `{"code":0,"msg":"接收成功"}`; a body that is not such an array raises ValueError.
An entry that does not fit (a field missing or of the wrong type, a NUL, far too long) is
rejected alone: the others are recorded and the answer, still code 0, adds
`"rejected": [{"index", "reason"}, …]`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import msgspec

from hub.delivery.gateway import (
    Accepted,
    CallbackAnswer,
    Events,
    Failed,
    HttpCallback,
    Inbound,
    Outbound,
    Outcome,
    Parsed,
    Receipt,
    Unknown,
    parsed,
    take,
)
from hub.delivery.gateways import NOTHING_WRITTEN
from hub.settings import GatewayConfig

ENDPOINT = "https://dysmsapi.aliyuncs.com/"
API_VERSION = "2017-05-25"
MAX_BATCH = 100  # PhoneNumberJson takes at most 100 numbers
SHANGHAI = ZoneInfo("Asia/Shanghai")
# What Alibaba's push expects back; anything else (or a non-200) makes it push again.
ACK = CallbackAnswer(
    status=200, body='{"code":0,"msg":"接收成功"}'.encode(), media_type="application/json"
)

# Codes that blame one phone of the request without naming it; the value: is it permanent.
PER_NUMBER = {"isv.MOBILE_NUMBER_ILLEGAL": True, "isv.BUSINESS_LIMIT_CONTROL": False}
# Worth retrying later: nothing is wrong with the message itself.
TRANSIENT = frozenset(
    {
        "isv.AMOUNT_NOT_ENOUGH",
        "isv.OUT_OF_SERVICE",
        "isv.DAY_LIMIT_CONTROL",
        "isv.MONTH_LIMIT_CONTROL",
        "SignatureNonceUsed",
        "ServiceUnavailable",
        "InternalError",
    }
)
TRANSIENT_PREFIXES = ("isp.", "Throttling")
# The AccessKey, the account or our clock is refused: every request would fail alike.
REFUSED = frozenset(
    {
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId.Inactive",
        "InvalidTimeStamp.Expired",
        "IllegalTimestamp",
        "Forbidden.RAM",
        "isp.RAM_PERMISSION_DENY",
        "isv.ACCOUNT_NOT_EXISTS",
        "isv.ACCOUNT_ABNORMAL",
        "isv.PRODUCT_UN_SUBSCRIPT",
        "isv.PRODUCT_UNSUBSCRIBE",
    }
)

_MAINLAND = re.compile(r"^\+861[0-9]{10}\Z")
_SIGNED = re.compile(r"^【([^【】]+)】(.*)\Z", re.DOTALL)


class AliyunUnavailable(ConnectionError):
    """The gateway cannot be used at all (unreachable, credentials or account refused)."""


EXTENSION_DIGITS = 6  # the hub's tenant extensions are fixed-width


class AliyunOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    template_code: Annotated[str, msgspec.Meta(min_length=1)]
    template_param: Annotated[str, msgspec.Meta(min_length=1)] = "content"
    sign_name: str = ""
    batch: Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH)] = MAX_BATCH
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    region: str = "cn-hangzhou"


class _Answer(msgspec.Struct, rename="pascal"):
    """What the RPC endpoint answers, success and error alike."""

    code: str = ""
    message: str = ""
    biz_id: str = ""
    request_id: str = ""


class _Report(msgspec.Struct):
    """One SmsReport entry (fields we do not use are ignored)."""

    phone_number: str
    success: bool
    biz_id: str
    report_time: str = ""
    err_code: str = ""


class _Reply(msgspec.Struct):
    """One SmsUp entry; `sequence_id` is a number in some documents and a string in others."""

    phone_number: str
    content: str
    dest_code: str = ""
    sequence_id: int | str = ""
    send_time: str = ""
    sign_name: str = ""


_ANSWER = msgspec.json.Decoder(_Answer)
_ENTRIES = msgspec.json.Decoder(list[msgspec.Raw])
_REPORT = msgspec.json.Decoder(_Report, strict=False)
_REPLY = msgspec.json.Decoder(_Reply, strict=False)


class _Item(msgspec.Struct, frozen=True):
    """One message as a phone of a request."""

    message_id: int
    phone: str  # 11 digits
    sign_name: str
    body: str
    # The tenant's SMS extension (the sender's last 6 digits): Alibaba appends it to the number
    # the phone sees and gives it back as `dest_code` on a reply, which routes it to the tenant.
    extend_code: str


class _Down(msgspec.Struct, frozen=True):
    """A request that found the gateway unusable."""

    reason: str


Verdict = Literal["ok", "split", "transient", "permanent", "down"]


# ---- the RPC signature -----------------------------------------------------------------------


def percent_encode(value: str) -> str:
    """RFC 3986 over UTF-8 as the signature wants it: only A-Z a-z 0-9 - _ . ~ stay as they are;
    a space is %20 (never +), * is %2A."""
    return quote(value, safe="-_.~")


def canonical_query(params: Mapping[str, str]) -> str:
    """The parameters sorted by name, each `name=value` percent-encoded, joined by &."""
    return "&".join(
        f"{percent_encode(name)}={percent_encode(params[name])}" for name in sorted(params)
    )


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    return f"{method}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def sign(secret: str, method: str, params: Mapping[str, str]) -> str:
    """Base64(HMAC-SHA1(secret + "&", StringToSign)); `params` without Signature."""
    digest = hmac.new(
        f"{secret}&".encode(), string_to_sign(method, params).encode(), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode()


# ---- mapping messages and answers ------------------------------------------------------------


def national(phone: str) -> str:
    """The 11-digit form Alibaba uses for a mainland number: no +86, no 86."""
    digits = phone.lstrip("+")
    return digits[2:] if len(digits) == 13 and digits.startswith("86") else digits


def split_signature(text: str, default: str) -> tuple[str, str]:
    """(sign name, body): the text's leading 【…】 if it has one, else the configured default."""
    if match := _SIGNED.match(text):
        return match[1], match[2]
    return default, text


def verdict(status: int, answer: _Answer | None) -> Verdict:
    """What an HTTP answer means for every message of its request."""
    if answer is None or not answer.code:
        # Not Alibaba's JSON shape: a server error, or not the SendBatchSms endpoint at all.
        return "transient" if status >= 500 else "down"
    code = answer.code
    if code == "OK" and status == 200:
        return "ok"
    if code in REFUSED:
        return "down"
    if code in PER_NUMBER:
        return "split"
    if status >= 500 or code in TRANSIENT or code.startswith(TRANSIENT_PREFIXES):
        return "transient"
    return "permanent"


def _local_time(text: str) -> datetime | None:
    """Alibaba's wall-clock times (Asia/Shanghai); None when absent or in no known format."""
    for layout in ("%Y-%m-%d %H:%M:%S", "%Y%m%d%H%M%S"):
        try:
            return datetime.strptime(text, layout).replace(tzinfo=SHANGHAI)
        except ValueError:
            continue
    return None


def _failed(
    items: Sequence[_Item], permanent: bool, code: str, detail: str, per_recipient: bool = False
) -> list[Outcome]:
    return [
        Failed(item.message_id, permanent, code, detail, per_recipient=per_recipient)
        for item in items
    ]


def _chunks(items: Sequence[_Item], size: int) -> list[list[_Item]]:
    """Requests of at most `size` items sharing sign name and body, no phone twice in one (a
    reference is BizId + phone)."""
    groups: dict[tuple[str, str], list[tuple[list[_Item], set[str]]]] = {}
    for item in items:
        chunks = groups.setdefault((item.sign_name, item.body), [])
        home = next((c for c in chunks if len(c[0]) < size and item.phone not in c[1]), None)
        if home is None:
            home = ([], set())
            chunks.append(home)
        home[0].append(item)
        home[1].add(item.phone)
    return [chunk for chunks in groups.values() for chunk, _ in chunks]


# ---- the gateway -----------------------------------------------------------------------------


class AliyunGateway:
    """One Alibaba Cloud SMS account behind the hub's Gateway protocol."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not config.username or not config.password:
            raise ValueError(
                f"gateway {config.name}: username (AccessKey ID) and password "
                "(AccessKey secret) are required"
            )
        try:
            self.options = msgspec.convert(config.options, AliyunOptions, strict=False)
        except msgspec.ValidationError as exc:
            raise ValueError(f"gateway {config.name}: invalid options: {exc}") from exc
        self.config = config
        self.url = config.url or ENDPOINT
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(self.options.concurrency)

    async def start(self, events: Events) -> None:
        """Nothing is pushed on a connection of ours: receipts come as HTTP callbacks."""
        self._http()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.options.timeout)
        return self._client

    # -- submit --

    async def submit(self, messages: Sequence[Outbound]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        items: list[_Item] = []
        for message in messages:
            prepared = self._prepare(message)
            if isinstance(prepared, Failed):
                outcomes.append(prepared)
            else:
                items.append(prepared)
        chunks = _chunks(items, self.options.batch)
        results = await asyncio.gather(*(self._send(chunk) for chunk in chunks))
        down = [result for result in results if isinstance(result, _Down)]
        if chunks and len(down) == len(chunks):
            raise AliyunUnavailable(f"gateway {self.config.name}: {down[0].reason}")
        for chunk, result in zip(chunks, results, strict=True):
            if isinstance(result, _Down):
                outcomes += _failed(chunk, False, "unavailable", result.reason)
            else:
                outcomes += result
        return outcomes

    def _prepare(self, message: Outbound) -> _Item | Failed:
        if not _MAINLAND.match(message.phone):
            return Failed(
                message.id,
                permanent=True,
                code="number_not_supported",
                detail="SendBatchSms takes mainland China mobile numbers only",
                per_recipient=True,
            )
        sign_name, body = split_signature(message.text, self.options.sign_name)
        if not sign_name:
            return Failed(
                message.id,
                permanent=True,
                code="no_signature",
                detail="the text has no 【signature】 and no sign_name option is set",
            )
        extension = message.sender[-EXTENSION_DIGITS:]
        return _Item(message.id, national(message.phone), sign_name, body, extension)

    async def _send(self, chunk: Sequence[_Item]) -> list[Outcome] | _Down:
        """One request; split in halves while Alibaba blames one phone without naming it."""
        response = await self._post(chunk)
        if not isinstance(response, httpx.Response):
            return response
        try:
            answer: _Answer | None = _ANSWER.decode(response.content)
        except msgspec.DecodeError:
            answer = None
        kind = verdict(response.status_code, answer)
        code = answer.code if answer and answer.code else f"http_{response.status_code}"
        # Short: a SignatureDoesNotMatch message goes on to quote the whole request, phones too.
        said = answer.message if answer else response.text
        detail = f"HTTP {response.status_code}: {said[:120]}"
        if kind == "ok" and answer is not None:
            # An OK always has a BizId; RequestId only keeps the reference unique if one did not.
            batch = answer.biz_id or answer.request_id
            return [Accepted(item.message_id, f"{batch}:{item.phone}") for item in chunk]
        if kind == "split" and len(chunk) > 1:
            return await self._split(chunk)
        if kind == "split":
            return _failed(chunk, PER_NUMBER[code], code, detail, per_recipient=True)
        if kind == "down":
            return _Down(f"{code}: {detail}")
        return _failed(chunk, kind == "permanent", code, detail)

    async def _split(self, chunk: Sequence[_Item]) -> list[Outcome]:
        """Resend each half: the request was refused whole, so nobody gets anything twice."""
        middle = len(chunk) // 2
        halves = (chunk[:middle], chunk[middle:])
        results = await asyncio.gather(*(self._send(half) for half in halves))
        outcomes: list[Outcome] = []
        for half, result in zip(halves, results, strict=True):
            if isinstance(result, _Down):
                outcomes += _failed(half, False, "unavailable", result.reason)
            else:
                outcomes += result
        return outcomes

    async def _post(self, chunk: Sequence[_Item]) -> httpx.Response | list[Outcome] | _Down:
        """The HTTP exchange; an outcome instead of an answer when there was none."""
        try:
            async with self._slots:
                return await self._http().post(
                    self.url,
                    content=self._form(chunk),
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
            # Never connected: nothing was sent.
            return _Down(f"cannot reach {self.url}: {exc!r}")
        except NOTHING_WRITTEN as exc:
            return _failed(chunk, False, "not_sent", repr(exc))
        except httpx.TransportError as exc:
            # Written, and no answer: Alibaba may be sending it now, and SendBatchSms has no
            # idempotency key to make a repeat harmless. At most once: never sent again.
            if isinstance(exc, httpx.TimeoutException):
                code, detail = "timeout", f"no answer in {self.options.timeout}s: {exc!r}"
            else:
                code, detail = "connection_lost", repr(exc)
            return [Unknown(item.message_id, code, detail) for item in chunk]

    def _form(self, chunk: Sequence[_Item]) -> bytes:
        """The signed, form-encoded body of one SendBatchSms request."""
        name = self.options.template_param
        params = {
            "AccessKeyId": self.config.username,
            "Action": "SendBatchSms",
            "Format": "JSON",
            "RegionId": self.options.region,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": str(uuid.uuid4()),
            "SignatureVersion": "1.0",
            "Timestamp": self._clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": API_VERSION,
            "PhoneNumberJson": msgspec.json.encode([i.phone for i in chunk]).decode(),
            "SignNameJson": msgspec.json.encode([i.sign_name for i in chunk]).decode(),
            "TemplateCode": self.options.template_code,
            "TemplateParamJson": msgspec.json.encode([{name: i.body} for i in chunk]).decode(),
            "OutId": str(chunk[0].message_id),
            "SmsUpExtendCodeJson": msgspec.json.encode([i.extend_code for i in chunk]).decode(),
        }
        params["Signature"] = sign(self.config.password, "POST", params)
        # Percent-encoding is valid form encoding, and the server decodes exactly what we signed.
        return canonical_query(params).encode()

    # -- callbacks --

    def recorded(self, ids: Sequence[int]) -> None:
        pass  # its receipts come from the carrier, whenever they come

    def parse_callback(self, kind: Literal["receipts", "inbound"], call: HttpCallback) -> Parsed:
        """Each entry of the push on its own: a bad one is rejected, named in the answer (which
        still acknowledges the push, so Alibaba does not send the good ones again)."""
        if kind == "receipts":
            raws = _entries(call.body, "SmsReport", "reports")
            result = parsed((take(i, partial(_receipt, raw)) for i, raw in enumerate(raws)), ACK)
        else:
            raws = _entries(call.body, "SmsUp", "replies")
            result = parsed((take(i, partial(_reply, raw)) for i, raw in enumerate(raws)), ACK)
        if not result.rejected:
            return result
        answer = {"code": 0, "msg": "接收成功", "rejected": result.rejected}
        ack = CallbackAnswer(200, msgspec.json.encode(answer), "application/json")
        return msgspec.structs.replace(result, answer=ack)


def _entries(body: bytes, push: str, what: str) -> list[msgspec.Raw]:
    """A push's entries, each still undecoded; ValueError if the body is no JSON array."""
    try:
        return _ENTRIES.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ValueError(f"not an Alibaba {push} push (a JSON array of {what}): {exc}") from exc


def _receipt(raw: msgspec.Raw) -> Receipt:
    """One SmsReport entry; msgspec's ValidationError (a ValueError) if it is not one."""
    report = _REPORT.decode(raw)
    return Receipt(
        reference=f"{report.biz_id}:{national(report.phone_number)}",
        status="delivered" if report.success else "undelivered",
        code=report.err_code,
        at=_local_time(report.report_time),
    )


def _reply(raw: msgspec.Raw) -> Inbound:
    """One SmsUp entry; msgspec's ValidationError (a ValueError) if it is not one."""
    reply = _REPLY.decode(raw)
    return Inbound(
        phone=reply.phone_number,
        to=reply.dest_code,
        text=reply.content,
        reference=str(reply.sequence_id),
        at=_local_time(reply.send_time),
    )


def build(config: GatewayConfig) -> AliyunGateway:
    return AliyunGateway(config)
