"""Message jobs: release scheduled and held sends when their time comes."""

from __future__ import annotations

from typing import Any

from hub.messages import service


async def release_due_sends(ctx: dict[str, Any]) -> int:
    """Scheduled and held sends that are due become queued; how many."""
    async with ctx["db"].acquire() as conn, conn.transaction():
        return len(await service.release_due(conn))
