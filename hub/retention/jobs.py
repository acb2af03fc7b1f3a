"""The nightly retention run (arq cron `hub.retention.run.cron`)."""

from __future__ import annotations

from typing import Any

from hub import calendar
from hub.retention import service


async def run_retention(ctx: dict[str, Any]) -> dict[str, int]:
    """Each hour the cron calls it; it runs only in the business day's `run_hour` (03:00 in
    Shanghai by default, whatever the server's time zone). What went, per table (counts)."""
    settings = ctx["settings"]
    now = calendar.now()
    if now.astimezone(calendar.BUSINESS_TZ).hour != settings.retention.run_hour:
        return {}
    gone = await service.run(ctx["db"], settings, now, dry_run=False)
    return {f"{g.what} ({g.how})": g.rows for g in gone}
