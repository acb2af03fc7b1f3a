"""Billing jobs: fold usage entries into the daily rollup."""

from __future__ import annotations

from typing import Any

from hub.billing import service


async def roll_up_usage(ctx: dict[str, Any]) -> int:
    """Fold what delivery and sending appended into usage_daily; rollup rows changed."""
    changed = 0
    while True:
        async with ctx["db"].acquire() as conn, conn.transaction():
            folded = await service.roll_up(conn)
        changed += folded
        if not folded:
            return changed
