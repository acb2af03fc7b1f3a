"""Messages' monthly partitions (migration 0038, hub/messages/sql/months.sql).

A message's id carries its business month, and `messages` is partitioned by RANGE on it:
`messages_before` (the ids from before partitioning), `messages_YYYY_MM`, and a DEFAULT
partition that catches a message of a month whose partition is not made yet. This module makes
this month's partition and the next `AHEAD` months' ahead of time (the worker's daily cron, its
start, `hub migrate`) and gives the id range of a month.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import asyncpg

from hub import calendar
from hub.db import Database

log = logging.getLogger("hub.messages.months")

# Months made ahead of the current one.
AHEAD = 2
# The longest any DDL here waits for its lock on `messages`: sends queue behind a waiting
# ACCESS EXCLUSIVE request, so they wait at most this long, and the DDL tries again later.
LOCK_TIMEOUT = "500ms"
TRIES = 5
PAUSE_SECONDS = 1.0
# The ids of one month span 2^40.
MONTH_SPAN = 1 << 40

# Make the partitions of $1's month and the $2 months after it; the names made.
MAKE_PARTITIONS = "SELECT hub_message_partitions($1, $2) AS name"

T = TypeVar("T")


def month_index(at: datetime) -> int:
    """The month index of an instant in the business time zone (as SQL's hub_month_index)."""
    local = at.astimezone(calendar.BUSINESS_TZ)
    return (local.year - 2000) * 12 + local.month - 1


def month_floor(at: datetime) -> int:
    """The first message id of the business month of `at`."""
    return month_index(at) * MONTH_SPAN


def partition_name(index: int) -> str:
    """`messages_YYYY_MM` of a month index."""
    return f"messages_{2000 + index // 12}_{index % 12 + 1:02d}"


async def briefly_locking(
    db: Database, work: Callable[[asyncpg.Connection], Awaitable[T]], what: str
) -> T:
    """Run `work` in a transaction whose every lock wait ends after LOCK_TIMEOUT, and again
    after a pause when it timed out (up to TRIES times): DDL on `messages` never holds sends
    back for longer than LOCK_TIMEOUT at a time."""
    for attempt in range(1, TRIES + 1):
        try:
            async with db.acquire() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                return await work(conn)
        except asyncpg.exceptions.LockNotAvailableError:
            if attempt == TRIES:
                raise
            log.info("%s: lock not granted within %s (try %d), again", what, LOCK_TIMEOUT, attempt)
            await asyncio.sleep(PAUSE_SECONDS)
    raise AssertionError("unreachable")


async def make_ahead(db: Database, at: datetime | None = None, ahead: int = AHEAD) -> list[str]:
    """Make the partitions of the month of `at` (now) and the `ahead` after it that are
    missing; their names. Rows of such a month caught by the DEFAULT partition move into it in
    the same short transaction."""

    async def work(conn: asyncpg.Connection) -> list[str]:
        rows = await conn.fetch(MAKE_PARTITIONS, at or calendar.now(), ahead)
        return [row["name"] for row in rows]

    made = await briefly_locking(db, work, "making message partitions")
    if made:
        log.info("made message partitions %s", ", ".join(made))
    return made
