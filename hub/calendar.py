"""The hub's calendar: what time it is, the business day, and the month a quota or bill is for.

Every "now" the hub acts on comes from `now()` here, and every SQL statement that asks the time
calls `hub_now()` (migration 0015) instead of `now()`. Both read one clock, which is the system
clock unless it was shifted: tests pin a run to a fixed instant (a clean run at 23:59 on the last
day of a month behaves as one at 10:00 mid-month), and `HUB_CLOCK__START` starts a demo or a drill
at a chosen moment. A shifted clock still runs, so leases, retries and windows behave as they
would. The shift reaches PostgreSQL as the connection setting `hub.clock_offset`; a connection
without it reads the server's own clock.

Wall-clock time that belongs to someone else is not the hub's to shift: a webhook's signed
timestamp (the tenant's server checks it against its own clock), a carrier's signed request, and
arq's queue scores (arq compares them with its own `time.time()`).

Times are Beijing time wherever a person reads them. The API writes every instant one way,
`rfc3339()`: RFC 3339 in Beijing time to the microsecond, `2027-03-16T10:00:00.000000+08:00`
(hub.wire applies it to every JSON answer). Pages and exports show `shown()`: the Beijing wall
clock, `2027-03-16 10:00`, beside a note that it is Beijing time.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Annotated
from zoneinfo import ZoneInfo

import msgspec

BUSINESS_TZ = ZoneInfo("Asia/Shanghai")
# Beijing time as people and the API read it: UTC+8. Asia/Shanghai has kept that offset since
# 1991 (it had summer time before), so the fixed zone writes the same digits for every instant
# the hub records, and always the `+08:00` its form promises; and it converts faster.
BEIJING_TIME = timezone(timedelta(hours=8), "CST")
# The connection setting that carries the clock's shift to PostgreSQL's hub_now().
OFFSET_SETTING = "hub.clock_offset"
# A month of this century: the hub's ledgers have no business before 2000 or after 2099.
# `(?!\n)$`: Python's `$` also matches before a final line break; this one does not.
PERIOD_PATTERN = r"^20[0-9]{2}-(0[1-9]|1[0-2])(?!\n)$"
_PERIOD = re.compile(PERIOD_PATTERN)
# How the API writes an instant (`rfc3339`), as a JSON Schema pattern and in words.
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}\+08:00$"
TIMESTAMP_FORM = (
    "RFC 3339 in Beijing time (Asia/Shanghai, UTC+8, no daylight saving), always to the "
    "microsecond: 2027-03-16T10:00:00.000000+08:00"
)
# How a person reads one (`shown`): the Beijing wall clock, to the minute by default.
MINUTE = "%Y-%m-%d %H:%M"
BEIJING = "北京时间"
# A wall-clock time of day, "HH:MM" (quiet hours, a campaign's hour), in Asia/Shanghai.
ClockTime = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9](?!\n)$")]


class Clock:
    """The system clock, shifted by `offset`."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def start_at(self, instant: datetime) -> None:
        """Shift the clock so that it reads `instant` now (and runs on from there)."""
        if instant.tzinfo is None:
            raise ValueError("the clock starts at a timezone-aware instant")
        self.offset = instant - datetime.now(UTC)

    def server_settings(self) -> dict[str, str]:
        """What a new PostgreSQL connection needs so that hub_now() reads this clock."""
        if not self.offset:
            return {}
        return {OFFSET_SETTING: f"{self.offset.total_seconds():.6f} seconds"}


# The process's clock. Tests shift it; nothing else should.
CLOCK = Clock()


def now() -> datetime:
    """The hub's current instant (UTC, timezone-aware)."""
    return CLOCK.now()


def business_day(instant: datetime | None = None) -> date:
    """The day an instant (now by default) falls on in Asia/Shanghai."""
    return (instant or now()).astimezone(BUSINESS_TZ).date()


def day_start(day: date) -> datetime:
    """The instant a business day begins (midnight in Asia/Shanghai)."""
    return datetime(day.year, day.month, day.day, tzinfo=BUSINESS_TZ)


# What a range of days given by a person can reach: none of the hub's records lies outside, and
# a day past either end (0001-01-01, 9999-12-31) is clamped to it rather than overflowing.
EARLIEST_DAY = date(2000, 1, 1)
LATEST_DAY = date(2099, 12, 31)


def days_window(first: date | None, last: date | None) -> tuple[datetime, datetime]:
    """The instants Beijing days `first` to `last` (both included; None: open) cover:
    [first 00:00, the day after last 00:00), clamped to EARLIEST_DAY … LATEST_DAY."""
    start = day_start(min(max(first or EARLIEST_DAY, EARLIEST_DAY), LATEST_DAY))
    end = day_start(max(min(last or LATEST_DAY, LATEST_DAY), EARLIEST_DAY) + timedelta(days=1))
    return start, end


def period_of(instant: datetime) -> date:
    """The month an instant falls in, in Asia/Shanghai (the business day)."""
    local = instant.astimezone(BUSINESS_TZ)
    return date(local.year, local.month, 1)


def current_period() -> date:
    """The month the hub is in now."""
    return period_of(now())


def parse_period(text: str) -> date | None:
    """'2026-11' → date(2026, 11, 1); None when it is not a month."""
    if not _PERIOD.match(text):
        return None
    return date(int(text[:4]), int(text[5:7]), 1)


def period_text(period: date) -> str:
    return period.strftime("%Y-%m")


def next_period(period: date) -> date:
    """The month after: date(2026, 12, 1) → date(2027, 1, 1)."""
    return date(period.year + period.month // 12, period.month % 12 + 1, 1)


def previous_period(period: date) -> date:
    """The month before: date(2027, 1, 1) → date(2026, 12, 1)."""
    return date(period.year - (period.month == 1), (period.month - 2) % 12 + 1, 1)


def days_in(period: date) -> int:
    """How many days the month has: 28 to 31."""
    return (next_period(period) - period).days


def beijing(instant: datetime) -> datetime:
    """The same instant on Beijing's clock (UTC+8). The hub's times are aware: a naive
    one is a bug (its zone is unknown), refused rather than guessed, except PostgreSQL's
    ±infinity, which asyncpg reads as the naive `datetime.max`/`datetime.min`: they stay the
    last and first instants, written on Beijing's clock."""
    if instant.tzinfo is None and instant in (datetime.max, datetime.min):
        return instant.replace(tzinfo=BEIJING_TIME)
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"a naive datetime has no zone to show: {instant!r}")
    return instant.astimezone(BEIJING_TIME)


def rfc3339(instant: datetime) -> str:
    """How the API writes an instant: 2027-03-16T02:00Z → '2027-03-16T10:00:00.000000+08:00'.
    One form for every timestamp: Beijing's offset, and always six fractional digits, so a time
    read back from the API is exactly the stored one (PostgreSQL keeps microseconds)."""
    return beijing(instant).isoformat(timespec="microseconds")


def shown(instant: datetime, pattern: str = MINUTE) -> str:
    """How a person reads an instant (dashboard, exports): Beijing's wall clock,
    2027-03-16T02:00Z → '2027-03-16 10:00'. The page or file says it is Beijing time."""
    return beijing(instant).strftime(pattern)
