"""Per-gateway rate limits in segments per second, shared by every worker through Redis.

A token bucket held in Redis and changed by one Lua script, timed by Redis's own clock (workers'
clocks may differ). A caller takes its segments at once, going into debt if it must, and waits
until the debt is paid: so callers are served in the order they asked and the rate is never
exceeded on average over any second. When Redis cannot be reached the caller waits and asks
again; it never sends without a token.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# KEYS[1]: the bucket. ARGV: rate (segments/s), burst (segments), wanted. Returns ms to wait.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate / 1000) - tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], 60000)
if tokens >= 0 then return 0 end
return math.ceil(-tokens * 1000 / rate)
"""

RETRY_SECONDS = 1.0


class Pacer:
    """Rate limits for all gateways, over one Redis connection."""

    def __init__(self, redis: Redis) -> None:
        self._take = redis.register_script(_TAKE)

    async def take(self, gateway: str, segments: int, rate: float) -> None:
        """Wait until `segments` may go to `gateway` without exceeding `rate` per second."""
        burst = max(rate, 1.0)  # at most one second's worth at once after an idle spell
        while True:
            try:
                wait_ms = int(
                    await self._take(keys=[f"hub:rate:{gateway}"], args=[rate, burst, segments])
                )
                break
            except (RedisError, OSError) as exc:
                log.warning("rate limit for %s unavailable (%s); waiting", gateway, exc)
                await asyncio.sleep(RETRY_SECONDS)
        if wait_ms > 0:
            await asyncio.sleep(wait_ms / 1000)

    async def give_back(self, gateway: str, segments: int, rate: float) -> None:
        """Return tokens taken for segments that were not sent after all (best effort)."""
        try:
            await self._take(keys=[f"hub:rate:{gateway}"], args=[rate, max(rate, 1.0), -segments])
        except (RedisError, OSError) as exc:
            log.warning("rate limit for %s: %d tokens not returned (%s)", gateway, segments, exc)
