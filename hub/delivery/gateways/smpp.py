"""SMPP 3.4: one transceiver session per process to an SMSC, on smpp34 (asyncio over a Rust core).

Configuration (`GatewayConfig`): `host`, `port`; `username` / `password` are the bind's
system_id / password. Options (all optional):
- `window` (10): submit_sm in flight at once, shared by every concurrent `submit` call;
- `system_type` (""), `service_type` (""): what the SMSC asks for, if anything;
- `source_ton` / `source_npi` (0 / 1): the sender (service number + extension);
  `dest_ton` / `dest_npi` (1 / 1): the phone, sent in international form without `+`;
- `enquire_link_seconds` (30): how often the session's liveness is checked (below);
- `connect_timeout_seconds` (10): TCP connect + bind_transceiver_resp;
- `receipt_timezone` ("Asia/Shanghai"): the zone of a receipt's `done date`.

Text: `ucs2` goes as UTF-16-BE with data_coding 8; `gsm7` as data_coding 0 in the GSM 03.38
default alphabet, one septet per octet (unpacked; SMSCs take it that way) with the escape table
for `[]{}^~|\\€`; a gsm7 text with a character outside that alphabet goes as UCS-2. A text longer
than one SMS (70 UTF-16 units / 160 septets) is cut into parts of 67 units / 153 septets (never
inside a surrogate pair or an escape), each carrying a concatenation UDH (IEI 0, one reference
byte per message, counted per gateway) with esm_class UDHI; smpp34 does not split. Parts of one
message go one after another (windowed with everyone else's); receipts are requested
(registered_delivery 1).

Answers: `Accepted.reference` is the submit_sm_resp message_id — for a multi-part message, the
first part's. A submit_sm_resp refusing it with ESME_RTHROTTLED, ESME_RMSGQFUL, ESME_RSYSERR,
ESME_RINVBNDSTS, ESME_RSUBMITFAIL, ESME_RX_T_APPN, ESME_RDELIVERYFAILURE, ESME_RUNKNOWNERR or a
vendor code (0x400-0x4FF) is transient; every other status (ESME_RINVDSTADR, the invalid-
parameter family) is permanent. A session found down before the submit_sm was written is
transient too (nothing went). ESME_RMSGQFUL, ESME_RSUBMITFAIL, ESME_RTHROTTLED and the vendor
codes are taken as about the destination (`Failed.per_recipient`): SMSCs give them for one
phone's queue or limit, so they never count against the circuit breaker.

At most once: a submit_sm that got no submit_sm_resp at all (smpp34 raises ESME_RSYSERR when its
30 s response timer runs out or the connection drops with the PDU written) may be at the SMSC,
and SMPP 3.4 gives no way to ask by our reference, so it is never sent again: part 1 unanswered
makes the message `Unknown`. A later part unanswered or refused (a refusal after up to 3 tries
when transient) leaves the parts before it at the SMSC: the message is `Accepted` under part 1's
id with `parts` = the parts that may have gone (those accepted, plus the unanswered one), which
the carrier bills; nothing of it is sent again, and its receipt is joined from the receipts of
the parts that were accepted. `submit` raises `SmppUnavailable` only when there is no bound
session and a bind fails now (or failed moments ago and the next attempt is not due: backoff
0.25 s doubling to 30 s).

Receipts and replies: a task reads every inbound deliver_sm from smpp34 and does nothing else
(smpp34's transceiver wedges when its inbound queue is not drained promptly, even more so with its
default queue of 1,024; ours holds 100,000). smpp34 answers deliver_sm_resp itself as soon as the
PDU is queued, so a receipt is acknowledged to the SMSC before the hub has stored it: a crash
loses what was queued. A second task parses them and pushes what
arrived together as one `Events.receipts` / `Events.inbound` call, retrying a failed push. A
receipt (esm_class 0x04 or 0x08) is read from its text `id:… stat:… err:…` (or the
receipted_message_id / message_state TLVs): DELIVRD and ACCEPTD are delivered, ENROUTE is skipped,
anything else (UNDELIV, REJECTD, EXPIRED, DELETED, UNKNOWN, carrier codes) undelivered; `code` is
`stat`, or `stat/err` when err is not zero. A multi-part message gets ONE receipt, under its
reference, once every part's receipt is in: delivered if every part was, else the first
undelivered part's status and code. The map from part ids to the message lives in this process's
memory (the latest 100,000 multi-part messages): after a restart, part receipts pass on under
their own ids, so the first part's stands for the whole message and the others match nothing.
A part's receipt may be
read before its submit_sm_resp has been handled: while a multi-part submit is unanswered, unknown
receipts wait (at most 5 s) for it. A reply (MO) becomes `Inbound(phone=source_addr,
to=destination_addr)`, decoded by data_coding (8 UCS-2, 0 GSM unpacked, 1 ASCII, 3 Latin-1, 15
GBK) and joined from its parts (UDH IEI 0/8 or SAR TLVs) when all are in.

Session: `start` binds (a failure is logged, not raised) and keeps it bound: on a disconnect, on
`max(3, window)` submits in a row failing with ESME_RSYSERR (smpp34's session can wedge that way
with no disconnect event) and when smpp34's session task has ended, the session is unbound and a
new one bound, not before 0.25 s and then with backoff. A bind the SMSC refuses (a wrong
password) shows in smpp34 as a bind timeout. smpp34 sends enquire_link itself every 30 s (its
Python API has no setting for it); `enquire_link_seconds` is how often this adapter checks that
smpp34's session task is still running. `submit` may be called concurrently, from tasks of the
event loop `start` ran on (smpp34's futures belong to it).
"""

from __future__ import annotations

import asyncio
import atexit
import codecs
import functools
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import smpp34

from hub.delivery.gateway import (
    Accepted,
    Events,
    Failed,
    HttpCallback,
    Inbound,
    Outbound,
    Outcome,
    Parsed,
    Receipt,
    Unknown,
)
from hub.settings import GatewayConfig

log = logging.getLogger("hub.delivery.smpp")

# --- SMPP numbers ------------------------------------------------------------------------

UCS2, GSM = 8, 0  # data_coding
ESM_UDHI = 0x40
ESM_TYPE = 0x3C  # esm_class bits 2-5: the message type of a deliver_sm
RECEIPT_TYPES = (0x04, 0x08)  # SMSC delivery receipt, SME delivery acknowledgement
TLV_SAR_MSG_REF_NUM, TLV_SAR_TOTAL_SEGMENTS, TLV_SAR_SEGMENT_SEQNUM = 0x020C, 0x020E, 0x020F
TLV_RECEIPTED_MESSAGE_ID, TLV_MESSAGE_STATE = 0x001E, 0x0427

ROK, RSYSERR = 0x00, 0x08
NOT_BOUND = -1  # our own: the session went down before this submit_sm could be sent
NO_ANSWER = -2  # our own: written, and no submit_sm_resp came (timed out, connection lost)
STATUS_NAMES = {
    NOT_BOUND: "unbound",
    NO_ANSWER: "no_submit_sm_resp",
    0x01: "ESME_RINVMSGLEN",
    0x02: "ESME_RINVCMDLEN",
    0x03: "ESME_RINVCMDID",
    0x04: "ESME_RINVBNDSTS",
    0x05: "ESME_RALYBND",
    0x06: "ESME_RINVPRTFLG",
    0x07: "ESME_RINVREGDLVFLG",
    0x08: "ESME_RSYSERR",
    0x0A: "ESME_RINVSRCADR",
    0x0B: "ESME_RINVDSTADR",
    0x0C: "ESME_RINVMSGID",
    0x14: "ESME_RMSGQFUL",
    0x15: "ESME_RINVSERTYP",
    0x43: "ESME_RINVESMCLASS",
    0x45: "ESME_RSUBMITFAIL",
    0x48: "ESME_RINVSRCTON",
    0x49: "ESME_RINVSRCNPI",
    0x50: "ESME_RINVDSTTON",
    0x51: "ESME_RINVDSTNPI",
    0x53: "ESME_RINVSYSTYP",
    0x58: "ESME_RTHROTTLED",
    0x61: "ESME_RINVSCHED",
    0x62: "ESME_RINVEXPIRY",
    0x64: "ESME_RX_T_APPN",
    0x65: "ESME_RX_P_APPN",
    0x66: "ESME_RX_R_APPN",
    0xC0: "ESME_RINVOPTPARSTREAM",
    0xC1: "ESME_ROPTPARNOTALLWD",
    0xC2: "ESME_RINVPARLEN",
    0xC3: "ESME_RMISSINGOPTPARAM",
    0xC4: "ESME_RINVOPTPARAMVAL",
    0xFE: "ESME_RDELIVERYFAILURE",
    0xFF: "ESME_RUNKNOWNERR",
}
# Worth retrying: the SMSC is busy, throttling us, or failed; or we never got an answer.
TRANSIENT = {NOT_BOUND, 0x04, 0x08, 0x14, 0x45, 0x58, 0x64, 0xFE, 0xFF}
# Refusals SMSCs give about one destination (its message queue full, the account throttled for
# a moment, a vendor's per-number code), not about themselves: they never count against the
# circuit breaker (a throttle means slower, not elsewhere). ESME_RSUBMITFAIL (0x45), a general
# failure, does.
PER_DESTINATION = {0x14, 0x58}

INBOUND_CAPACITY = 100_000  # with smpp34's default (1,024) a busy transceiver wedges
LATER_PART_TRIES = 3  # a refused part 2..n leaves the earlier parts sent: try harder
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 30.0
CLOSE_SECONDS = 5.0  # for an unbind to be answered and the reader to see the end
PARK_SECONDS = 5.0  # an unknown receipt waits this long for a multi-part submit to claim it
MULTIPART_MEMORY = 100_000  # multi-part messages whose receipts are being gathered
MO_MEMORY = 10_000  # multi-part replies waiting for their other parts
DISPATCH_BATCH = 1_000
# Receipts and replies read within this long of the first are recorded together: at the
# SMSC's pace (thousands a second) one transaction per ~100 rather than per few.
GATHER_SECONDS = 0.05


def _settle_before_exit() -> None:
    """smpp34's tokio threads may still be finishing a call into Python when the interpreter
    finalizes, which kills the process on exit (SIGSEGV/SIGABRT in ~10 % of short runs here;
    PyO3/pyo3-async-runtimes#40). A pause before finalization lets them finish."""
    time.sleep(0.2)


atexit.register(_settle_before_exit)


class SmppUnavailable(ConnectionError):
    """No bound session, and binding failed (refused, timed out, or in backoff after that)."""


class SmppOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    window: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    system_type: Annotated[str, msgspec.Meta(max_length=12)] = ""
    service_type: Annotated[str, msgspec.Meta(max_length=5)] = ""
    source_ton: Annotated[int, msgspec.Meta(ge=0, le=255)] = 0
    source_npi: Annotated[int, msgspec.Meta(ge=0, le=255)] = 1
    dest_ton: Annotated[int, msgspec.Meta(ge=0, le=255)] = 1
    dest_npi: Annotated[int, msgspec.Meta(ge=0, le=255)] = 1
    enquire_link_seconds: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    connect_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    receipt_timezone: str = "Asia/Shanghai"


# --- text <-> short_message --------------------------------------------------------------

_GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_ESCAPED = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F}
_GSM_ESCAPED |= {"[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65}
_GSM_CODE = {ch: bytes([i]) for i, ch in enumerate(_GSM_BASIC) if ch != "\x1b"}
_GSM_CODE |= {ch: bytes([0x1B, code]) for ch, code in _GSM_ESCAPED.items()}
_GSM_UNESCAPED = {code: ch for ch, code in _GSM_ESCAPED.items()}
_PART_BYTES = {UCS2: 134, GSM: 153}  # 67 UTF-16 units; 153 septets (one per octet)
_SINGLE_BYTES = {UCS2: 140, GSM: 160}


class Pdus(NamedTuple):
    """What one message becomes: the short_message of each submit_sm (UDH included)."""

    data_coding: int
    esm_class: int
    payloads: list[bytes]


def gsm_codes(text: str) -> list[bytes] | None:
    """Each character's septets (one octet each; two for an escaped one), or None if `text` has
    a character outside the GSM 03.38 default alphabet and its extension table."""
    codes = [_GSM_CODE.get(ch) for ch in text]
    return None if None in codes else [c for c in codes if c is not None]


# Each octet's character when no escape (0x1B) is in the way: the basic table, then Latin-1.
_GSM_DECODING = _GSM_BASIC + "".join(map(chr, range(0x80, 0x100)))
assert len(_GSM_DECODING) == 256


def gsm_decode(data: bytes) -> str:
    """Unpacked GSM 03.38 septets to text (octets above 0x7F, which are not GSM, as Latin-1)."""
    if 0x1B not in data:  # every receipt: one table lookup per octet, in C
        return codecs.charmap_decode(data, "strict", _GSM_DECODING)[0]
    out, escaped = [], False
    for octet in data:
        if escaped:
            out.append(_GSM_UNESCAPED.get(octet, " "))
            escaped = False
        elif octet == 0x1B:
            escaped = True
        else:
            out.append(_GSM_BASIC[octet] if octet < 0x80 else chr(octet))
    return "".join(out)


def _ucs2_chunks(text: str) -> list[bytes]:
    data = text.encode("utf-16-be")
    if len(data) <= _SINGLE_BYTES[UCS2]:
        return [data]
    chunks, start = [], 0
    while start < len(data):
        end = min(start + _PART_BYTES[UCS2], len(data))
        if end < len(data) and 0xD8 <= data[end - 2] <= 0xDB:  # a high surrogate: keep the pair
            end -= 2
        chunks.append(data[start:end])
        start = end
    return chunks


def _gsm_chunks(codes: list[bytes]) -> list[bytes]:
    if sum(map(len, codes)) <= _SINGLE_BYTES[GSM]:
        return [b"".join(codes)]
    chunks, current = [], bytearray()
    for code in codes:
        if len(current) + len(code) > _PART_BYTES[GSM]:
            chunks.append(bytes(current))
            current = bytearray()
        current += code
    return [*chunks, bytes(current)]


@functools.lru_cache(maxsize=64)
def _chunked(text: str, encoding: Literal["gsm7", "ucs2"]) -> tuple[int, tuple[bytes, ...]]:
    """`text`'s data_coding and parts, without headers: kept while a batch is submitted (its
    hundreds of messages carry the same text), then dropped (SmppGateway.submit)."""
    codes = gsm_codes(text) if encoding == "gsm7" else None
    coding, chunks = (UCS2, _ucs2_chunks(text)) if codes is None else (GSM, _gsm_chunks(codes))
    return coding, tuple(chunks)


def encode(text: str, encoding: Literal["gsm7", "ucs2"], reference: int) -> Pdus:
    """The submit_sm payloads for `text`; `reference` is the concatenation reference byte."""
    coding, chunks = _chunked(text, encoding)
    if len(chunks) == 1:
        return Pdus(coding, 0, list(chunks))
    if len(chunks) > 255:
        raise ValueError(f"{len(chunks)} parts: a concatenated SMS has at most 255")
    total = len(chunks)
    headers = [bytes([5, 0, 3, reference & 0xFF, total, seq]) for seq in range(1, total + 1)]
    return Pdus(coding, ESM_UDHI, [h + c for h, c in zip(headers, chunks, strict=True)])


def decode(data: bytes, data_coding: int) -> str:
    if data_coding == UCS2:
        return data.decode("utf-16-be", errors="replace")
    if data_coding == GSM:
        return gsm_decode(data)
    charset = {1: "ascii", 3: "latin-1", 15: "gbk"}.get(data_coding, "latin-1")
    return data.decode(charset, errors="replace")


class Concat(NamedTuple):
    """Where one part sits in a concatenated message."""

    reference: int
    total: int
    number: int


def split_udh(data: bytes) -> tuple[Concat | None, bytes]:
    """A short_message with a UDH (esm_class UDHI): its concatenation IE, if any, and the text."""
    if not data:
        return None, data
    header, body = data[1 : 1 + data[0]], data[1 + data[0] :]
    concat, at = None, 0
    while at + 2 <= len(header):
        iei, size = header[at], header[at + 1]
        value = header[at + 2 : at + 2 + size]
        if iei == 0x00 and size == 3:
            concat = Concat(value[0], value[1], value[2])
        elif iei == 0x08 and size == 4:
            concat = Concat(value[0] << 8 | value[1], value[2], value[3])
        at += 2 + size
    return concat, body


def _sar(tlvs: dict[int, smpp34.Tlv]) -> Concat | None:
    tags = (TLV_SAR_MSG_REF_NUM, TLV_SAR_TOTAL_SEGMENTS, TLV_SAR_SEGMENT_SEQNUM)
    ref, total, number = (tlvs.get(tag) for tag in tags)
    if ref is None or total is None or number is None:
        return None
    return Concat(ref.as_int() or 0, total.as_int() or 1, number.as_int() or 1)


# --- receipts ----------------------------------------------------------------------------

_RECEIPT_FIELD = re.compile(r"\b(id|sub|dlvrd|submit date|done date|stat|err):(\S*)", re.I)
_RECEIPT_TEXT = re.compile(r"\btext:", re.I)
_DELIVERED = {"DELIVRD", "ACCEPTD"}
_INTERMEDIATE = {"ENROUTE"}
_STATES = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV", 6: "ACCEPTD"}
_STATES |= {7: "UNKNOWN", 8: "REJECTD"}


# The shape every SMSC we know sends, fields in the appendix's order: read in one match. A text
# of another shape (fields missing, reordered, extra) is read field by field (`_fields`), which
# gives the same answer for this shape too (tests/unit/test_smpp_receipts.py checks it).
_RECEIPT_USUAL = re.compile(
    r"id:(\S*) sub:\S* dlvrd:\S* submit date:\S* done date:(\S*) stat:(\S*) err:(\S*) ?", re.I
)
DATE_MEMORY = 4_096  # `done date` values read: a run of receipts shares a few minutes


def _fields(head: str) -> dict[str, str]:
    """A receipt's fields (before its `text:`), by lower-case name."""
    usual = _RECEIPT_USUAL.fullmatch(head)
    if usual is not None:
        message_id, done, stat, err = usual.groups()
        return {"id": message_id, "done date": done, "stat": stat, "err": err}
    return {k.lower(): v for k, v in _RECEIPT_FIELD.findall(head)}


def read_receipt(text: str, tlvs: dict[int, smpp34.Tlv], zone: ZoneInfo) -> Receipt | None:
    """A receipt's text (SMPP 3.4 appendix B) and TLVs as a Receipt under the part's message id;
    None for an intermediate notification or one that names no message."""
    fields = _fields(_RECEIPT_TEXT.split(text, 1)[0])
    tlv_id = tlvs.get(TLV_RECEIPTED_MESSAGE_ID)
    message_id = (tlv_id.as_string() if tlv_id else None) or fields.get("id", "")
    stat = fields.get("stat", "").upper()
    if not stat and (state := tlvs.get(TLV_MESSAGE_STATE)) is not None:
        stat = _STATES.get(state.as_int() or 0, "UNKNOWN")
    if not message_id or not stat or stat in _INTERMEDIATE:
        return None
    err = fields.get("err", "")
    return Receipt(
        reference=message_id,
        status="delivered" if stat in _DELIVERED else "undelivered",
        code=f"{stat}/{err}" if err.strip("0") else stat,
        at=_receipt_time(fields.get("done date", ""), zone),
    )


_DATE_PATTERNS = {10: "%y%m%d%H%M", 12: "%y%m%d%H%M%S"}  # by length
_dates: dict[tuple[str, ZoneInfo], datetime | None] = {}


def _receipt_time(value: str, zone: ZoneInfo) -> datetime | None:
    """`done date` (YYMMDDhhmm[ss]) in `zone`; None if it is not one. strptime costs more than
    the rest of a receipt, and receipts arriving together share their minute: kept."""
    pattern = _DATE_PATTERNS.get(len(value))
    if pattern is None:
        return None
    key = (value, zone)
    try:
        return _dates[key]
    except KeyError:
        pass
    try:
        at: datetime | None = datetime.strptime(value, pattern).replace(tzinfo=zone)
    except ValueError:
        at = None
    if len(_dates) >= DATE_MEMORY:
        _dates.clear()
    _dates[key] = at
    return at


class _Gathering:
    """One multi-part message's part receipts, until every part has reported."""

    __slots__ = ("failed", "ids", "last", "parts", "remaining")

    def __init__(self, parts: int) -> None:
        self.ids: list[str] = []
        self.parts = self.remaining = parts
        self.failed: Receipt | None = None
        self.last: Receipt | None = None

    def verdict(self, reference: str) -> Receipt:
        """The message's receipt: delivered if every part was, else the first failed part's."""
        assert self.last is not None
        verdict = self.failed or self.last
        return Receipt(reference, verdict.status, verdict.code, self.last.at)


class ReceiptJoiner:
    """Turns the receipts of a multi-part message's parts into one receipt for the message.

    The caller says `sending()` before each multi-part submit_sm and `sent(...)` once it is
    answered; `receipt(...)` for each receipt read. Each returns the receipts to pass on now.
    """

    def __init__(
        self, memory: int = MULTIPART_MEMORY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._memory, self._clock = memory, clock
        self._message_of: dict[str, str] = {}  # a part's id -> its message's reference
        self._gatherings: dict[str, _Gathering] = {}  # reference -> state, oldest first
        self._unanswered = 0  # multi-part submit_sm sent, their part id not yet known
        self._parked: dict[str, tuple[float, Receipt]] = {}  # unknown ids, oldest first

    def sending(self) -> None:
        self._unanswered += 1

    def sent(self, reference: str, part_id: str | None, parts: int) -> list[Receipt]:
        """A part was answered: accepted as `part_id` (None: refused or lost). `reference` is the
        message's (the first part's id: for the first part, `part_id` itself)."""
        self._unanswered -= 1
        ready: list[Receipt] = []
        if part_id:
            gathering = self._gatherings.get(reference)
            if gathering is None:
                gathering = self._gatherings[reference] = _Gathering(parts)
                self._forget_oldest()
            gathering.ids.append(part_id)
            self._message_of[part_id] = reference
            if (parked := self._parked.pop(part_id, None)) is not None:
                ready += self._count(part_id, parked[1])
        return ready + self._release()

    def abandon(self, reference: str) -> None:
        """Forget a message's parts: their receipts pass on under their own ids."""
        gathering = self._gatherings.pop(reference, None)
        for part_id in gathering.ids if gathering else ():
            self._message_of.pop(part_id, None)

    def partial(self, reference: str, accepted: int) -> list[Receipt]:
        """Only the first `accepted` parts of the message were taken (the others will never
        report): its receipt is joined from theirs, and returned if they are all in already."""
        gathering = self._gatherings.get(reference)
        if gathering is None:
            return []
        gathering.remaining -= gathering.parts - accepted
        if gathering.remaining > 0 or gathering.last is None:
            return []
        del self._gatherings[reference]
        return [gathering.verdict(reference)]

    def receipt(self, receipt: Receipt) -> list[Receipt]:
        """A receipt read, under its part's id."""
        if receipt.reference in self._message_of:
            return self._count(receipt.reference, receipt) + self._release()
        if self._unanswered:
            self._parked[receipt.reference] = (self._clock(), receipt)
            return self._release()
        return [receipt, *self._release()]

    def _count(self, part_id: str, receipt: Receipt) -> list[Receipt]:
        reference = self._message_of.pop(part_id)
        gathering = self._gatherings[reference]
        gathering.remaining -= 1
        gathering.last = receipt
        if receipt.status == "undelivered" and gathering.failed is None:
            gathering.failed = receipt
        if gathering.remaining > 0:
            return []
        del self._gatherings[reference]
        return [gathering.verdict(reference)]

    def _release(self) -> list[Receipt]:
        """Parked receipts no unanswered submit can claim any more, as they are."""
        if not self._parked:
            return []
        cutoff = self._clock() - PARK_SECONDS if self._unanswered else float("inf")
        released = []
        for part_id, (parked_at, receipt) in list(self._parked.items()):
            if parked_at >= cutoff:
                break
            released.append(receipt)
            del self._parked[part_id]
        return released

    def _forget_oldest(self) -> None:
        while len(self._gatherings) > self._memory:
            self.abandon(next(iter(self._gatherings)))


class ReplyJoiner:
    """Joins the parts of a multi-part reply; a single-part reply passes straight through."""

    def __init__(self, memory: int = MO_MEMORY) -> None:
        self._memory = memory
        self._parts: dict[tuple[str, str, int, int], dict[int, str]] = {}

    def add(self, phone: str, to: str, concat: Concat | None, text: str) -> str | None:
        if concat is None or concat.total <= 1:
            return text
        key = (phone, to, concat.reference, concat.total)
        parts = self._parts.setdefault(key, {})
        parts[concat.number] = text
        if len(parts) < concat.total:
            while len(self._parts) > self._memory:
                del self._parts[next(iter(self._parts))]
            return None
        del self._parts[key]
        return "".join(parts[n] for n in sorted(parts))


# --- the session -------------------------------------------------------------------------


def _status_of(error: smpp34.SmppError) -> int:
    """smpp34 raises with the status in the message: "ESME_RSYSERR (0x00000008)"."""
    found = re.search(r"0x([0-9A-Fa-f]{8})", str(error))
    return int(found[1], 16) if found else RSYSERR


def failure(message_id: int, status: int, detail: str = "") -> Failed:
    vendor = 0x400 <= status <= 0x4FF
    transient = status in TRANSIENT or vendor
    code = STATUS_NAMES.get(status, f"0x{status:08X}")
    per_recipient = status in PER_DESTINATION or vendor
    return Failed(message_id, not transient, code, detail, per_recipient=per_recipient)


class _Session:
    """One bound transceiver session; `down` once it must not be used any more."""

    def __init__(self, client: smpp34.Client, smsc: smpp34.Smsc) -> None:
        self.client, self.smsc = client, smsc
        self.down = asyncio.Event()
        self.syserr_streak = 0
        self.reader: asyncio.Task[None] | None = None


class SmppGateway:
    """One SMSC account behind the hub's Gateway protocol (see the module docstring)."""

    def __init__(self, config: GatewayConfig) -> None:
        try:
            self.options = msgspec.convert(config.options, SmppOptions, strict=False)
            self._zone = ZoneInfo(self.options.receipt_timezone)
        except (msgspec.ValidationError, ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"gateway {config.name}: invalid options: {exc}") from exc
        if not config.port:
            raise ValueError(f"gateway {config.name}: `port` (the SMSC's) is required")
        self.config = config
        self._events: Events | None = None
        self._inbox: asyncio.Queue[smpp34.DeliverSmEvent | Receipt | None] = asyncio.Queue()
        self._window = asyncio.Semaphore(self.options.window)
        self._binding = asyncio.Lock()
        self._session: _Session | None = None
        self._failed_binds, self._next_bind, self._bind_error = 0, 0.0, ""
        self._receipts, self._replies = ReceiptJoiner(), ReplyJoiner()
        self._concat_reference = random.randrange(256)
        self._dead_after = max(3, self.options.window)
        self._tasks: set[asyncio.Task[None]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def bound(self) -> bool:
        return self._session is not None and not self._session.down.is_set()

    async def start(self, events: Events) -> None:
        if self._events is not None:
            return
        self._events = events
        self._dispatcher = self._spawn(self._dispatch())
        try:
            await self._bound()
        except SmppUnavailable as exc:
            log.warning("%s; binding again in the background", exc)
        self._supervisor = self._spawn(self._supervise())

    async def submit(self, messages: Sequence[Outbound]) -> list[Outcome]:
        if self._events is None:
            raise RuntimeError(f"gateway {self.config.name}: submit before start")
        if not messages:
            return []
        await self._bound()
        # One task per window slot, each taking the next message, not one task per message:
        # the window admits no more at once anyway, and task churn was a tenth of the worker.
        outcomes: list[Outcome | None] = [None] * len(messages)
        turns = iter(range(len(messages)))

        async def slot() -> None:
            for i in turns:  # shared: each slot takes the next message
                outcomes[i] = await self._submit_message(messages[i])

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.options.window, len(messages))):
                    group.create_task(slot())
        finally:
            # The encoded texts are kept for one batch only: a text the hub forgets once
            # delivered (a login code) must not linger in the worker's memory either.
            _chunked.cache_clear()
        return [o for o in outcomes if o is not None]

    def recorded(self, ids: Sequence[int]) -> None:
        pass  # its receipts come from the carrier, whenever they come

    def parse_callback(self, kind: Literal["receipts", "inbound"], call: HttpCallback) -> Parsed:
        raise ValueError("an SMPP gateway pushes receipts and replies on its session, not HTTP")

    async def close(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        if self._session is not None:
            self._retire(self._session, "closing")
        self._inbox.put_nowait(None)  # the dispatcher stops after what is queued before it
        pending = [t for t in self._tasks if t is not self._dispatcher]
        await asyncio.gather(*pending, return_exceptions=True)
        if self._dispatcher is not None:
            try:
                await asyncio.wait_for(self._dispatcher, CLOSE_SECONDS)
            except TimeoutError:
                log.error("smpp %s: receipts and replies still queued were dropped", self.name)

    @property
    def name(self) -> str:
        return self.config.name

    # --- submitting

    async def _submit_message(self, message: Outbound) -> Outcome:
        self._concat_reference = (self._concat_reference + 1) % 256
        try:
            pdus = encode(message.text, message.encoding, self._concat_reference)
        except ValueError as exc:
            return Failed(message.id, permanent=True, code="too_long", detail=str(exc))
        reference, total = "", len(pdus.payloads)
        for number, payload in enumerate(pdus.payloads, 1):
            tries = 1 if number == 1 else LATER_PART_TRIES
            answer = await self._submit_part(message, pdus, payload, reference, tries)
            if isinstance(answer, str):
                reference = reference or answer
                continue
            unanswered = answer.code == STATUS_NAMES[NO_ANSWER]
            if number == 1:
                if unanswered:  # only part 1 was written
                    return Unknown(message.id, answer.code, answer.detail, parts=1)
                return answer
            # Parts 1..number-1 are at the SMSC (and this one too, maybe): never sent again.
            self._pass_on(self._receipts.partial(reference, number - 1))
            went = number if unanswered else number - 1
            what = "had no answer" if unanswered else f"was refused ({answer.code})"
            detail = f"part {number}/{total} {what} after {number - 1} accepted; billed {went}"
            return Accepted(message.id, reference, parts=went, detail=detail)
        return Accepted(message_id=message.id, reference=reference)

    async def _submit_part(
        self, message: Outbound, pdus: Pdus, payload: bytes, reference: str, tries: int
    ) -> str | Failed:
        """The part's message id, or why it was refused (after `tries` for a transient one)."""
        refused: Failed | None = None
        for attempt in range(tries):
            if attempt:
                await asyncio.sleep(0.2 * 2**attempt)
            status, part_id, detail = await self._send(message, pdus, payload, reference)
            if status == ROK:
                return part_id
            refused = failure(message.id, status, detail)
            if refused.permanent or status == NO_ANSWER:  # never write an unanswered part again
                break
        return refused or failure(message.id, NOT_BOUND)

    async def _send(
        self, message: Outbound, pdus: Pdus, payload: bytes, reference: str
    ) -> tuple[int, str, str]:
        """One submit_sm in the window: (command_status, message id, detail)."""
        multipart = len(pdus.payloads) > 1
        async with self._window:
            session = self._session
            if session is None or session.down.is_set():
                return NOT_BOUND, "", "the session went down before this part was sent"
            status, part_id, detail = RSYSERR, "", "cancelled"
            if multipart:
                self._receipts.sending()
            try:
                status, part_id, detail = await self._submit_sm(session, message, pdus, payload)
            finally:
                if multipart:
                    accepted = part_id if status == ROK else None
                    ready = self._receipts.sent(reference or part_id, accepted, len(pdus.payloads))
                    self._pass_on(ready)
            self._note(session, status)
            return status, part_id, detail

    async def _submit_sm(
        self, session: _Session, message: Outbound, pdus: Pdus, payload: bytes
    ) -> tuple[int, str, str]:
        o = self.options
        try:
            resp = await session.smsc.submit_sm(
                message.phone.removeprefix("+"),
                payload,
                source_addr=message.sender,
                service_type=o.service_type,
                source_addr_ton=o.source_ton,
                source_addr_npi=o.source_npi,
                dest_addr_ton=o.dest_ton,
                dest_addr_npi=o.dest_npi,
                esm_class=pdus.esm_class,
                registered_delivery=1,
                data_coding=pdus.data_coding,
            )
        except smpp34.SmppError as exc:
            status = _status_of(exc)
            if status != RSYSERR:  # refused by smpp34's codec, before anything was written
                return status, "", str(exc)
            return NO_ANSWER, "", f"no submit_sm_resp (timed out or connection lost): {exc}"
        if resp.is_success and not resp.message_id:
            log.warning("smpp %s: submit_sm_resp accepted without a message_id", self.name)
        return resp.command_status, resp.message_id or "", ""

    def _note(self, session: _Session, status: int) -> None:
        """A session whose every submit fails with ESME_RSYSERR is wedged (FIELD-NOTES)."""
        if status == ROK:
            session.syserr_streak = 0
        elif status in (RSYSERR, NO_ANSWER):
            session.syserr_streak += 1
            if session.syserr_streak >= self._dead_after:
                self._retire(session, f"{session.syserr_streak} submits in a row ESME_RSYSERR")

    # --- the session's life

    async def _bound(self) -> _Session:
        """The bound session; binds one now if there is none (raising SmppUnavailable if that
        fails, or failed moments ago and the next attempt is not due yet)."""
        if (session := self._session) is not None and not session.down.is_set():
            return session
        async with self._binding:
            if (session := self._session) is not None and not session.down.is_set():
                return session
            loop = asyncio.get_running_loop()
            if self._closing:
                raise SmppUnavailable(f"smpp {self.name}: closed")
            if (wait := self._next_bind - loop.time()) > 0:
                raise SmppUnavailable(
                    f"smpp {self.name}: not bound ({self._bind_error}); next bind in {wait:.1f} s"
                )
            try:
                self._session = await self._bind()
            except smpp34.SmppError as exc:
                self._failed_binds += 1
                backoff = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self._failed_binds - 1))
                self._next_bind, self._bind_error = loop.time() + backoff, str(exc)
                raise SmppUnavailable(f"smpp {self.name}: bind failed: {exc}") from exc
            self._failed_binds, self._next_bind = 0, 0.0
            return self._session

    async def _bind(self) -> _Session:
        c, o = self.config, self.options
        client = smpp34.Client(
            c.host,
            c.port,
            c.username,
            c.password,
            bind_type="TRX",
            system_type=o.system_type,
            window_size=o.window,
            inbound_capacity=INBOUND_CAPACITY,
            connect_timeout_ms=int(o.connect_timeout_seconds * 1000),
        )
        try:
            smsc = await client.connect()
        except smpp34.SmppError:
            await client.stop()  # a bind that timed out may have left a connection open
            raise
        session = _Session(client, smsc)
        session.reader = self._spawn(self._read(session))
        log.info("smpp %s: bound to %s:%d as %s", self.name, c.host, c.port, c.username)
        return session

    async def _read(self, session: _Session) -> None:
        """Move every inbound deliver_sm to the inbox, and nothing else: smpp34 wedges when its
        inbound queue is not drained promptly."""
        try:
            while True:
                event = await session.smsc.next()
                if isinstance(event, smpp34.Disconnected):
                    break
                self._inbox.put_nowait(event)
        finally:
            self._retire(session, "disconnected")

    def _retire(self, session: _Session, reason: str) -> None:
        """Stop using `session` now and unbind it in the background."""
        if session.down.is_set():
            return
        session.down.set()
        if self._session is session:
            self._session = None
        if reason != "closing":
            log.warning("smpp %s: session down (%s)", self.name, reason)
            # Not at once: a bind sent while the SMSC's process is going away can reach its
            # dying listener, and smpp34 then waits out the whole bind timeout.
            again = asyncio.get_running_loop().time() + BACKOFF_FIRST
            self._next_bind, self._bind_error = max(self._next_bind, again), reason
        self._spawn(self._unbind(session))

    async def _unbind(self, session: _Session) -> None:
        try:
            await asyncio.wait_for(session.smsc.unbind(), CLOSE_SECONDS)
        except (TimeoutError, smpp34.SmppError) as exc:
            log.warning("smpp %s: unbind: %r; stopping the session", self.name, exc)
            await session.client.stop()
        reader = session.reader
        if reader is None or reader.done() or reader is asyncio.current_task():
            return
        try:
            await asyncio.wait_for(asyncio.shield(reader), CLOSE_SECONDS)
        except TimeoutError:
            reader.cancel()

    async def _supervise(self) -> None:
        """Keep a session bound: bind again (with backoff) whenever it goes down, and check
        every `enquire_link_seconds` that smpp34's session task is still running."""
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                session = await self._bound()
            except SmppUnavailable:
                await asyncio.sleep(max(self._next_bind - loop.time(), 0.01))
                continue
            try:
                await asyncio.wait_for(session.down.wait(), self.options.enquire_link_seconds)
            except TimeoutError:
                if not await session.client.is_alive():
                    self._retire(session, "smpp34's session task ended")

    # --- receipts and replies

    def _pass_on(self, receipts: list[Receipt]) -> None:
        for receipt in receipts:
            self._inbox.put_nowait(receipt)

    def _take_queued(self, items: list[smpp34.DeliverSmEvent | Receipt | None]) -> None:
        while len(items) < DISPATCH_BATCH and not self._inbox.empty():
            items.append(self._inbox.get_nowait())

    async def _dispatch(self) -> None:
        """Parse what the reader queued and push it to `Events`: what arrives within
        GATHER_SECONDS of the first at once (one transaction records them all)."""
        while True:
            items = [await self._inbox.get()]
            self._take_queued(items)
            if len(items) < DISPATCH_BATCH and None not in items:
                await asyncio.sleep(GATHER_SECONDS)
                self._take_queued(items)
            receipts: list[Receipt] = []
            replies: list[Inbound] = []
            for item in items:
                if isinstance(item, Receipt):
                    receipts.append(item)
                elif item is not None:
                    self._read_deliver_sm(item, receipts, replies)
            assert self._events is not None
            if receipts:
                await self._push(self._events.receipts, receipts)
            if replies:
                await self._push(self._events.inbound, replies)
            if None in items:
                return

    def _read_deliver_sm(
        self, pdu: smpp34.DeliverSmEvent, receipts: list[Receipt], replies: list[Inbound]
    ) -> None:
        tlvs = {tlv.tag: tlv for tlv in pdu.tlvs}
        esm_class, short_message = pdu.esm_class, pdu.short_message
        if esm_class & ESM_TYPE in RECEIPT_TYPES:  # no concatenation to look for
            body = split_udh(short_message)[1] if esm_class & ESM_UDHI else short_message
            text = decode(body, pdu.data_coding)
            receipt = read_receipt(text, tlvs, self._zone)
            if receipt is None:
                log.debug("smpp %s: receipt skipped: %r", self.name, text[:200])
            else:
                receipts += self._receipts.receipt(receipt)
            return
        if esm_class & ESM_UDHI:
            concat, body = split_udh(short_message)
        else:
            concat, body = _sar(tlvs), short_message
        text = decode(body, pdu.data_coding)
        joined = self._replies.add(pdu.source_addr, pdu.destination_addr, concat, text)
        if joined is not None:
            replies.append(Inbound(phone=pdu.source_addr, to=pdu.destination_addr, text=joined))

    async def _push(
        self, sink: Callable[[str, Sequence[Any]], Awaitable[None]], items: Sequence[Any]
    ) -> None:
        """Hand `items` to the hub; on failure retry (they are acknowledged to the SMSC already)."""
        delay = 0.5
        while True:
            try:
                await sink(self.name, items)
                return
            except Exception:
                log.exception("smpp %s: %d events could not be recorded", self.name, len(items))
                if self._closing:
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def build(config: GatewayConfig) -> SmppGateway:
    return SmppGateway(config)
