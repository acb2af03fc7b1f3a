"""Campaign jobs: the anniversary greetings, every minute."""

from __future__ import annotations

from typing import Any

from hub import calendar
from hub.campaigns import service
from hub.delivery import service as delivery


async def run_campaigns(ctx: dict[str, Any]) -> int:
    """Greetings due now; how many went."""
    async with ctx["db"].acquire() as conn, conn.transaction():
        greeted = await service.run_due(conn, ctx["settings"], calendar.now())
    if greeted:  # committed: the greetings' batches go on the queue now, not at the next sweep
        await delivery.sweep(ctx["db"], ctx["redis"], ctx["settings"].delivery)
    return greeted
