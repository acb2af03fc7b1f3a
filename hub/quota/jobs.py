"""Quota jobs: expire reservations nobody settled in time."""

from __future__ import annotations

from typing import Any

from hub.quota import service

BATCH = 500


async def expire_reservations(ctx: dict[str, Any]) -> int:
    """Expire every overdue reservation, a batch per transaction; returns how many."""
    total = 0
    while True:
        async with ctx["db"].acquire() as conn, conn.transaction():
            expired = await service.expire_due(conn, BATCH)
        total += expired
        if expired < BATCH:
            return total
