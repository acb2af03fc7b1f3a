"""Request-rate limits per API key, per tenant and per division, and the operator's overrides.

Every request an API key makes costs units (`cost_of`) taken from token buckets at once: its
key's, its tenant's (all the tenant's keys together) and, for a unit, its division's (all the
units of the province, prefecture or county they lie in, down to units' units: else a county
multiplied its limits by creating units, up to 2,000 of them; the division itself is not charged
to it, so its units cannot shut it out). All are held in Redis and so shared by every API
process (hub.buckets). Any bucket short → 429 with how long to wait, and nothing is taken from
the others. What a request costs:
- a read (GET) 1; any other write 2;
- a send (POST /v1/messages) 5, a roster import 20, a statement export 5: they cost the hub more;
- and 1 more per 64 KiB of declared body (a million-recipient send, ~14 MB, costs 5 + 213; a
  body sent chunked, its length unknown until read, as the largest its route takes), never
  more than a full bucket, so any legal request can get through once the bucket is full.

The console's heavy writes (its roster previews and their confirmation, its send) are charged
the same way by its sign-in check, before their body is read, to the signed-in person's bucket
(a key's shape), the tenant's and the division's: 50 parallel 20 MB previews by one person once
took a process from 1.1 to 3.6 GB and another county's request to 27 s. Its other forms (an SMS
code, ending a session) are not: a unit's keys at their limit must not keep a person from
securing an account.

When Redis does not answer, each process limits on its own with the same buckets in memory, its
share of the rate (rate / HUB_HTTP__WORKERS), for HUB_LIMITS__FALLBACK_SECONDS before asking
Redis again: never unlimited, never refusing everything.

Litestar's own RateLimitConfig was not enough: a fixed window per identifier over a Store (so
twice the limit across a window's edge, one identifier per request rather than a key and its
tenant charged atomically, one cost for every route, no per-tenant overrides), and a Store that
fails fails the request instead of falling back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Literal

import asyncpg
import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from hub.buckets import Buckets, Limit, LocalBuckets, Taken
from hub.db import Database
from hub.errors import Forbidden, RateLimited
from hub.limits import repository as sql
from hub.limits.repository import OverrideRow
from hub.limits.schemas import RateLimitsSetting, RateLimitsView
from hub.settings import LimitsSettings
from tenants.auth import READS
from tenants.repository import TenantRow
from tenants.service import ROOT_CODE, Principal, division_code

log = logging.getLogger(__name__)

FIELDS = ("key_rate", "key_burst", "tenant_rate", "tenant_burst")

# Routes that cost more than a plain read or write, by method and route template; the
# dashboard's are the only ones of its routes charged at all.
COSTS: dict[tuple[str, str], int] = {
    ("POST", "/v1/messages"): 5,
    ("POST", "/v1/contacts/import"): 20,
    ("GET", "/v1/billing/{period}/statement.csv"): 5,
    ("GET", "/v1/billing/{period}/statement.xlsx"): 5,
    ("POST", "/dashboard/contacts/import"): 20,
    ("POST", "/dashboard/contacts/import/confirm"): 20,
    ("POST", "/dashboard/compose/roster"): 20,
    ("POST", "/dashboard/compose/send"): 5,
}
BODY_UNIT = 64 * 1024


class Limits(msgspec.Struct, frozen=True):
    key: Limit
    tenant: Limit


Bucket = Literal["key", "tenant", "division"]
BUCKETS: tuple[Bucket, ...] = ("key", "tenant", "division")


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    # Refused: seconds until the request would be let through.
    retry_after: float
    # The bucket nearest to empty (refused: the one that refused), its shape and whole units left.
    bucket: Bucket
    limit: Limit
    left: int
    # False while Redis is unreachable and this process limits on its own.
    shared: bool

    def headers(self) -> dict[str, str]:
        """RateLimit-* (IETF draft): the bucket's size, what is left, seconds until it is full."""
        left = max(self.left, 0)
        reset = math.ceil((self.limit.burst - left) / self.limit.rate)
        headers = {
            "RateLimit-Limit": str(math.floor(self.limit.burst)),
            "RateLimit-Remaining": str(left),
            "RateLimit-Reset": str(max(reset, 0)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


def in_force(defaults: LimitsSettings, row: OverrideRow | None) -> Limits:
    """A tenant's limits: its own where the operator set them, else the defaults."""

    def pick(name: str) -> float:
        own = getattr(row, name) if row is not None else None
        return float(own if own is not None else getattr(defaults, name))

    return Limits(
        key=Limit(rate=pick("key_rate"), burst=pick("key_burst")),
        tenant=Limit(rate=pick("tenant_rate"), burst=pick("tenant_burst")),
    )


def division_limit(defaults: LimitsSettings, division: Limits) -> Limit:
    """What all the units of a division share: the hub's default, never below the division's
    own tenant limits (`division`: in force), so an override lifting a county lifts its units'
    share too."""
    return Limit(
        rate=max(defaults.division_rate, division.tenant.rate),
        burst=max(defaults.division_burst, division.tenant.burst),
    )


def require_operator(who: Principal) -> None:
    """Overrides are the hub operator's (the root tenant's keys): a county must not lift its own."""
    if who.tenant_code != ROOT_CODE:
        raise Forbidden("only the hub operator (the root tenant) sets rate limits")


def _override(record: asyncpg.Record | None) -> OverrideRow | None:
    return None if record is None else msgspec.convert(dict(record.items()), OverrideRow)


async def _view(
    conn: asyncpg.Connection, tenant: TenantRow, defaults: LimitsSettings, row: OverrideRow | None
) -> RateLimitsView:
    limits, division = in_force(defaults, row), division_code(tenant.path)
    above = limits
    if division != tenant.code:
        above = in_force(defaults, _override(await conn.fetchrow(sql.OVERRIDE_OF_CODE, division)))
    shared = division_limit(defaults, above)
    return RateLimitsView(
        tenant=tenant.code,
        key_rate=limits.key.rate,
        key_burst=limits.key.burst,
        tenant_rate=limits.tenant.rate,
        tenant_burst=limits.tenant.burst,
        division=division,
        division_rate=shared.rate,
        division_burst=shared.burst,
        overridden=[f for f in FIELDS if row is not None and getattr(row, f) is not None],
        updated_by=row.updated_by if row else None,
        updated_at=row.updated_at if row else None,
    )


async def limits_of(
    conn: asyncpg.Connection, tenant: TenantRow, defaults: LimitsSettings
) -> RateLimitsView:
    return await _view(
        conn, tenant, defaults, _override(await conn.fetchrow(sql.OVERRIDE, tenant.id))
    )


async def set_limits(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    setting: RateLimitsSetting,
    actor: str,
    defaults: LimitsSettings,
) -> RateLimitsView:
    """Replace the tenant's override (a field left out keeps the default)."""
    values = [getattr(setting, f) for f in FIELDS]
    row = _override(await conn.fetchrow(sql.SET_OVERRIDE, tenant.id, *values, actor))
    return await _view(conn, tenant, defaults, row)


async def clear_limits(conn: asyncpg.Connection, tenant: TenantRow) -> None:
    await conn.execute(sql.CLEAR_OVERRIDE, tenant.id)


def body_length(headers: Mapping[str, str], route_max: int | None) -> int:
    """A request's body size as the limiter charges it, from its (lower-case) headers before a
    byte is read: as announced, or for a body of unannounced length (chunked) the most its route
    accepts (else a 20 MB preview sent chunked cost 20 units instead of 340, and one person held
    24 at once)."""
    digits = headers.get("content-length") or ""
    if digits.isascii() and digits.isdigit():
        return int(digits)
    return (route_max or 0) if "transfer-encoding" in headers else 0


def cost_of(method: str, route: str, length: int) -> int:
    """Units a request with a body of `length` bytes costs (before the cap at a full bucket)."""
    base = COSTS.get((method, route), 1 if method in READS else 2)
    return base + length // BODY_UNIT


def _refusal(decision: Decision, who: Principal) -> RateLimited:
    """The 429 of a refused request, worded for a person when one signed in."""
    wait = int(decision.headers()["Retry-After"])
    rate, burst = decision.limit.rate, decision.limit.burst
    if who.user_id is not None:  # a person, in the console
        whose = {"key": "您的账号", "tenant": "本单位", "division": "所属辖区各单位合计"}[
            decision.bucket
        ]
        detail = (
            f"操作过于频繁：{whose}每秒可用 {rate:g} 个单位，最多累积 {burst:g} 个；"
            f"请 {wait} 秒后再试"
        )
    else:
        whose = {
            "key": "this API key",
            "tenant": "this tenant's keys together",
            "division": "the units of this division together",
        }[decision.bucket]
        detail = (
            f"too many requests for {whose}: {rate:g} units a second, bursts of {burst:g}; "
            f"retry in {wait} s"
        )
    return RateLimited(detail, headers=decision.headers(), limit=decision.bucket, retry_after=wait)


class Limiter:
    """One API process's view of the limits: overrides cached, Redis first, itself as fallback."""

    def __init__(
        self,
        settings: LimitsSettings,
        processes: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._processes = processes
        self._clock = clock
        self._local = LocalBuckets(clock)
        self._overrides: dict[str, Limits] = {}  # by tenant code
        self._loaded_at: float | None = None
        self._redis_down_until = -math.inf
        self._shared: tuple[Redis, Buckets] | None = None

    def forget_overrides(self) -> None:
        """Reload the overrides on the next request (this process just changed one)."""
        self._loaded_at = None

    async def _limits(self, db: Database, who: Principal) -> list[tuple[str, Limit]]:
        """The buckets a caller's request takes from: Redis key and shape of its key's (or
        signed-in person's), its tenant's and, for a unit, its division's (all the division's
        units together; the division itself is not charged to it, so its units cannot shut it
        out). A division's bucket is never smaller than the division's own tenant bucket, so an
        override that lifts a county lifts what its units share too."""
        now = self._clock()
        if self._loaded_at is None or now - self._loaded_at >= self._settings.refresh_seconds:
            async with db.acquire() as conn:
                records = await conn.fetch(sql.ALL_OVERRIDES)
            self._overrides = {r["code"]: in_force(self._settings, _override(r)) for r in records}
            self._loaded_at = now
        defaults = in_force(self._settings, None)
        own = self._overrides.get(who.tenant_code, defaults)
        division = division_code(who.tenant_path)
        shared = division_limit(self._settings, self._overrides.get(division, defaults))
        caller = f"key:{who.key_prefix}" if who.user_id is None else f"user:{who.user_id}"
        buckets = [
            (f"hub:limit:{caller}", own.key),
            (f"hub:limit:tenant:{who.tenant_id}", own.tenant),
        ]
        if division != who.tenant_code:
            buckets.append((f"hub:limit:division:{division}", shared))
        return buckets

    def _buckets(self, redis: Redis) -> Buckets:
        if self._shared is None or self._shared[0] is not redis:
            self._shared = (redis, Buckets(redis))
        return self._shared[1]

    async def _take_shared(
        self, redis: Redis, keys: list[str], shapes: list[Limit], cost: float
    ) -> Taken | None:
        """From Redis; None while it is unreachable (then this process limits on its own)."""
        if self._clock() < self._redis_down_until:
            return None
        buckets = self._buckets(redis)
        try:
            try:
                async with asyncio.timeout(self._settings.redis_timeout_seconds):
                    return await buckets.take(keys, shapes, cost, debt=False)
            except TimeoutError:
                # One late answer is not a Redis gone: a loop stalled past the deadline (a
                # flood's large bodies parsed) times out a call whose answer had come. Falling
                # back then would hand the flood the local buckets' burst; the second try may
                # charge twice instead, which only a stalled moment's requests pay.
                async with asyncio.timeout(self._settings.redis_timeout_seconds):
                    return await buckets.take(keys, shapes, cost, debt=False)
        except (RedisError, OSError, TimeoutError) as exc:
            if self._clock() >= self._redis_down_until:  # once, not by every request in flight
                log.warning(
                    "request limits: Redis unreachable (%r); this process limits on its own "
                    "for %.0f s",
                    exc,
                    self._settings.fallback_seconds,
                )
            self._redis_down_until = self._clock() + self._settings.fallback_seconds
            return None

    async def charge(
        self, db: Database, redis: Redis, who: Principal, method: str, route: str, length: int
    ) -> Decision:
        """Take what a request (its body `length` bytes: `body_length`) costs from its buckets
        (`check`); RateLimited (nothing taken) when any is short."""
        decision = await self.check(db, redis, who, cost_of(method, route, length))
        if not decision.allowed:
            raise _refusal(decision, who)
        return decision

    async def check(self, db: Database, redis: Redis, who: Principal, cost: float) -> Decision:
        """Take `cost` units from the caller's (its key's, or a signed-in person's), the
        tenant's and (a unit) the division's buckets, or refuse (nothing taken)."""
        buckets = await self._limits(db, who)
        keys, shapes = [key for key, _ in buckets], [shape for _, shape in buckets]
        taken = await self._take_shared(redis, keys, shapes, min(cost, *(s.burst for s in shapes)))
        shared = taken is not None
        if taken is None:
            # This process's share, so that all of them together still hold the limit.
            n = self._processes
            shapes = [Limit(rate=s.rate / n, burst=max(1.0, s.burst / n)) for s in shapes]
            taken = self._local.take(keys, shapes, min(cost, *(s.burst for s in shapes)))
        allowed = taken.wait_seconds == 0
        which = taken.shortest if not allowed else min(range(len(keys)), key=taken.left.__getitem__)
        return Decision(
            allowed=allowed,
            retry_after=taken.wait_seconds,
            bucket=BUCKETS[which],
            limit=shapes[which],
            left=taken.left[which],
            shared=shared,
        )
