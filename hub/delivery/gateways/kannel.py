"""The `kannel` gateway: Kannel's smsbox over HTTP (`GET /cgi-bin/sendsms`), receipts and
replies pushed back by Kannel to the hub's `/v1/gateways/{name}/receipts` and `/inbound`.

Configuration (`GatewayConfig`): `url` is smsbox's sendsms base (`http://127.0.0.1:13013`),
`username`/`password` a `sendsms-user`, `secret` what Kannel's callbacks carry back (as the query
parameter `secret`: Kannel sends no headers of our choosing; URL-safe characters only, since a
`%` would meet Kannel's own escapes). Options:
- `callback_url` (required): the hub's base URL as Kannel reaches it; receipts go to
  `{callback_url}/v1/gateways/{name}/receipts?secret=…&ref=<message id>&status=%d&code=%A&at=%T`.
- `concurrency` (default 20): sendsms requests in flight at once (and pooled connections).
- `timeout` (default 10 s): one sendsms request, connecting included.
- `dlr_mask` (default 19 = delivered 1 | undelivered 2 | SMSC reject 16): Kannel reports only
  the final states; the intermediate 4 (buffered) and 8 (SMSC ack) are ignored if asked for.
  A receipt's `code` is the SMPP receipt's `stat` (or `stat/err`), like the SMPP adapter's, or
  Kannel's own words for it (`NACK/0x0000000b/…` when the SMSC refused the message).
- `max_parts` (default 20): the sendsms-user's `max-messages`. Kannel silently drops the text
  beyond that many parts, so a longer message is refused here instead (never cut).
- `smsc` (default none): route through this smsc-id (sendsms `smsc=`).

What Kannel must be told (kannel.conf):
- `group = sendsms-user` with `concatenation = true` and `max-messages` = `max_parts`, and no
  `faked-sender`/`default-smsc` surprises. Kannel splits long texts itself with concatenation
  UDH; the adapter always passes the whole text.
- `group = smsbox` with `mo-recode = true`, so a UCS-2 reply reaches the hub as UTF-8.
- `group = sms-service` with `keyword = default`, `catch-all = true`, `max-messages = 0` (the
  hub's `ok` answer must not go back to the phone as an SMS) and `get-url` =
  `KannelGateway.inbound_get_url` (the query names `parse_callback("inbound", …)` reads).

Why the hub's message id is the reference: Kannel 1.4.5 answers sendsms with
`202 "0: Accepted for delivery"` (or `"3: Queued for later delivery"` while no SMSC is
connected) and no id of its own. The id goes into each message's `dlr-url` as `ref`, so every
receipt names the message it is for. A concatenated message gets one receipt, not one per part
(smsbox splits it and bearerbox hands it to the SMSC whole or not at all, as far as sendsms says).

At most once: a sendsms request that could not connect (or waited for a pooled connection in
vain) sent nothing and goes again. One written and then left without an answer (the `timeout`
ran out, the connection dropped) may have been queued by smsbox: it is `Unknown` (the hub records
it "outcome unknown") and never sent again. A 5xx answer is a refusal and may go again.

Phones go as the hub has them (E.164, `+8613800138000`); Kannel passes them on unchanged. An SMSC
that wants national numbers gets them from its smsc group (`unified-prefix`), not from here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Literal

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
    ReceiptStatus,
    Rejected,
    Unknown,
    parsed,
    take,
)
from hub.delivery.gateways import NOTHING_WRITTEN
from hub.settings import GatewayConfig

# Kannel's DLR types (the `%d` of a dlr-url): only final ones become receipts.
DLR_DELIVERED, DLR_UNDELIVERED, DLR_BUFFERED, DLR_SMSC_ACK, DLR_SMSC_REJECT = 1, 2, 4, 8, 16
FINAL_DLR: dict[int, ReceiptStatus] = {
    DLR_DELIVERED: "delivered",
    DLR_UNDELIVERED: "undelivered",
    DLR_SMSC_REJECT: "undelivered",
}
# Asked of Kannel by default: the final states only (no callback for 4 and 8).
DLR_MASK = DLR_DELIVERED | DLR_UNDELIVERED | DLR_SMSC_REJECT
# sendsms `coding`: 0 GSM 7-bit, 2 UCS-2 (the text itself is always sent as UTF-8).
CODING = {"gsm7": 0, "ucs2": 2}
# The receipts' dlr-url query after `ref`: Kannel fills in status, SMSC answer and time.
RECEIPT_QUERY = "status=%d&code=%A&at=%T"
# The sms-service get-url's query: sender, receiver, the text as received (`%b` keeps spaces;
# `%a` squeezes them), its charset and coding, Kannel's id for the message, and its time.
INBOUND_QUERY = "from=%p&to=%P&text=%b&charset=%C&coding=%c&id=%I&ts=%T"
# The fields of an SMPP receipt's text, which Kannel passes on as `%A`.
_RECEIPT_FIELD = re.compile(r"\b(stat|err):(\S*)", re.I)
# A secret Kannel can carry inside a URL untouched: a `%` would meet Kannel's own escapes.
URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]*\Z")


class KannelOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`GatewayConfig.options` of a kannel gateway (see the module docstring)."""

    callback_url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^%]+(?!\n)$")]
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    dlr_mask: Annotated[int, msgspec.Meta(ge=0, le=31)] = DLR_MASK
    max_parts: Annotated[int, msgspec.Meta(ge=1, le=255)] = 20
    smsc: str = ""


class KannelUnreachable(ConnectionError):
    """No sendsms request reached smsbox: the whole batch is to be retried."""


class _Unconnected(msgspec.Struct, frozen=True):
    """One request that could not connect (the batch raises if none could)."""

    detail: str


class KannelGateway:
    def __init__(self, config: GatewayConfig) -> None:
        try:
            options = msgspec.convert(dict(config.options), KannelOptions, strict=False)
        except msgspec.ValidationError as exc:
            raise ValueError(f"kannel gateway {config.name}: invalid options: {exc}") from exc
        if not config.url:
            raise ValueError(f"kannel gateway {config.name}: `url` (smsbox sendsms) is required")
        if not config.secret or not URL_SAFE.match(config.secret):
            # The hub refuses callbacks without it; Kannel can only carry it in the URL.
            raise ValueError(
                f"kannel gateway {config.name}: a secret of A-Z a-z 0-9 . _ ~ - is required"
            )
        self.config = config
        self.options = options
        self.callback_url = options.callback_url.rstrip("/")
        self.sendsms_url = config.url.rstrip("/") + "/cgi-bin/sendsms"
        self._client: httpx.AsyncClient | None = None

    @property
    def callback_base(self) -> str:
        """`{callback_url}/v1/gateways/{name}`: its `/receipts` and `/inbound` follow."""
        return f"{self.callback_url}/v1/gateways/{self.config.name}"

    @property
    def inbound_get_url(self) -> str:
        """The `get-url` of Kannel's sms-service for replies to reach the hub."""
        return f"{self.callback_base}/inbound?secret={self.config.secret}&{INBOUND_QUERY}"

    def dlr_url(self, message_id: int) -> str:
        return (
            f"{self.callback_base}/receipts?secret={self.config.secret}"
            f"&ref={message_id}&{RECEIPT_QUERY}"
        )

    async def start(self, events: Events) -> None:
        """Kannel keeps no connection of ours open; receipts come over HTTP."""
        self._http()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            most = self.options.concurrency
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.options.timeout),
                limits=httpx.Limits(max_connections=most, max_keepalive_connections=most),
            )
        return self._client

    async def submit(self, messages: Sequence[Outbound]) -> list[Outcome]:
        if not messages:
            return []
        client = self._http()
        # Requests wait here rather than in httpx's pool, where they would hit its pool timeout.
        gate = asyncio.Semaphore(self.options.concurrency)

        async def one(message: Outbound) -> Outcome | _Unconnected:
            async with gate:
                return await self._send(client, message)

        results = await asyncio.gather(*(one(m) for m in messages))
        if all(isinstance(result, _Unconnected) for result in results):
            detail = results[0].detail if isinstance(results[0], _Unconnected) else ""
            raise KannelUnreachable(f"kannel {self.config.name} at {self.config.url}: {detail}")
        return [
            Failed(m.id, permanent=False, code="unreachable", detail=result.detail)
            if isinstance(result, _Unconnected)
            else result
            for m, result in zip(messages, results, strict=True)
        ]

    def _params(self, message: Outbound) -> dict[str, str | int]:
        params: dict[str, str | int] = {
            "username": self.config.username,
            "password": self.config.password,
            "from": message.sender,
            "to": message.phone,
            "text": message.text,
            "charset": "UTF-8",
            "coding": CODING[message.encoding],
            "dlr-mask": self.options.dlr_mask,
            "dlr-url": self.dlr_url(message.id),
        }
        if self.options.smsc:
            params["smsc"] = self.options.smsc
        return params

    async def _send(self, client: httpx.AsyncClient, message: Outbound) -> Outcome | _Unconnected:
        if message.segments > self.options.max_parts:
            detail = f"{message.segments} parts; Kannel would cut after {self.options.max_parts}"
            return Failed(message.id, permanent=True, code="too_long", detail=detail)
        try:
            answer = await client.get(self.sendsms_url, params=self._params(message))
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return _Unconnected(f"cannot connect: {exc!r}")
        except NOTHING_WRITTEN as exc:
            return Failed(message.id, permanent=False, code="not_sent", detail=repr(exc))
        except httpx.TransportError as exc:
            # Written, and no answer: smsbox may have queued it, and sendsms cannot be asked
            # about it or told to drop a repeat. At most once: never sent again.
            timeout = isinstance(exc, httpx.TimeoutException)
            return Unknown(message.id, "timeout" if timeout else "no_answer", repr(exc))
        return _outcome(message.id, answer)

    def recorded(self, ids: Sequence[int]) -> None:
        pass  # its receipts come from the carrier, whenever they come

    def parse_callback(self, kind: Literal["receipts", "inbound"], call: HttpCallback) -> Parsed:
        """Kannel calls with GET and a query only, one receipt or reply a call (a bad one is
        its only item, rejected); the hub has checked `secret` already."""
        item: Receipt | Inbound | Rejected | None
        if kind == "receipts":
            item = take(0, lambda: _receipt(call.query))
        else:
            item = take(0, lambda: _inbound(call.query))
        return parsed([item], CallbackAnswer())


def _outcome(message_id: int, answer: httpx.Response) -> Outcome:
    """202 `0: Accepted for delivery` / `3: Queued for later delivery` are taken; a 4xx (403
    `Authorization failed for sendsms`, 400 `Sender missing…`, a number denied) will not change
    by retrying; a 5xx (503 `Temporal failure, try again later.`) may."""
    detail = answer.text.strip()[:200]
    if answer.is_success:
        return Accepted(message_id, str(message_id))
    permanent = answer.is_client_error
    return Failed(message_id, permanent=permanent, code=f"http_{answer.status_code}", detail=detail)


def _timestamp(value: str) -> datetime | None:
    """Kannel's `%T` (Unix seconds); None if absent or not a number."""
    if not value.isdigit():
        return None
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (OverflowError, ValueError) as exc:
        raise ValueError(f"kannel callback: time {value[:20]} is out of range") from exc


def _receipt(query: Mapping[str, str]) -> Receipt | None:
    """`ref`, `status` (a Kannel DLR type), `code` (the SMSC's answer, `%A`), `at` (`%T`, the
    time Kannel got the report)."""
    reference, status = _required(query, "ref"), _required(query, "status")
    if not status.isdigit():
        raise ValueError(f"kannel receipt: status {status!r} is not a DLR type")
    final = FINAL_DLR.get(int(status))
    if final is None:
        return None  # buffered (4) or SMSC ack (8): not an outcome yet
    return Receipt(reference, final, _code(query.get("code", "")), _timestamp(query.get("at", "")))


def _code(smsc_answer: str) -> str:
    """As the SMPP adapter says it: `stat`, or `stat/err` when err is not zero, from an SMPP
    receipt's text (`id:… stat:UNDELIV err:011 …`); otherwise what Kannel said (`NACK/0x…/…`)."""
    fields = {name.lower(): value for name, value in _RECEIPT_FIELD.findall(smsc_answer)}
    stat, err = fields.get("stat", "").upper(), fields.get("err", "")
    if not stat:
        return smsc_answer.strip()[:200]
    return f"{stat}/{err}" if err.strip("0") else stat


def _inbound(query: Mapping[str, str]) -> Inbound:
    charset = query.get("charset", "").upper()
    if charset not in ("", "UTF-8", "US-ASCII", "ASCII"):
        # Without smsbox `mo-recode = true` a UCS-2 reply arrives as UTF-16 bytes.
        raise ValueError(f"kannel inbound: charset {charset}; set `mo-recode = true` in smsbox")
    return Inbound(
        phone=_required(query, "from"),
        to=_required(query, "to"),
        text=query.get("text", ""),
        reference=query.get("id", ""),
        at=_timestamp(query.get("ts", "")),
    )


def _required(query: Mapping[str, str], name: str) -> str:
    value = query.get(name, "")
    if not value:
        raise ValueError(f"kannel callback without `{name}`")
    return value


def build(config: GatewayConfig) -> KannelGateway:
    return KannelGateway(config)
