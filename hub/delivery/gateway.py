"""The one Protocol every SMS gateway adapter implements, and the values crossing it.

The worker claims a batch of messages, hands them to `Gateway.submit` with no database
transaction open, and records one `Outcome` per message: `Accepted` (in full, or for the parts
that went), `Failed` (refused, and said so) or `Unknown` (written, no answer: at most once, it is
never sent again). docs/ARCHITECTURE.md, "At-most-once rules per gateway", has each adapter's.

Receipts and replies reach the hub two ways: pushed by the adapter itself (an SMPP `deliver_sm`,
the outbox's own receipts) through the `Events` sink given to `start`, or posted by the gateway
over HTTP to `/v1/gateways/{name}/receipts` and `/v1/gateways/{name}/inbound`, which the adapter
parses with `parse_callback`.

One bad item never costs the others: an adapter parses a callback item by item (`take`), and an
item that is malformed or cannot be stored (`problem`: a NUL or another control character in a
phone, address, reference or code, a NUL or broken Unicode in a text, anything far too long)
becomes a `Rejected` with its place and the reason, reported in the answer and the log, while
the rest are recorded. The Recorder applies `problem` again to what adapters push on their own
connection (SMPP deliver_sm, the outbox), so the rule holds for every gateway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Literal, Protocol, TypeVar

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
    """The gateway took the message; `reference` is its id for it (receipts carry it).

    `parts` is set when a multi-part message went only in part: its first parts were taken and
    a later one was refused (or went unanswered). It is how many parts the gateway may have,
    which is what the carrier bills; they are never sent again. 0: all of them. `detail` says
    what happened to the rest."""

    message_id: int
    reference: str
    parts: int = 0
    detail: str = ""


class Failed(msgspec.Struct, frozen=True, tag="failed"):
    """The gateway refused it, and said so: nothing of it was taken. Permanent: never retry (bad
    number, content refused). Not permanent: retry later (throttled, busy, not connected).

    `per_recipient`: the refusal is about this message's phone (a per-number frequency limit, a
    full queue for that handset, a bad number), not about the gateway. Such refusals, and
    permanent ones, never count against the gateway's circuit breaker: one tenant's phones must
    not decide where everyone's traffic goes."""

    message_id: int
    permanent: bool
    code: str
    detail: str = ""
    per_recipient: bool = False


class Unknown(msgspec.Struct, frozen=True, tag="unknown"):
    """It was handed to the gateway and no answer came back (a timeout, the connection lost
    after the request was written): the gateway may have taken it. It is never sent again
    (that could deliver it twice): the hub records it `sent` with "outcome unknown", its quota
    used and its segments billable, exactly as when a worker dies holding it. `parts`: for a
    multi-part message of which only the first parts were written, how many (0: all)."""

    message_id: int
    code: str
    detail: str = ""
    parts: int = 0


Outcome = Accepted | Failed | Unknown


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


class Rejected(msgspec.Struct, frozen=True):
    """An item of a callback that was not taken: its place in the callback (0 for a gateway
    that sends one item per call) and why."""

    index: int
    reason: str


class Parsed(msgspec.Struct, frozen=True):
    receipts: list[Receipt] = []
    replies: list[Inbound] = []
    rejected: list[Rejected] = []
    answer: CallbackAnswer = CallbackAnswer()


MAX_FIELD_CHARS = 200  # a phone, an address, a reference or a carrier's code: never longer
MAX_TEXT_CHARS = 255 * 160  # a reply: 255 parts of 160 GSM-7 characters at the very most
Item = TypeVar("Item", Receipt, Inbound)


def problem(item: Receipt | Inbound) -> str | None:
    """Why an item cannot be stored as it is, or None. PostgreSQL text holds no NUL and only
    valid Unicode; identifiers are short and printable; a reply's text is kept exactly as sent
    (line breaks and all), so one that cannot be kept so is refused, never altered."""
    if isinstance(item, Receipt):
        fields = {"reference": item.reference, "code": item.code}
    else:
        fields = {"phone": item.phone, "to": item.to, "reference": item.reference}
    for name, value in fields.items():
        if len(value) > MAX_FIELD_CHARS:
            return f"{name} is {len(value)} characters long, more than {MAX_FIELD_CHARS}"
        if not value.isprintable():
            return f"{name} {value[:40]!r} holds a control or unprintable character"
    if isinstance(item, Inbound):
        if len(item.text) > MAX_TEXT_CHARS:
            return f"text is {len(item.text)} characters long, more than {MAX_TEXT_CHARS}"
        if "\x00" in item.text:
            return "text holds a NUL character"
        try:
            item.text.encode()
        except UnicodeEncodeError:
            return "text is not valid Unicode"
    return None


def take(index: int, build: Callable[[], Item | None]) -> Item | Rejected | None:
    """One item of a callback: built (None: nothing to record, as for an interim report) and
    checked, or Rejected with the reason the build (ValueError) or `problem` gave."""
    try:
        item = build()
    except ValueError as exc:  # msgspec's DecodeError and ValidationError are ValueErrors
        return Rejected(index, str(exc))
    reason = None if item is None else problem(item)
    return item if reason is None else Rejected(index, reason)


def parsed(items: Iterable[Receipt | Inbound | Rejected | None], answer: CallbackAnswer) -> Parsed:
    """A callback's items sorted into what is recorded and what was rejected."""
    taken = [item for item in items if item is not None]
    return Parsed(
        receipts=[item for item in taken if isinstance(item, Receipt)],
        replies=[item for item in taken if isinstance(item, Inbound)],
        rejected=[item for item in taken if isinstance(item, Rejected)],
        answer=answer,
    )


class Gateway(Protocol):
    """One configured gateway. Adapters are built by `build(config)` in their own module."""

    config: GatewayConfig

    async def start(self, events: Events) -> None:
        """Connect (if the kind keeps a connection) and begin pushing events. Idempotent."""
        ...

    async def submit(self, messages: Sequence[Outbound]) -> list[Outcome]:
        """Submit messages; exactly one Outcome per message, in any order. Never raises for a
        message-level error. Raises a ConnectionError only when the gateway cannot be reached
        at all and nothing was handed over (every message is then retried); any other exception
        leaves every message of the call "outcome unknown" (never sent again)."""
        ...

    def parse_callback(self, kind: Literal["receipts", "inbound"], call: HttpCallback) -> Parsed:
        """Read an HTTP callback (receipts or replies) this kind of gateway sends."""
        ...

    def recorded(self, ids: Sequence[int]) -> None:
        """The hub committed what became of these messages of a `submit` (each `sent`, failed,
        or due again). A gateway that must not report a receipt before that (the outbox, which
        reports its own) may report now; the others have nothing to do."""
        ...

    async def close(self) -> None: ...
