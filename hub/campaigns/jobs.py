"""Campaign jobs: the anniversary greetings, every minute, a committed batch at a time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from hub import calendar
from hub.campaigns import service
from hub.db import Database
from hub.delivery import service as delivery
from hub.settings import Settings

Committed = Callable[[list[int]], Awaitable[object]]


async def run_due(
    db: Database,
    settings: Settings,
    now: datetime,
    committed: Committed | None = None,
    *,
    batch: int = service.BATCH,
) -> int:
    """Greet everyone whose anniversary is today in campaigns whose time has come; how many.

    Each batch is a transaction of its own on a connection taken for it (on a connection that
    is already inside a transaction, as in tests, each is a savepoint), and `committed` hears
    of its sends once it has committed: the greetings go out while the run goes on, and no
    transaction holds the tenant's quota rows for longer than one batch.
    """
    async with db.acquire() as conn:
        campaigns = await service.due(conn, now)
    greeted = 0
    for campaign in campaigns:
        after: int | None = 0
        while after is not None:
            async with db.acquire() as conn, conn.transaction():
                done = await service.greet_batch(
                    conn, settings, campaign, now, after=after, limit=batch
                )
            greeted += done.greeted
            if done.sends and committed is not None:
                await committed(done.sends)
            after = done.last_contact
    return greeted


async def run_campaigns(ctx: dict[str, Any]) -> int:
    """Greetings due now; how many went. Each batch's sends go on the queue once committed."""
    db, settings, redis = ctx["db"], ctx["settings"], ctx["redis"]

    async def enqueue(sends: list[int]) -> None:
        for send_id in sends:
            await delivery.enqueue_send(db, redis, settings.delivery, send_id)

    return await run_due(db, settings, calendar.now(), enqueue)
