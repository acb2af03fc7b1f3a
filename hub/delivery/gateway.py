"""The one Protocol every SMS gateway adapter implements, and the values crossing it.

The worker claims a batch of messages, hands them to `Gateway.submit` with no database
transaction open, and records one `Outcome` per message. Receipts and replies reach the hub two
ways: pushed by the adapter itself (an SMPP `deliver_sm`, the outbox's own receipts) through the
`Events` sink given to `start`, or posted by the gateway over HTTP to
`/v1/gateways/{name}/receipts` and `/v1/gateways/{name}/inbound`, which the adapter parses with
`parse_callback`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal, Protocol

import msgspec

from hub.settings import GatewayConfig

ReceiptStatus = Literal["delivered", "undelivered"]


class Outbound(msgspec.Struct, frozen=True):
    """One message to submit: the full signed text, never cut or altered."""

    id: int  # the hub's message id; adapters pass it on as their client reference where they can
    phone: str  # E.164, "+8613800138000"
    text: str  # 【signature】body
    segments: int
    encoding: Literal["gsm7", "ucs2"]
    sender: str  # source address: the service number + the tenant's SMS extension


class Accepted(msgspec.Struct, frozen=True, tag="accepted"):
    """The gateway took the message; `reference` is its id for it (receipts carry it)."""

    message_id: int
    reference: str


class Failed(msgspec.Struct, frozen=True, tag="failed"):
    """The gateway refused it. Permanent: never retry (bad number, content refused).
    Not permanent: retry later (throttled, busy, connection lost before an answer)."""

    message_id: int
    permanent: bool
    code: str
    detail: str = ""


Outcome = Accepted | Failed


class Receipt(msgspec.Struct, frozen=True):
    """A delivery report for the message the gateway knows as `reference`."""

    reference: str
    status: ReceiptStatus
    code: str = ""  # the carrier's own status or error code, kept for support
    at: datetime | None = None


class Inbound(msgspec.Struct, frozen=True):
    """A mobile-originated reply: from `phone` to the hub's address `to`."""

    phone: str  # as the gateway gives it; the hub normalises it
    to: str  # <service number><tenant extension>[anything]
    text: str
    reference: str = ""  # the gateway's id for the reply, if any (a repeat is stored once)
    at: datetime | None = None


class Events(Protocol):
    """Where an adapter pushes what arrives on its own connection (SMPP deliver_sm, outbox)."""

    async def receipts(self, gateway: str, receipts: Sequence[Receipt]) -> None: ...

    async def inbound(self, gateway: str, replies: Sequence[Inbound]) -> None: ...


class HttpCallback(msgspec.Struct, frozen=True):
    """An HTTP callback as the hub received it, for an adapter to parse."""

    method: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes


class CallbackAnswer(msgspec.Struct, frozen=True):
    """What the hub answers the gateway's callback (each gateway expects its own shape)."""

    status: int = 200
    body: bytes = b"ok"
    media_type: str = "text/plain"


class Parsed(msgspec.Struct, frozen=True):
    receipts: list[Receipt] = []
    replies: list[Inbound] = []
    answer: CallbackAnswer = CallbackAnswer()
    # Items of a batch that could not be read, each with why: the rest are taken all the same.
    refused: list[str] = []


class Gateway(Protocol):
    """One configured gateway. Adapters are built by `build(config)` in their own module."""

    config: GatewayConfig

    async def start(self, events: Events) -> None:
        """Connect (if the kind keeps a connection) and begin pushing events. Idempotent."""
        ...

    async def submit(self, messages: Sequence[Outbound]) -> list[Outcome]:
        """Submit messages; exactly one Outcome per message, in any order. Never raises for a
        message-level error; raises only when the gateway cannot be reached at all (every
        message is then retried)."""
        ...

    def parse_callback(self, kind: Literal["receipts", "inbound"], call: HttpCallback) -> Parsed:
        """Read an HTTP callback (receipts or replies) this kind of gateway sends."""
        ...

    async def close(self) -> None: ...
