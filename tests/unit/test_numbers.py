from __future__ import annotations

import pytest
from phonenumbers.carrierdata import CARRIER_DATA

from hub.messages.numbers import (
    Recipient,
    Rejected,
    _carrier,
    _carrier_of_prefix,
    normalize,
    normalize_all,
)


@pytest.mark.parametrize(
    "raw",
    [
        "13800138000",
        "+8613800138000",
        "008613800138000",
        "8613800138000",
        "138 0013 8000",
        "138-0013-8000",
        "(138)00138000",
        "１３８００１３８０００",
        " +86 138.0013.8000 ",
    ],
)
def test_the_ways_people_write_one_number(raw: str) -> None:
    assert normalize(raw) == Recipient(phone="+8613800138000", carrier="中国移动")


@pytest.mark.parametrize(
    ("raw", "carrier"),
    [
        ("18612345678", "中国联通"),
        ("13311112222", "中国电信"),
        ("19212345678", "中国广电"),
        ("13800138000", "中国移动"),
    ],
)
def test_carrier_of_the_original_allocation(raw: str, carrier: str) -> None:
    result = normalize(raw)
    assert isinstance(result, Recipient)
    assert result.carrier == carrier


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "malformed"),
        ("abc", "malformed"),
        ("138001380000000000000000", "malformed"),
        ("12345", "invalid"),
        ("1380013800", "invalid"),
        ("+85291234567", "not_mainland"),
        ("01012345678", "not_mobile"),
    ],
)
def test_rejections_say_why(raw: str, reason: str) -> None:
    assert normalize(raw) == Rejected(to=raw, reason=reason)  # type: ignore[arg-type]


def test_repeats_are_dropped_before_anything_else() -> None:
    recipients, rejected, repeats = normalize_all(
        ["13800138000", "+86 138 0013 8000", "x", "18612345678", "１３８００１３８０００"]
    )
    assert [r.phone for r in recipients] == ["+8613800138000", "+8618612345678"]
    assert [r.to for r in rejected] == ["x"]
    assert repeats == 2


def test_rejected_values_are_echoed_bounded_and_storable() -> None:
    assert normalize("1\x003" + "9" * 100) == Rejected(to="1\ufffd3" + "9" * 61, reason="malformed")
    assert normalize(13800138000) == Recipient(phone="+8613800138000", carrier="中国移动")


def test_a_number_is_checked_whole_not_as_echoed() -> None:
    """Junk past the echo's cut (64 characters) does not make a number of what came before it,
    and a negative integer is not a number with a dash."""
    padded = "13800138000" + " " * 53 + "JUNK-AFTER-64"
    assert normalize(padded) == Rejected(to=padded[:64], reason="malformed")
    assert normalize("13800138000" + " " * 53) == Recipient("+8613800138000", "中国移动")
    assert normalize(-13800138000) == Rejected(to="-13800138000", reason="malformed")
    assert normalize("138-0013-8000") == Recipient("+8613800138000", "中国移动")


def test_the_fast_path_agrees_with_libphonenumber_everywhere() -> None:
    """Every 4-digit mobile prefix 1000 to 1999, several numbers each, as three spellings."""
    import random

    from hub.messages.numbers import _full

    rng = random.Random(2026)
    checked = 0
    for prefix in range(1000, 2000):
        for _ in range(5):
            national = f"{prefix}{rng.randrange(10**7):07d}"
            for spelling in (national, f"+86{national}", f"86{national}"):
                assert normalize(spelling) == _full(spelling, spelling), spelling
                checked += 1
    assert checked == 15_000


def test_the_fast_path_is_fast() -> None:
    """Not a timing assertion: it checks the common case never reaches libphonenumber's parser."""
    import phonenumbers

    calls = 0
    original = phonenumbers.parse

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    phonenumbers.parse = counting  # type: ignore[assignment]
    try:
        normalize_all(["13800138000", "+86 186 1234 5678", "１３３１１１１２２２２"])
    finally:
        phonenumbers.parse = original
    assert calls == 0


def test_a_carrier_looked_up_by_prefix_is_the_one_the_whole_number_has() -> None:
    """The carrier is cached per leading digits (as many as the longest CN prefix in the data):
    for every prefix the data knows, a number starting with it gets the carrier the whole
    number's lookup gives."""
    whole = _carrier_of_prefix.__wrapped__  # the lookup without the cache, on every digit
    prefixes = sorted(k[2:] for k in CARRIER_DATA if k.startswith("861"))
    assert prefixes
    for prefix in prefixes:
        national = (prefix + "0123456789")[:11]
        assert _carrier(national) == whole(national), national
