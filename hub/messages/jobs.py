"""Message jobs: release scheduled and held sends when their time comes."""

from __future__ import annotations

from typing import Any

from hub.delivery.service import enqueue_send
from hub.messages import service


async def release_due_sends(ctx: dict[str, Any]) -> int:
    """Scheduled and held sends that are due become queued, and their batches are enqueued once
    that is committed; how many sends."""
    async with ctx["db"].acquire() as conn, conn.transaction():
        released = await service.release_due(conn)
    for send_id in released:
        await enqueue_send(ctx["db"], ctx["redis"], ctx["settings"].delivery, send_id)
    return len(released)
