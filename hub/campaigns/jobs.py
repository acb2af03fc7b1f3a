"""Campaign jobs: the anniversary greetings, every minute."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hub.campaigns import service


async def run_campaigns(ctx: dict[str, Any]) -> int:
    """Greetings due now; how many went."""
    async with ctx["db"].acquire() as conn, conn.transaction():
        return await service.run_due(conn, ctx["settings"], datetime.now(UTC))
