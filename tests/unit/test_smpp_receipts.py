"""The SMPP adapter's receipt reading (hub.delivery.gateways.smpp): the one-match reading of the
usual shape agrees with the field-by-field one on every text, and odd input is read or refused,
never an error."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.delivery.gateway import Receipt, problem
from hub.delivery.gateways import smpp
from hub.delivery.gateways.smpp import gsm_decode, read_receipt

ZONE = ZoneInfo("Asia/Shanghai")
FIELD = re.compile(r"\b(id|sub|dlvrd|submit date|done date|stat|err):(\S*)", re.I)
TEXT = re.compile(r"\btext:", re.I)
STATES = ("DELIVRD", "ACCEPTD", "UNDELIV", "REJECTD", "EXPIRED", "DELETED", "UNKNOWN", "ENROUTE")


def by_fields(text: str) -> Receipt | None:
    """read_receipt as it was before the one-match reading: every field found on its own."""
    fields = {k.lower(): v for k, v in FIELD.findall(TEXT.split(text, 1)[0])}
    stat = fields.get("stat", "").upper()
    if not fields.get("id") or not stat or stat == "ENROUTE":
        return None
    err = fields.get("err", "")
    pattern = {10: "%y%m%d%H%M", 12: "%y%m%d%H%M%S"}.get(len(done := fields.get("done date", "")))
    try:
        at = datetime.strptime(done, pattern).replace(tzinfo=ZONE) if pattern else None
    except ValueError:
        at = None
    return Receipt(
        reference=fields["id"],
        status="delivered" if stat in ("DELIVRD", "ACCEPTD") else "undelivered",
        code=f"{stat}/{err}" if err.strip("0") else stat,
        at=at,
    )


def usual(message_id: str = "3f2a", stat: str = "DELIVRD", err: str = "000", done: str = "") -> str:
    done = done or "2603101000"
    return (
        f"id:{message_id} sub:001 dlvrd:001 submit date:2603100959 done date:{done} "
        f"stat:{stat} err:{err} text:"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (usual(), ("3f2a", "delivered", "DELIVRD")),
        (usual(stat="ACCEPTD"), ("3f2a", "delivered", "ACCEPTD")),
        (usual(stat="UNDELIV", err="001"), ("3f2a", "undelivered", "UNDELIV/001")),
        (usual(stat="REJECTD", err="045"), ("3f2a", "undelivered", "REJECTD/045")),
        (usual(stat="EXPIRED"), ("3f2a", "undelivered", "EXPIRED")),
        (usual(stat="delivrd"), ("3f2a", "delivered", "DELIVRD")),  # any case
        (usual(stat="MK:1024", err="1024"), ("3f2a", "undelivered", "MK:1024/1024")),
        (usual().upper().replace("3F2A", "3f2a"), ("3f2a", "delivered", "DELIVRD")),
        (usual() + "【锦江区】今晚七点", ("3f2a", "delivered", "DELIVRD")),
        (usual().removesuffix(" text:"), ("3f2a", "delivered", "DELIVRD")),  # no text field
        ("stat:UNDELIV id:77 err:002", ("77", "undelivered", "UNDELIV/002")),  # reordered
        ("id:77 stat:DELIVRD", ("77", "delivered", "DELIVRD")),  # fields missing
    ],
)
def test_every_shape_is_read(text: str, expected: tuple[str, str, str]) -> None:
    receipt = read_receipt(text, {}, ZONE)
    assert receipt is not None
    assert (receipt.reference, receipt.status, receipt.code) == expected
    assert receipt == by_fields(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\x00" * 200,
        usual(stat="ENROUTE"),  # intermediate
        usual(message_id=""),  # names no message
        "text:id:1 stat:DELIVRD",  # only in the text
        "hello, this is a reply and not a receipt",
        usual(message_id="a-text:x"),  # its text starts there: nothing after it is read
    ],
)
def test_what_is_no_receipt_is_none(text: str) -> None:
    assert read_receipt(text, {}, ZONE) is None


def test_a_nul_in_a_field_is_read_as_it_is_and_refused_by_the_recorder() -> None:
    receipt = read_receipt(usual(message_id="ab\x00cd"), {}, ZONE)
    assert receipt is not None
    assert receipt.reference == "ab\x00cd"  # gateway.problem() keeps it out of PostgreSQL
    assert problem(receipt) is not None


def test_huge_input_is_read_without_error() -> None:
    huge = usual(message_id="x" * 100_000, done="9" * 50_000)
    receipt = read_receipt(huge, {}, ZONE)
    assert receipt is not None
    assert (len(receipt.reference), receipt.at) == (100_000, None)
    assert problem(receipt) is not None  # too long to store
    assert read_receipt("id:1 " * 50_000 + "stat:DELIVRD", {}, ZONE) == Receipt(
        "1", "delivered", "DELIVRD"
    )


@pytest.mark.parametrize(
    ("done", "expected"),
    [
        ("2603101000", datetime(2026, 3, 10, 10, 0, tzinfo=ZONE)),
        ("260310100059", datetime(2026, 3, 10, 10, 0, 59, tzinfo=ZONE)),
        ("2613101000", None),  # month 13
        ("26031010", None),
        ("260310100x", None),
    ],
)
def test_done_date_is_read_again_from_memory_the_same(done: str, expected: object) -> None:
    for _ in range(2):  # the second reading comes from the memory of dates
        receipt = read_receipt(usual(done=done), {}, ZONE)
        assert receipt is not None
        assert receipt.at == expected


def test_the_memory_of_dates_stays_bounded() -> None:
    for minute in range(smpp.DATE_MEMORY + 10):
        read_receipt(usual(done=f"26031{minute:05d}"), {}, ZONE)
    assert len(smpp._dates) <= smpp.DATE_MEMORY


field = st.text(alphabet=st.sampled_from("0aZ:-_ \x00é"), max_size=6)


@given(
    message_id=field,
    stat=st.one_of(st.sampled_from(STATES), field),
    err=field,
    done=st.one_of(st.sampled_from(["2603101000", "260310100059", "2699999999"]), field),
    tail=st.sampled_from(["", " ", " text:", " text:id:zz stat:UNDELIV", " sub:9", "TEXT:x"]),
)
def test_the_one_match_reading_agrees_with_reading_field_by_field(
    message_id: str, stat: str, err: str, done: str, tail: str
) -> None:
    text = usual(message_id, stat, err, done).removesuffix(" text:") + tail
    assert read_receipt(text, {}, ZONE) == by_fields(text)


@given(st.text(alphabet=st.sampled_from(list("id:subtaerxTEXT 0123 :DELIVR\x00")), max_size=80))
def test_any_text_reads_as_field_by_field(text: str) -> None:
    assert read_receipt(text, {}, ZONE) == by_fields(text)


def slow_gsm_decode(data: bytes) -> str:
    out, escaped = [], False
    for octet in data:
        if escaped:
            out.append(smpp._GSM_UNESCAPED.get(octet, " "))
            escaped = False
        elif octet == 0x1B:
            escaped = True
        else:
            out.append(smpp._GSM_BASIC[octet] if octet < 0x80 else chr(octet))
    return "".join(out)


@given(st.binary(max_size=300))
def test_gsm_decoding_by_table_is_the_octet_by_octet_one(data: bytes) -> None:
    assert gsm_decode(data) == slow_gsm_decode(data)


def test_a_receipt_in_gsm_reads_as_in_ascii() -> None:
    data = usual().encode()
    assert gsm_decode(data) == usual()
    assert gsm_decode(b"\x00\x02\x11\x1b\x65") == "@$_€"
