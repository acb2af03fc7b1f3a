"""Message jobs: release scheduled and held sends when their time comes; park and unpark the
sends of suspended subtrees."""

from __future__ import annotations

from typing import Any

from hub.delivery.service import enqueue_send
from hub.messages import service


async def release_due_sends(ctx: dict[str, Any]) -> int:
    """Scheduled and held sends that are due become queued, and sends whose suspension ended go
    on; their batches are enqueued once that is committed; how many sends. Due sends of
    suspended subtrees are parked meanwhile."""
    async with ctx["db"].acquire() as conn, conn.transaction():
        resumed = await service.unpark_resumed(conn, ctx["settings"])
        await service.park_suspended(conn)
        released = await service.release_due(conn)
    for send_id in [*resumed, *released]:
        await enqueue_send(ctx["db"], ctx["redis"], ctx["settings"].delivery, send_id)
    return len(resumed) + len(released)
