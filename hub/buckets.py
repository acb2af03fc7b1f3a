"""Token buckets: in Redis, shared by every process, or in one process when Redis is away.

One Lua script changes one or several buckets at once, timed by Redis's own clock (the
processes' clocks may differ). A bucket holds at most `burst` tokens and gains `rate` a second.
A caller asks for `wanted` tokens from every bucket it names, in one of two ways:
- `debt=True` (gateway pacing): take them even if the bucket goes negative, and wait until the
  debt is paid, so callers are served in the order they asked and the rate holds on average;
- `debt=False` (request limits): take them from every bucket only if every bucket has them, or
  take nothing and say how long until they would all have them.

`LocalBuckets` is the same arithmetic in one process, on a monotonic clock: the request
limiter's fallback while Redis cannot be reached (hub.limits).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import msgspec
from redis.asyncio import Redis

# KEYS: the buckets. ARGV: wanted, debt (1 or 0), then rate (tokens/s) and burst of each bucket.
# Returns {ms to wait, index (1-based) of the bucket that is shortest, tokens left in each}.
_TAKE = """
local wanted = tonumber(ARGV[1])
local debt = ARGV[2] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens, wait, shortest = {}, 0, 1
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local b = redis.call('HMGET', key, 'tokens', 'at')
  local at = tonumber(b[2]) or now
  tokens[i] = math.min(burst, (tonumber(b[1]) or burst) + (now - at) * rate / 1000)
  local need = math.ceil((wanted - tokens[i]) * 1000 / rate)
  if need > wait then wait, shortest = need, i end
end
local take = debt or wait == 0
local answer = {wait, shortest}
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  if take then tokens[i] = tokens[i] - wanted end
  redis.call('HSET', key, 'tokens', tostring(tokens[i]), 'at', tostring(now))
  -- Gone once it would be full again: an absent bucket is a full one.
  redis.call('PEXPIRE', key, math.max(1000, math.ceil((burst - tokens[i]) * 1000 / rate) + 1000))
  answer[i + 2] = math.floor(tokens[i])
end
return answer
"""


class Limit(msgspec.Struct, frozen=True):
    """A bucket's shape: `rate` tokens a second, at most `burst` held."""

    rate: float
    burst: float


class Taken(msgspec.Struct, frozen=True):
    # 0 when the tokens were granted without waiting; else seconds until they would be.
    wait_seconds: float
    # The bucket that needs the longest wait (or, granted, the first).
    shortest: int
    # Whole tokens left in each bucket, in the order asked.
    left: list[int]


def _taken(answer: Sequence[int]) -> Taken:
    return Taken(
        wait_seconds=max(0, int(answer[0])) / 1000,
        shortest=int(answer[1]) - 1,
        left=[int(n) for n in answer[2:]],
    )


class Buckets:
    """Buckets in Redis, over one client."""

    def __init__(self, redis: Redis) -> None:
        self._take = redis.register_script(_TAKE)

    async def take(
        self, keys: Sequence[str], limits: Sequence[Limit], wanted: float, *, debt: bool
    ) -> Taken:
        """Take `wanted` from each bucket (see the module docstring); raises RedisError/OSError."""
        shapes = [x for limit in limits for x in (limit.rate, limit.burst)]
        answer = await self._take(keys=list(keys), args=[wanted, int(debt), *shapes])
        return _taken(answer)


class LocalBuckets:
    """The same buckets held in this process (never debt: request limits only)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # key → (tokens, at in ms)
        self._buckets: dict[str, tuple[float, int]] = {}

    def take(self, keys: Sequence[str], limits: Sequence[Limit], wanted: float) -> Taken:
        now = int(self._clock() * 1000)
        tokens, wait, shortest = [], 0, 0
        for i, (key, limit) in enumerate(zip(keys, limits, strict=True)):
            have, at = self._buckets.get(key, (limit.burst, now))
            have = min(limit.burst, have + (now - at) * limit.rate / 1000)
            tokens.append(have)
            need = math.ceil((wanted - have) * 1000 / limit.rate)
            if need > wait:
                wait, shortest = need, i
        if wait == 0:
            tokens = [have - wanted for have in tokens]
        for key, have in zip(keys, tokens, strict=True):
            self._buckets[key] = (have, now)
        return Taken(
            wait_seconds=wait / 1000, shortest=shortest, left=[math.floor(t) for t in tokens]
        )
