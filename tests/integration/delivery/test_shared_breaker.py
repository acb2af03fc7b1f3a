"""The circuit breaker is shared through Redis: two routers (two worker processes) over one real
Redis see one breaker per gateway; the half-open trial goes to one of them; with Redis away each
decides alone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Literal, cast

import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from hub import queue
from hub.delivery.gateway import Events, HttpCallback, Outbound, Outcome, Parsed
from hub.delivery.routing import Router, breaker_key
from hub.settings import DeliverySettings, GatewayConfig
from tests.e2e.conftest import free_port

CONFIGS = [
    GatewayConfig(name="cmcc", kind="smpp", carriers=["中国移动"], fallback="backup"),
    GatewayConfig(name="backup", kind="aliyun"),
]
SETTINGS = DeliverySettings(gateways=CONFIGS, circuit_failures=3, circuit_seconds=30)


class _Gateway:
    """Routing reads only the configuration; nothing here is ever submitted to."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config

    async def start(self, events: Events) -> None: ...

    async def submit(self, messages: Sequence[Outbound]) -> list[Outcome]:
        raise AssertionError("routing never submits")

    def recorded(self, ids: Sequence[int]) -> None: ...

    def parse_callback(self, kind: Literal["receipts", "inbound"], call: HttpCallback) -> Parsed:
        raise AssertionError("routing never parses")

    async def close(self) -> None: ...


def _router(redis: Redis | None) -> Router:
    return Router({c.name: _Gateway(c) for c in CONFIGS}, SETTINGS, redis)


@pytest.fixture
async def other(redis: ArqRedis, redis_dsn: str) -> AsyncIterator[ArqRedis]:
    """A second process's own connection to the same Redis."""
    client = await queue.connect(redis_dsn)
    try:
        yield client
    finally:
        await client.aclose()


async def _to(router: Router) -> str:
    return (await router.route("中国移动")).config.name


async def _state(redis: Redis) -> dict[bytes, bytes]:
    return await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(breaker_key("cmcc")))


async def _end_open_spell(redis: Redis) -> None:
    """As if circuit_seconds had passed: the open spell ended a while ago (Redis's time)."""
    await cast(Awaitable[int], redis.hset(breaker_key("cmcc"), "open_until", "1"))


async def test_failures_in_one_process_open_the_breaker_for_both(
    redis: ArqRedis, other: ArqRedis
) -> None:
    one, two = _router(redis), _router(other)
    await one.outcome("cmcc", ok=False)
    await two.outcome("cmcc", ok=False)
    assert [await _to(one), await _to(two)] == ["cmcc", "cmcc"]  # two in a row: still closed
    await one.outcome("cmcc", ok=False)
    assert [await _to(one), await _to(two)] == ["backup", "backup"]
    # The contract /metrics reads: failures in a row, open until a time of Redis's clock.
    state = await _state(redis)
    (seconds, _) = await redis.time()
    assert int(state[b"failures"]) == 3
    assert seconds + 29 <= float(state[b"open_until"]) <= seconds + 31
    # Process two never failed at cmcc itself: its own breaker is closed, the shared one is not.
    assert not two.breakers["cmcc"].open


async def test_the_half_open_trial_goes_to_one_process_and_its_success_closes_for_all(
    redis: ArqRedis, other: ArqRedis
) -> None:
    one, two = _router(redis), _router(other)
    for _ in range(3):
        await one.outcome("cmcc", ok=False)
    await _end_open_spell(redis)
    assert await _to(two) == "cmcc"  # two takes the trial
    assert [await _to(one), await _to(two), await _to(one)] == ["backup"] * 3  # no one else
    await two.outcome("cmcc", ok=True)
    assert [await _to(one), await _to(two)] == ["cmcc", "cmcc"]
    assert await _state(redis) == {b"failures": b"0", b"open_until": b"0"}


async def test_a_failed_trial_opens_the_breaker_again_for_all(
    redis: ArqRedis, other: ArqRedis
) -> None:
    one, two = _router(redis), _router(other)
    for _ in range(3):
        await two.outcome("cmcc", ok=False)
    await _end_open_spell(redis)
    assert await _to(one) == "cmcc"  # one takes the trial
    await one.outcome("cmcc", ok=False)
    assert [await _to(one), await _to(two)] == ["backup", "backup"]
    await _end_open_spell(redis)
    assert await _to(two) == "cmcc"  # the next spell's trial, to whoever asks first
    assert await _to(one) == "backup"


async def test_with_redis_away_each_process_keeps_its_own_breaker(redis: ArqRedis) -> None:
    gone = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    try:
        alone, shared = _router(gone), _router(redis)
        for _ in range(3):
            await alone.outcome("cmcc", ok=False)  # never raises, never waits on Redis long
        assert await _to(alone) == "backup"  # its own breaker opened
        assert await _to(shared) == "cmcc"  # nothing reached the shared one
        await alone.outcome("cmcc", ok=True)
        assert await _to(alone) == "cmcc"
    finally:
        await gone.aclose()


async def test_a_trial_with_nothing_to_send_goes_back_at_once(
    redis: ArqRedis, other: ArqRedis
) -> None:
    one, two = _router(redis), _router(other)
    for _ in range(3):
        await one.outcome("cmcc", ok=False)
    await _end_open_spell(redis)
    assert await _to(one) == "cmcc"  # one wins the trial…
    assert await _to(two) == "backup"
    await two.unused("cmcc")  # (not two's to give back)
    assert await _to(two) == "backup"
    await one.unused("cmcc")  # …but its chunk found nothing to claim
    assert await _to(two) == "cmcc"  # the next chunk tries, not circuit_seconds later
    assert await _to(one) == "backup"
