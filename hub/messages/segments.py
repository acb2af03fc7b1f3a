"""How many SMS segments a message costs, counted the way carriers bill it.

The text is `【signature】` + body. If every character is in the GSM 03.38 alphabet, a message of
up to 160 septets is one segment and a longer one is split into 153-septet parts (the extension
characters `^{}\\[~]|€` and form feed take two septets each). Otherwise the text is UCS-2: up to
70 UTF-16 code units is one segment, longer ones go in 67-unit parts, and a character outside the
Basic Multilingual Plane (an emoji, a rare 汉字 from Extension B) is two units. Chinese signatures
use 【】, which are not GSM, so nearly every message here is UCS-2. Never truncate, never replace.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

MAX_CHARACTERS = 500

_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("^{}\\[~]|€\f")


class Segments(msgspec.Struct, frozen=True):
    encoding: Literal["gsm7", "ucs2"]
    # Septets (GSM-7) or UTF-16 code units (UCS-2) of the whole text, signature included.
    units: int
    count: int


def count_segments(text: str) -> Segments:
    """Segments for the full text as sent (signature included)."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENSION for c in text):
        septets = len(text) + sum(1 for c in text if c in _GSM_EXTENSION)
        count = 1 if septets <= 160 else math.ceil(septets / 153)
        return Segments(encoding="gsm7", units=septets, count=count)
    units = len(text.encode("utf-16-le")) // 2
    count = 1 if units <= 70 else math.ceil(units / 67)
    return Segments(encoding="ucs2", units=units, count=count)


def signed(signature: str, body: str) -> str:
    """The text as the phone shows it: `【signature】body`."""
    return f"【{signature}】{body}"
