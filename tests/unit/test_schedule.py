from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from hub.calendar import BUSINESS_TZ
from hub.messages.schedule import QuietHours, held_until

NIGHT = QuietHours(enabled=True, starts=time(22, 0), ends=time(8, 0))


def shanghai(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=BUSINESS_TZ)


@pytest.mark.parametrize(
    ("at", "until"),
    [
        (shanghai(26, 21, 59), None),
        (shanghai(26, 22, 0), shanghai(27, 8)),
        (shanghai(26, 23, 30), shanghai(27, 8)),
        (shanghai(27, 3, 0), shanghai(27, 8)),
        (shanghai(27, 7, 59), shanghai(27, 8)),
        (shanghai(27, 8, 0), None),
        (shanghai(27, 12, 0), None),
    ],
)
def test_quiet_hours_across_midnight(at: datetime, until: datetime | None) -> None:
    assert held_until(at, NIGHT) == until


def test_utc_instants_are_judged_by_the_shanghai_clock() -> None:
    # 15:00 UTC is 23:00 in Shanghai.
    assert held_until(datetime(2026, 11, 26, 15, 0, tzinfo=UTC), NIGHT) == shanghai(27, 8)


def test_switched_off_or_empty_windows_hold_nothing() -> None:
    assert (
        held_until(shanghai(26, 23), QuietHours(enabled=False, starts=time(22), ends=time(8)))
        is None
    )
    assert (
        held_until(shanghai(26, 23), QuietHours(enabled=True, starts=time(8), ends=time(8))) is None
    )


def test_a_daytime_window() -> None:
    lunch = QuietHours(enabled=True, starts=time(12), ends=time(14))
    assert held_until(shanghai(26, 13), lunch) == shanghai(26, 14)
    assert held_until(shanghai(26, 15), lunch) is None
