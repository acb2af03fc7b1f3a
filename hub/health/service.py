"""Readiness checks: can we reach PostgreSQL and Redis right now?"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from arq.connections import ArqRedis

from hub.db import Database

CHECK_TIMEOUT = 2.0


async def _postgres(db: Database) -> None:
    async with db.acquire() as conn:
        await conn.fetchval("SELECT 1")


async def _check(check: Awaitable[object]) -> str:
    """ "ok", or what went wrong: a readiness probe reports failures, it does not raise them."""
    try:
        await asyncio.wait_for(check, CHECK_TIMEOUT)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT:g}s"
    except Exception as exc:  # asyncpg's and redis's own error classes, OSError…
        return f"{type(exc).__name__}: {exc}"
    return "ok"


async def readiness(db: Database, redis: ArqRedis) -> dict[str, str]:
    postgres, redis_ok = await asyncio.gather(_check(_postgres(db)), _check(redis.ping()))
    return {"postgres": postgres, "redis": redis_ok}
