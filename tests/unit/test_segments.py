"""Golden cases for segment counting, as Alibaba, Tencent and Huawei document and bill them."""

from __future__ import annotations

import pytest

from hub.messages.segments import count_segments, signed


def test_published_example_160_chinese_characters_is_three_segments() -> None:
    text = "党" * 160
    result = count_segments(text)
    assert (result.encoding, result.units, result.count) == ("ucs2", 160, 3)  # 67 + 67 + 26


def test_signature_brackets_count() -> None:
    assert len("【朝阳区委组织部】") == 9
    assert count_segments(signed("朝阳区委组织部", "通" * 61)).count == 1  # 70 units
    assert count_segments(signed("朝阳区委组织部", "通" * 62)).count == 2  # 71 units


@pytest.mark.parametrize(
    ("units", "segments"),
    [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4), (500, 8)],
)
def test_ucs2_boundaries(units: int, segments: int) -> None:
    assert count_segments("组" * units).count == segments


def test_characters_outside_the_bmp_are_two_units() -> None:
    # 𠀀 (U+20000, CJK Extension B) and an emoji are surrogate pairs in UTF-16.
    text = "𠀀" * 35
    assert count_segments(text).units == 70
    assert count_segments(text).count == 1
    assert count_segments("𠀀" * 35 + "😀").count == 2


@pytest.mark.parametrize(
    ("text", "septets", "segments"),
    [
        ("a" * 160, 160, 1),
        ("a" * 161, 161, 2),
        ("a" * 306, 306, 2),
        ("a" * 307, 307, 3),
        ("{" * 80, 160, 1),  # extension characters take two septets
        ("{" * 81, 162, 2),
        ("€" + "a" * 158, 160, 1),
    ],
)
def test_gsm7(text: str, septets: int, segments: int) -> None:
    result = count_segments(text)
    assert (result.encoding, result.units, result.count) == ("gsm7", septets, segments)


def test_one_non_gsm_character_makes_it_ucs2() -> None:
    assert count_segments("a" * 159 + "é").encoding == "gsm7"  # é is in GSM 03.38
    result = count_segments("a" * 70 + "ê")  # ê is not
    assert (result.encoding, result.count) == ("ucs2", 2)
