"""Quota jobs: expire reservations nobody settled in time; return leases past their time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from hub.quota import service

BATCH = 500


async def expire_reservations(ctx: dict[str, Any]) -> int:
    """Expire every overdue reservation, a batch per transaction; returns how many."""
    return await _in_batches(ctx, service.expire_due)


async def return_leases(ctx: dict[str, Any]) -> int:
    """Return every lease past its time or month, a batch per transaction; returns how many."""
    return await _in_batches(ctx, service.return_due_leases)


async def _in_batches(
    ctx: dict[str, Any], step: Callable[[asyncpg.Connection, int], Awaitable[int]]
) -> int:
    """`step` a BATCH at a time, each in its own transaction, until one does less."""
    total = 0
    while True:
        async with ctx["db"].acquire() as conn, conn.transaction():
            done = await step(conn, BATCH)
        total += done
        if done < BATCH:
            return total
