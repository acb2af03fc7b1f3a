"""Quota jobs: expire reservations nobody settled in time; return leases past their time."""

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


async def return_leases(ctx: dict[str, Any]) -> int:
    """Return every lease past its time or month, a batch per transaction; returns how many."""
    total = 0
    while True:
        async with ctx["db"].acquire() as conn, conn.transaction():
            returned = await service.return_due_leases(conn, BATCH)
        total += returned
        if returned < BATCH:
            return total
