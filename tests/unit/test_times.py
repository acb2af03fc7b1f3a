"""The hub's two ways of writing a time: `rfc3339` for the API, `shown` for people."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from hub import wire
from hub.calendar import TIMESTAMP_PATTERN, rfc3339, shown

KNOWN = datetime(2027, 3, 16, 2, 0, tzinfo=UTC)  # 10:00 in Beijing


def test_the_api_form_is_beijing_time_to_the_microsecond() -> None:
    assert rfc3339(KNOWN) == "2027-03-16T10:00:00.000000+08:00"
    assert rfc3339(KNOWN.replace(microsecond=120)) == "2027-03-16T10:00:00.000120+08:00"
    new_york = timezone(timedelta(hours=-4))
    assert rfc3339(KNOWN.astimezone(new_york)) == rfc3339(KNOWN)
    assert datetime.fromisoformat(rfc3339(KNOWN)) == KNOWN
    # Summer time in China (1986-1991) is long gone: the hub's form is always +08:00.
    assert rfc3339(datetime(1988, 7, 1, tzinfo=UTC)).endswith("+08:00")


def test_people_read_the_beijing_wall_clock() -> None:
    assert shown(KNOWN) == "2027-03-16 10:00"
    assert shown(datetime(2027, 3, 15, 20, 30, tzinfo=UTC), "%Y-%m-%d") == "2027-03-16"


def test_a_naive_time_is_refused_but_postgresql_infinity_is_written() -> None:
    with pytest.raises(ValueError, match="naive"):
        rfc3339(datetime(2027, 3, 16, 10, 0))
    # asyncpg reads timestamptz 'infinity' as the naive datetime.max.
    assert rfc3339(datetime.max) == "9999-12-31T23:59:59.999999+08:00"
    assert re.fullmatch(TIMESTAMP_PATTERN, rfc3339(datetime.min))


class Row(msgspec.Struct):
    at: datetime
    maybe: datetime | None
    nested: list[dict[str, datetime]]
    day: str = "2027-03-16"


def test_one_encoder_writes_every_datetime_in_the_one_form() -> None:
    # msgspec alone writes these three ways: Z, +08:00, with and without a fraction.
    beijing = KNOWN.astimezone(timezone(timedelta(hours=8)))
    row = Row(at=KNOWN, maybe=beijing.replace(microsecond=5), nested=[{"x": KNOWN}])
    assert msgspec.json.decode(wire.encode({"rows": [row], "n": 1})) == {
        "rows": [
            {
                "at": "2027-03-16T10:00:00.000000+08:00",
                "maybe": "2027-03-16T10:00:00.000005+08:00",
                "nested": [{"x": "2027-03-16T10:00:00.000000+08:00"}],
                "day": "2027-03-16",
            }
        ],
        "n": 1,
    }
    assert wire.encode(KNOWN) == b'"2027-03-16T10:00:00.000000+08:00"'
