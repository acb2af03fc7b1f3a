"""Recipients: phone numbers normalised to E.164, mainland mobiles only, with their carrier.

Accepts what people paste from rosters: +86 / 0086 / 86 prefixes, spaces, dashes, dots,
parentheses and full-width digits (１３８…). The carrier is the number's original allocation
(中国移动, 中国联通, 中国电信, 中国广电; numbers can be ported): a routing hint, not a fact.
"""

from __future__ import annotations

import asyncio
import functools
import re
import unicodedata
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Literal

import msgspec
import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType, carrier
from phonenumbers.carrierdata import CARRIER_DATA, CARRIER_LONGEST_PREFIX

CARRIERS = ("中国移动", "中国联通", "中国电信", "中国广电")
# Why a recipient is not sent to: its number, or (a personal body) no roster value for one of
# the body's placeholders, or its own text over the limit (hub.messages.personal).
Reason = Literal[
    "malformed",
    "invalid",
    "not_mainland",
    "not_mobile",
    "unknown_contact",
    "missing_value",
    "unfit_value",
    "too_long",
]
_SEPARATORS = re.compile(r"[\s\-.()（）]")
# The fast path, for the common case of an 11-digit mainland mobile: libphonenumber's own mobile
# pattern for CN and its carrier prefixes, without building a PhoneNumber (about 9 times faster;
# tests check that it agrees with the full path).
_NATIONAL_MOBILE = re.compile(r"(?:\+?86)?(1[0-9]{10})")


def _cn_mobile_pattern() -> re.Pattern[str]:
    metadata = PhoneMetadata.metadata_for_region("CN")
    pattern = metadata.mobile.national_number_pattern if metadata and metadata.mobile else None
    assert pattern, "phonenumbers ships metadata for CN mobiles"
    return re.compile(pattern)


_CN_MOBILE = _cn_mobile_pattern()


# Untracked by the cyclic GC (they hold only strings): a million of them made each full
# collection walk them all, pausing the process for a fifth of a second at a time.
class Recipient(msgspec.Struct, frozen=True, gc=False):
    phone: str  # E.164, e.g. +8613800138000
    carrier: str  # one of CARRIERS, or "unknown"


class Rejected(msgspec.Struct, frozen=True, gc=False):
    to: str
    reason: Reason


# The longest value taken for a number (a mobile with +86, spaces and dashes is under 25): one
# longer is malformed, and is echoed cut to this length.
ECHO_CHARS = 64


def _echo(raw: str) -> str:
    """A rejected value as we echo and store it: bounded, and without NUL (PostgreSQL text
    cannot hold it)."""
    return raw[:ECHO_CHARS].replace("\x00", "\ufffd")


# How many leading digits of a national number decide its carrier: the longest prefix the CN
# carrier data has (4 today). Every number sharing them has the same carrier, so it is looked
# up once per prefix (the lookup was half the time of normalising a number).
_CARRIER_DIGITS = max(len(k) for k in CARRIER_DATA if k.startswith("86")) - 2


def _carrier(national: str) -> str:
    return _carrier_of_prefix(national[:_CARRIER_DIGITS])


@functools.cache
def _carrier_of_prefix(national: str) -> str:
    digits = "86" + national
    for length in range(min(CARRIER_LONGEST_PREFIX, len(digits)), 2, -1):
        names = CARRIER_DATA.get(digits[:length])
        if names:
            name = names.get("zh", "")
            return name if name in CARRIERS else "unknown"
    return "unknown"


def normalize(raw: str | int) -> Recipient | Rejected:
    given = str(raw)
    # The commonest spelling, 11 ASCII digits from 1: nothing to strip, cut or echo first (half
    # the time a million such numbers took; the test of the fast path checks it too).
    if len(given) == 11 and given.isascii() and given.isdigit() and given[0] == "1":
        if _CN_MOBILE.fullmatch(given):
            return Recipient(phone="+86" + given, carrier=_carrier(given))
    shown = _echo(given)
    # Checked whole, not as echoed: a number with junk past the echo's cut is no number; nor is
    # a negative integer (its sign is not a separator).
    if len(given) > ECHO_CHARS or (isinstance(raw, int) and raw < 0):
        return Rejected(to=shown, reason="malformed")
    text = shown if shown.isascii() else unicodedata.normalize("NFKC", shown)
    text = _SEPARATORS.sub("", text)
    if text.startswith("00"):
        text = "+" + text[2:]
    fast = _NATIONAL_MOBILE.fullmatch(text)
    if fast and _CN_MOBILE.fullmatch(fast[1]):
        return Recipient(phone="+86" + fast[1], carrier=_carrier(fast[1]))
    return _full(shown, text)


def _full(raw: str, text: str) -> Recipient | Rejected:
    """Everything else, through libphonenumber: it also says why a number is not usable."""
    if not re.fullmatch(r"\+?[0-9]{5,20}", text):
        return Rejected(to=raw, reason="malformed")
    try:
        number = phonenumbers.parse(text, "CN")
    except phonenumbers.NumberParseException:
        return Rejected(to=raw, reason="malformed")
    if not phonenumbers.is_valid_number(number):
        return Rejected(to=raw, reason="invalid")
    if phonenumbers.region_code_for_number(number) != "CN":
        return Rejected(to=raw, reason="not_mainland")
    if phonenumbers.number_type(number) != PhoneNumberType.MOBILE:
        return Rejected(to=raw, reason="not_mobile")
    name = carrier.name_for_number(number, "zh")
    return Recipient(
        phone=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        carrier=name if name in CARRIERS else "unknown",
    )


class Collected:
    """Unique valid recipients in first-seen order, the rejects, and the repeats, so far."""

    def __init__(self) -> None:
        self.seen: dict[str, Recipient] = {}
        self.rejected: list[Rejected] = []
        self.repeats = 0

    def stream(self, raws: Iterable[str | int]) -> Iterator[Recipient]:
        """Each new unique valid recipient of `raws` as it is found (rejects and repeats are
        counted as they go by)."""
        for raw in raws:
            result = normalize(raw)
            if isinstance(result, Rejected):
                self.rejected.append(result)
            elif result.phone in self.seen:
                self.repeats += 1
            else:
                self.seen[result.phone] = result
                yield result

    def add(self, raws: Iterable[str | int]) -> None:
        for _ in self.stream(raws):
            pass

    async def stream_in_turns(
        self, raws: Sequence[str | int], every: int = 100
    ) -> AsyncIterator[Recipient]:
        """`stream`, letting the event loop serve other requests after every `every` numbers
        (rejects and repeats too): a million take seconds of CPU, which must not stall everyone
        else's requests in this process (docs/BENCHMARKS.md, "a million-recipient send and the
        other tenants")."""
        for start in range(0, len(raws), every):
            for recipient in self.stream(raws[start : start + every]):
                yield recipient
            await asyncio.sleep(0)

    def result(self) -> tuple[list[Recipient], list[Rejected], int]:
        return list(self.seen.values()), self.rejected, self.repeats


def normalize_all(raws: list[str | int]) -> tuple[list[Recipient], list[Rejected], int]:
    """Unique valid recipients in first-seen order, the rejects, and how many repeats there were."""
    collected = Collected()
    collected.add(raws)
    return collected.result()


async def normalize_all_in_turns(
    raws: list[str | int], every: int = 100
) -> tuple[list[Recipient], list[Rejected], int]:
    """normalize_all, letting the event loop serve other requests (Collected.stream_in_turns)."""
    collected = Collected()
    async for _ in collected.stream_in_turns(raws, every):
        pass
    return collected.result()
