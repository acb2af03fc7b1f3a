"""The shared rate limit (two workers' pacers, one Redis) and failover between real gateways."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from hub.delivery.pacing import Pacer
from hub.settings import GatewayConfig, Settings
from tests.factories import bearer
from tests.integration.delivery.conftest import (
    live_client,
    running_worker,
    wait_statuses,
    with_gateways,
)
from tests.peers.aliyun import AliyunFake, running


async def test_two_workers_sharing_a_rate_never_exceed_it(redis: ArqRedis) -> None:
    rate, chunk, chunks = 200.0, 50, 12  # 600 segments per pacer, 1,200 in all
    first, second = Pacer(redis), Pacer(redis)
    started = time.monotonic()
    admitted: list[float] = []

    async def worker(pacer: Pacer) -> None:
        for _ in range(chunks):
            await pacer.take("shared", chunk, rate)
            admitted.append(time.monotonic() - started)

    await asyncio.gather(worker(first), worker(second))
    # A correctness bound, not a speed claim: by the time the n-th chunk was admitted, at most
    # one second's burst plus `rate` per second since the start may have been let through.
    for n, at in enumerate(sorted(admitted), 1):
        assert n * chunk <= rate + rate * at + chunk, (n, at)


async def test_without_redis_a_pacer_waits_instead_of_sending() -> None:
    unreachable = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(Pacer(unreachable).take("gone", 1, 1e6), timeout=1.5)
    finally:
        await unreachable.aclose()


async def test_traffic_leaves_a_failing_gateway_and_comes_back_when_it_recovers(
    live_settings: Settings, live_db: asyncpg.Connection, redis: ArqRedis, county_key: str
) -> None:
    with running(AliyunFake()) as fake:
        primary = fake.gateway(fallback="outbox")
        outbox = GatewayConfig(name="outbox", kind="outbox", rate=1e6, options={"receipt_delay": 0})
        settings = with_gateways(
            live_settings,
            primary,
            outbox,
            circuit_failures=2,
            circuit_seconds=1.0,
            retry_base_seconds=0.05,
        )
        fake.fail_next(2, "isp.SYSTEM_ERROR", status=500)
        phones = ["13800138000", "13800138001"]
        async with running_worker(settings):
            async for client in live_client(settings, redis):
                first = await client.post(
                    "/v1/messages",
                    json={"to": phones, "body": "第一条"},
                    headers=bearer(county_key),
                )
            # Two failures open the circuit; the retry goes through the fallback.
            await wait_statuses(live_db, first.json()["id"], {"delivered": 2})
            await asyncio.sleep(1.1)  # the circuit's open time (the clock it runs on) passes
            async for client in live_client(settings, redis):
                second = await client.post(
                    "/v1/messages",
                    json={"to": phones, "body": "第二条"},
                    headers=bearer(county_key),
                )
            await wait_statuses(live_db, second.json()["id"], {"sent": 2})
        gateways = await live_db.fetch(
            "SELECT send_id, gateway, attempts FROM messages ORDER BY send_id, id"
        )
        # The first send failed at the primary (twice, opening its circuit; a sweep may add a
        # try), then went through the fallback; the second, after recovery, through the primary.
        first_send = [r for r in gateways if r["send_id"] == first.json()["id"]]
        assert {r["gateway"] for r in first_send} == {"outbox"}
        assert all(r["attempts"] >= 2 for r in first_send)
        assert {r["gateway"] for r in gateways if r["send_id"] == second.json()["id"]} == {"ali"}
        assert fake.answers[:2] == ["isp.SYSTEM_ERROR", "isp.SYSTEM_ERROR"]
        assert sorted((x.phone, x.text) for x in fake.sent) == [
            (p, "【锦江区】第二条") for p in phones
        ]
