"""Which gateway takes a carrier's messages, with one circuit breaker per gateway shared by every
worker process (and host) through Redis.

A carrier goes to the first configured gateway that lists it (or lists no carriers). A gateway
that fails `circuit_failures` chunks in a row is open (skipped) for `circuit_seconds`; its
traffic follows its `fallback` chain. After that time ONE chunk, in one process, tries it again
(half open): a success closes it, a failure opens it again. A chunk fails when nothing of it
was taken and the gateway is to blame (see `verdict`); a chunk refused only for its own phones
or content changes nothing.

The breaker's state in Redis (read as is by /metrics; keep this contract):
- `hub:breaker:{gateway}`, a hash: `failures` (chunks failed in a row, an integer) and
  `open_until` (unix seconds, a decimal number, from Redis's own TIME so hosts' clocks do not
  matter; 0 or absent: never opened). The breaker is open while `failures >= circuit_failures`
  and Redis's time is before `open_until`; half open once that time passed with `failures` still
  at or above the limit; closed otherwise. An absent hash is a closed breaker.
- `hub:breaker:{gateway}:trial`, set (NX, expiring after `circuit_seconds`) by the one process
  that takes the half-open trial; the others keep skipping the gateway until it answers (or the
  key expires, as when that process died, or the process gives it back unused).
Both change only in Lua scripts, so each change is atomic.

When Redis cannot be reached (or does not answer within BREAKER_TIMEOUT_SECONDS) the process
falls back to its own breaker, which it keeps up to date with every outcome: delivery never
waits on Redis for the breaker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from hub.delivery.gateway import Accepted, Failed, Gateway, Outbound, Outcome
from hub.settings import DeliverySettings

log = logging.getLogger(__name__)

# How long a breaker call may wait on Redis before this process decides alone (generous: on a
# busy machine an event loop answers late, and a slow answer is still the shared one).
BREAKER_TIMEOUT_SECONDS = 2.0


def breaker_key(gateway: str) -> str:
    """The Redis hash holding `gateway`'s breaker (see the module docstring)."""
    return f"hub:breaker:{gateway}"


def trial_key(gateway: str) -> str:
    return f"hub:breaker:{gateway}:trial"


# KEYS: the hash, the trial key. ARGV: circuit_failures, circuit_seconds, this router's token.
# Returns 1 if the gateway may take a chunk now (closed), 2 if this caller won the half-open
# trial, 0 if not.
_MAY_TRY = """
local b = redis.call('HMGET', KEYS[1], 'failures', 'open_until')
local failures, open_until = tonumber(b[1]) or 0, tonumber(b[2]) or 0
if failures < tonumber(ARGV[1]) then return 1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if now < open_until then return 0 end
local ttl = math.max(1, math.ceil(tonumber(ARGV[2]) * 1000))
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ttl) then return 2 end
return 0
"""

# KEYS: the trial key. ARGV: this router's token. A trial won but not used (nothing to send)
# goes back at once, if it is still this router's.
_GIVE_BACK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: the hash, the trial key. ARGV: ok (1 or 0), circuit_failures, circuit_seconds.
# A success closes the breaker; a failure counts, and opens it (again) at the limit.
_OUTCOME = """
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'failures', 0, 'open_until', 0)
  redis.call('DEL', KEYS[2])
  return 0
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures >= tonumber(ARGV[2]) then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  redis.call('HSET', KEYS[1], 'open_until', string.format('%.3f', now + tonumber(ARGV[3])))
  redis.call('DEL', KEYS[2])
end
return failures
"""


def verdict(sent: Sequence[Outbound], outcomes: Sequence[Outcome]) -> bool | None:
    """What a chunk's answer says of the gateway: True, it works (it took a message); False, it
    failed (nothing taken, and a message is unknown, unanswered or refused for the gateway's own
    reasons); None, nothing (every message was refused for itself: its phone, its content).

    A chunk is one tenant's messages, so a refusal about a phone must not count: one tenant could
    open the breaker for everyone (phones the carrier rate-limits) or keep it shut during an
    outage (numbers that do not exist)."""
    if any(isinstance(o, Accepted) for o in outcomes):
        return True
    answered = {o.message_id for o in outcomes}
    if any(m.id not in answered for m in sent):
        return False
    blamed = (not isinstance(o, Failed) or not (o.permanent or o.per_recipient) for o in outcomes)
    return False if any(blamed) else None


class Breaker:
    """One process's own breaker: the fallback while Redis is away."""

    def __init__(self, failures: int, seconds: float, clock: Callable[[], float]) -> None:
        self.limit, self.seconds, self.clock = failures, seconds, clock
        self.failures = 0
        self.open_until = 0.0

    @property
    def open(self) -> bool:
        return self.failures >= self.limit and self.clock() < self.open_until

    def success(self) -> None:
        self.failures = 0

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.limit:
            self.open_until = self.clock() + self.seconds


class Router:
    """Routes over the shared breakers in `redis` (None: this process's own only)."""

    def __init__(
        self,
        gateways: Mapping[str, Gateway],
        settings: DeliverySettings,
        redis: Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateways = dict(gateways)
        self.settings = settings
        self.breakers = {
            name: Breaker(settings.circuit_failures, settings.circuit_seconds, clock)
            for name in self.gateways
        }
        self._may_try = redis.register_script(_MAY_TRY) if redis is not None else None
        self._outcome = redis.register_script(_OUTCOME) if redis is not None else None
        self._give_back = redis.register_script(_GIVE_BACK) if redis is not None else None
        # Names this router's trials in Redis; the gateways whose trial it holds.
        self._token = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self.trials: set[str] = set()

    def primary(self, carrier: str) -> Gateway:
        for gateway in self.gateways.values():
            if not gateway.config.carriers or carrier in gateway.config.carriers:
                return gateway
        return next(iter(self.gateways.values()))

    async def _closed(self, name: str) -> bool:
        """May `name` take a chunk now: the shared breaker's word, or this process's own."""
        if self._may_try is not None:
            try:
                async with asyncio.timeout(BREAKER_TIMEOUT_SECONDS):
                    answer = int(
                        await self._may_try(
                            keys=[breaker_key(name), trial_key(name)],
                            args=[
                                self.settings.circuit_failures,
                                self.settings.circuit_seconds,
                                self._token,
                            ],
                        )
                    )
                if answer == 2:
                    self.trials.add(name)
                return answer > 0
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("breaker %s: Redis unavailable (%r); this process decides", name, exc)
        return not self.breakers[name].open

    async def route(self, carrier: str) -> Gateway:
        """The gateway for `carrier` now: its primary, or the first closed one down the fallbacks
        (the primary again when every one is open: somebody must try)."""
        first = gateway = self.primary(carrier)
        seen: set[str] = set()
        while gateway.config.name not in seen:
            if await self._closed(gateway.config.name):
                return gateway
            seen.add(gateway.config.name)
            fallback = gateway.config.fallback
            if fallback is None or fallback not in self.gateways:
                break
            gateway = self.gateways[fallback]
        return first

    async def outcome(self, gateway: str, ok: bool) -> None:
        """A chunk's outcome at `gateway`, counted here and in the shared breaker."""
        self.trials.discard(gateway)
        breaker = self.breakers[gateway]
        breaker.success() if ok else breaker.failure()
        if self._outcome is None:
            return
        try:
            async with asyncio.timeout(BREAKER_TIMEOUT_SECONDS):
                await self._outcome(
                    keys=[breaker_key(gateway), trial_key(gateway)],
                    args=[int(ok), self.settings.circuit_failures, self.settings.circuit_seconds],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("breaker %s: outcome kept in this process only (%r)", gateway, exc)

    async def answered(
        self, gateway: str, sent: Sequence[Outbound], outcomes: Sequence[Outcome]
    ) -> None:
        """A chunk's answer at `gateway`, for its breaker (see `verdict`): a success, a
        failure, or nothing learnt (as if unused)."""
        ok = verdict(sent, outcomes)
        if ok is None:
            await self.unused(gateway)
        else:
            await self.outcome(gateway, ok)

    async def unused(self, gateway: str) -> None:
        """The chunk routed to `gateway` had nothing to send, or its answer said nothing of the
        gateway: a half-open trial this router won goes back, so the next chunk (any
        process's) tries at once rather than after `circuit_seconds`."""
        if gateway not in self.trials or self._give_back is None:
            return
        self.trials.discard(gateway)
        try:
            async with asyncio.timeout(BREAKER_TIMEOUT_SECONDS):
                await self._give_back(keys=[trial_key(gateway)], args=[self._token])
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("breaker %s: trial not given back (%r); it expires", gateway, exc)
