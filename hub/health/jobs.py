"""Worker liveness: each worker records a heartbeat in PostgreSQL every half minute."""

from __future__ import annotations

from typing import Any

from hub.health import repository as sql

HEARTBEAT_SECONDS = 30


async def heartbeat(ctx: dict[str, Any]) -> None:
    async with ctx["db"].acquire() as conn:
        await conn.execute(sql.BEAT, ctx["worker_name"], ctx["worker_started_at"])
