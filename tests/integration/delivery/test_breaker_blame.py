"""Only the gateway's own trouble counts against its circuit breaker. A chunk is one tenant's
messages, so refusals about that tenant's phones (a per-number frequency limit, a bad number)
must neither open the shared breaker for everyone nor keep it shut during a real outage.

The real Alibaba adapter talks to the fake provider; the router keeps the breaker in real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from itertools import count
from typing import Literal, cast

import asyncpg
import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from hub.delivery.gateway import (
    Events,
    Failed,
    Gateway,
    HttpCallback,
    Inbound,
    Outbound,
    Outcome,
    Parsed,
    Receipt,
)
from hub.delivery.gateways import aliyun
from hub.delivery.routing import Router, breaker_key
from hub.settings import DeliverySettings, GatewayConfig, Settings
from tests.factories import bearer
from tests.integration.delivery.conftest import (
    eventually,
    live_client,
    running_worker,
    with_gateways,
)
from tests.peers.aliyun import AliyunFake, running

pytestmark = [pytest.mark.peer]

LIMIT = 3  # circuit_failures
TEXT = "【锦江区】请于本周五前报送材料"


class _NoEvents:
    async def receipts(self, gateway: str, receipts: Sequence[Receipt]) -> None:
        raise AssertionError("the aliyun adapter pushes nothing itself")

    async def inbound(self, gateway: str, replies: Sequence[Inbound]) -> None:
        raise AssertionError("the aliyun adapter pushes nothing itself")


class _Fallback:
    """Where traffic goes when `ali` is open; routing only reads its configuration."""

    config = GatewayConfig(name="backup", kind="outbox")

    async def start(self, events: Events) -> None: ...

    async def submit(self, messages: Sequence[Outbound]) -> list[Outcome]:
        raise AssertionError("nothing is sent here")

    def recorded(self, ids: Sequence[int]) -> None: ...

    def parse_callback(self, kind: Literal["receipts", "inbound"], call: HttpCallback) -> Parsed:
        raise AssertionError("nothing is parsed here")

    async def close(self) -> None: ...


@pytest.fixture
def fake() -> Iterator[AliyunFake]:
    with running(AliyunFake()) as provider:
        yield provider


@pytest.fixture
async def ali(fake: AliyunFake) -> AsyncIterator[Gateway]:
    gateway = aliyun.build(fake.gateway(fallback="backup"))
    await gateway.start(_NoEvents())
    yield gateway
    await gateway.close()


def _router(ali: Gateway, redis: Redis) -> Router:
    settings = DeliverySettings(
        gateways=[ali.config, _Fallback.config], circuit_failures=LIMIT, circuit_seconds=30
    )
    return Router({"ali": ali, "backup": _Fallback()}, settings, redis)


_ids = count(1)


async def _chunk(router: Router, ali: Gateway, phones: Sequence[str]) -> list[Outcome]:
    """One tenant's chunk, as the worker sends it: submitted, then its answer told the router."""
    sent = [Outbound(next(_ids), p, TEXT, 1, "ucs2", "10690000100042") for p in phones]
    outcomes = await ali.submit(sent)
    await router.answered("ali", sent, outcomes)
    return outcomes


async def _failures(redis: Redis) -> int:
    state = await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(breaker_key("ali")))
    return int(state.get(b"failures", b"0"))


async def _to(router: Router) -> str:
    return (await router.route("中国移动")).config.name


async def test_phones_the_provider_rate_limits_do_not_open_the_breaker(
    redis: ArqRedis, fake: AliyunFake, ali: Gateway
) -> None:
    router = _router(ali, redis)
    fake.fail_next(7, "isv.BUSINESS_LIMIT_CONTROL")
    for n in range(7):  # seven one-message sends, more than circuit_failures
        [outcome] = await _chunk(router, ali, [f"+8613900000{n:03d}"])
        # Each keeps its retry (transient), blamed on its phone, not on the gateway.
        assert isinstance(outcome, Failed)
        assert (outcome.code, outcome.permanent, outcome.per_recipient) == (
            "isv.BUSINESS_LIMIT_CONTROL",
            False,
            True,
        )
    assert fake.answers == ["isv.BUSINESS_LIMIT_CONTROL"] * 7
    assert await _failures(redis) == 0
    assert await _to(router) == "ali"  # everyone's traffic stays on the primary


async def test_bad_numbers_do_not_keep_the_breaker_shut_in_an_outage(
    redis: ArqRedis, fake: AliyunFake, ali: Gateway
) -> None:
    router = _router(ali, redis)
    for n in range(LIMIT):
        assert await _to(router) == "ali"
        fake.fail_next(1, "isp.SYSTEM_ERROR")  # a tenant's chunk meets the outage
        [outcome] = await _chunk(router, ali, ["+8613800138000"])
        assert isinstance(outcome, Failed)
        assert not outcome.per_recipient
        # Another tenant's chunk, to numbers that do not exist: refused for good, each alone.
        fake.fail_next(1, "isv.MOBILE_NUMBER_ILLEGAL")
        refused = await _chunk(router, ali, [f"+8613700000{n:03d}"])
        assert [(o.code, o.permanent) for o in refused if isinstance(o, Failed)] == [
            ("isv.MOBILE_NUMBER_ILLEGAL", True)
        ]
        assert await _failures(redis) == n + 1  # neither reset nor counted
    assert await _to(router) == "backup"


async def test_an_outage_opens_the_breaker(redis: ArqRedis, fake: AliyunFake, ali: Gateway) -> None:
    router = _router(ali, redis)
    fake.fail_next(LIMIT, "isp.SYSTEM_ERROR")
    for _ in range(LIMIT):
        assert await _to(router) == "ali"
        await _chunk(router, ali, ["+8613800138000", "+8613800138001"])
    assert await _failures(redis) == LIMIT
    assert await _to(router) == "backup"


async def test_a_half_open_trial_refused_for_its_phones_is_given_back(
    redis: ArqRedis, fake: AliyunFake, ali: Gateway
) -> None:
    one, two = _router(ali, redis), _router(ali, redis)
    fake.fail_next(LIMIT, "isp.SYSTEM_ERROR")
    for _ in range(LIMIT):
        await _chunk(one, ali, ["+8613800138000"])
    await cast(Awaitable[int], redis.hset(breaker_key("ali"), "open_until", "1"))  # spell over
    assert await _to(one) == "ali"  # one wins the trial
    assert await _to(two) == "backup"
    fake.fail_next(1, "isv.BUSINESS_LIMIT_CONTROL")
    await _chunk(one, ali, ["+8613900000000"])  # says nothing of the gateway
    assert await _to(two) == "ali"  # the trial went back: the next chunk tries at once
    assert await _failures(redis) == LIMIT


async def test_a_rate_limited_phone_is_retried_at_the_primary_not_sent_through_the_fallback(
    live_settings: Settings, live_db: asyncpg.Connection, redis: ArqRedis, county_key: str
) -> None:
    with running(AliyunFake()) as fake:
        outbox = GatewayConfig(name="outbox", kind="outbox", rate=1e6, options={"receipt_delay": 0})
        settings = with_gateways(
            live_settings,
            fake.gateway(fallback="outbox"),
            outbox,
            circuit_failures=2,
            retry_base_seconds=0.05,
        )
        fake.fail_next(3, "isv.BUSINESS_LIMIT_CONTROL")  # more than circuit_failures
        phones = ["13900000001", "13900000002", "13900000003"]
        async with running_worker(settings):
            async for client in live_client(settings, redis):
                for phone in phones:
                    sent = await client.post(
                        "/v1/messages",
                        json={"to": [phone], "body": "通知"},
                        headers=bearer(county_key),
                    )
                    assert sent.status_code == 202, sent.text
            await eventually(lambda: _out(live_db, 3))
        rows = await live_db.fetch("SELECT gateway, attempts, status::text FROM messages")
        assert fake.answers[:3] == ["isv.BUSINESS_LIMIT_CONTROL"] * 3
        # Each went again later, to the primary: the breaker never opened for them.
        assert sorted((r["gateway"], r["status"]) for r in rows) == [("ali", "sent")] * 3
        assert sorted(x.phone for x in fake.sent) == phones
        assert await _failures(redis) == 0


async def _out(conn: asyncpg.Connection, expected: int) -> bool:
    """Out at a gateway for good: sent (Alibaba's fake pushes no receipt) or delivered (the
    outbox's receipt)."""
    done = await conn.fetchval(
        "SELECT count(*) FROM messages WHERE status IN ('sent', 'delivered')"
    )
    return bool(done == expected)
