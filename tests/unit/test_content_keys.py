"""Layer-3 content keys: what counts as the same text, and the key's exact definition."""

from __future__ import annotations

import hashlib

from hub.dedup.service import content_keys, keyer, normalise_body, unpacked


def test_texts_a_reader_calls_equal_normalise_alike() -> None:
    assert normalise_body("  今晚７点\u3000开会 ") == normalise_body("今晚7点 开会")
    assert normalise_body("今晚7点开会") != normalise_body("今晚8点开会")


def test_keys_are_blake2b_of_phone_nul_and_the_normalised_body() -> None:
    phones = ["+8613800138000", "+8618612345678"]
    body = "今晚７点\u3000开会"
    expected = [
        hashlib.blake2b(f"{p}\x00今晚7点 开会".encode(), digest_size=16).digest() for p in phones
    ]
    assert list(content_keys(phones, body)) == expected
    assert list(content_keys(phones, "今晚7点 开会")) == expected
    assert list(content_keys([], body)) == []


def test_keys_computed_one_at_a_time_and_kept_end_to_end_are_the_same_keys() -> None:
    phones = ["+8613800138000", "+8618612345678", "+8613311112222"]
    body = "今晚７点\u3000开会"
    packed = b"".join(map(keyer(body), phones))
    assert len(packed) == 16 * len(phones)
    assert list(unpacked(packed)) == list(content_keys(phones, body))
