"""Per-gateway rate limits in segments per second, shared by every worker through Redis.

A token bucket per gateway (hub.buckets, timed by Redis's own clock). A caller takes its
segments at once, going into debt if it must, and waits until the debt is paid: so callers are
served in the order they asked and the rate is never exceeded on average over any second. When
Redis cannot be reached the caller waits and asks again; it never sends without a token.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from hub.buckets import Buckets, Limit

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0


class Pacer:
    """Rate limits for all gateways, over one Redis connection."""

    def __init__(self, redis: Redis) -> None:
        self._buckets = Buckets(redis)

    async def _take(self, gateway: str, segments: int, rate: float) -> float:
        # At most one second's worth at once after an idle spell.
        limit = Limit(rate=rate, burst=max(rate, 1.0))
        taken = await self._buckets.take([f"hub:rate:{gateway}"], [limit], segments, debt=True)
        return taken.wait_seconds

    async def take(self, gateway: str, segments: int, rate: float) -> None:
        """Wait until `segments` may go to `gateway` without exceeding `rate` per second."""
        while True:
            try:
                wait = await self._take(gateway, segments, rate)
                break
            except (RedisError, OSError) as exc:
                log.warning("rate limit for %s unavailable (%s); waiting", gateway, exc)
                await asyncio.sleep(RETRY_SECONDS)
        if wait > 0:
            await asyncio.sleep(wait)

    async def give_back(self, gateway: str, segments: int, rate: float) -> None:
        """Return tokens taken for segments that were not sent after all (best effort)."""
        try:
            await self._take(gateway, -segments, rate)
        except (RedisError, OSError) as exc:
            log.warning("rate limit for %s: %d tokens not returned (%s)", gateway, segments, exc)
