"""When a send may go: its `send_at`, and quiet hours (22:00 to 08:00 Asia/Shanghai by default) for
everything but urgent sends. Pure functions of time, so they are tested on fixed instants."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import msgspec

from hub.calendar import BUSINESS_TZ


class QuietHours(msgspec.Struct, frozen=True):
    enabled: bool
    starts: time
    ends: time


def clock(text: str) -> time:
    """'22:00' → time(22, 0)."""
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _in_window(local: time, quiet: QuietHours) -> bool:
    if quiet.starts == quiet.ends:
        return False
    if quiet.starts < quiet.ends:  # e.g. 12:00 to 14:00
        return quiet.starts <= local < quiet.ends
    return local >= quiet.starts or local < quiet.ends  # across midnight, e.g. 22:00 to 08:00


def held_until(instant: datetime, quiet: QuietHours) -> datetime | None:
    """If `instant` falls in the quiet hours, when they end (timezone-aware); else None."""
    if not quiet.enabled:
        return None
    local = instant.astimezone(BUSINESS_TZ)
    if not _in_window(local.timetz().replace(tzinfo=None), quiet):
        return None
    end = local.replace(hour=quiet.ends.hour, minute=quiet.ends.minute, second=0, microsecond=0)
    if end <= local:
        end += timedelta(days=1)
    return end
