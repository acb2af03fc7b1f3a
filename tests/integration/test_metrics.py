"""/metrics: the hub's numbers, read from PostgreSQL and Redis when scraped (hub.health.metrics).
The worker's side (gateway calls and receipts added up in Redis) is in
tests/integration/delivery/test_metrics_delivery.py."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

import asyncpg
import httpx
import msgspec
from arq.connections import ArqRedis

from hub.app import create_app
from hub.db import SingleConnectionDatabase
from hub.health import tally
from hub.health.metrics import SOURCES
from hub.health.tally import Tally
from hub.settings import GatewayConfig, Settings
from tests.factories import bearer, grant, make_key, make_small_tree

SAMPLE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})?$")


def samples(text: str) -> dict[str, float]:
    """Every sample of a scrape: `name{labels}` (labels as written) → value."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            assert SAMPLE.match(key), f"not a sample line: {line!r}"
            found[key] = float(value)
    return found


async def scrape(client: httpx.AsyncClient, **headers: str) -> dict[str, float]:
    resp = await client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(resp.text)


async def _county(conn: asyncpg.Connection, limit: int = 10_000) -> str:
    await make_small_tree(conn)
    await grant(conn, {"000000": 100_000, "510000": 50_000, "510100": 30_000, "510104": limit})
    return await make_key(conn, "510104")


async def _send(
    client: httpx.AsyncClient, key: str, n: int, priority: str, body: str = "通知"
) -> int:
    resp = await client.post(
        "/v1/messages",
        json={"to": [f"1380000{i:04d}" for i in range(n)], "body": body, "priority": priority},
        headers=bearer(key),
    )
    assert resp.status_code == 202, resp.text
    return int(resp.json()["id"])


async def test_queue_depth_per_lane_follows_what_is_enqueued(
    conn: asyncpg.Connection, client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    key = await _county(conn)
    before = await scrape(client)
    assert before['hub_queue_jobs{lane="urgent"}'] == 0
    assert before['hub_queue_jobs{lane="normal"}'] == 0
    await _send(client, key, 3, "normal")
    await _send(client, key, 2, "urgent", "山洪预警")
    await _send(client, key, 1, "urgent", "道路封闭")
    await redis.enqueue_job("hub.delivery.webhooks.push", _job_id="webhooks:1")
    after = await scrape(client)
    # Each send is one batch job (one carrier, a few messages): the lane is its send's.
    assert after['hub_queue_jobs{lane="urgent"}'] == 2
    assert after['hub_queue_jobs{lane="normal"}'] == 1
    assert after['hub_queue_jobs{lane="bulk"}'] == 0
    assert after['hub_queue_jobs{lane="other"}'] == 1
    assert after['hub_metrics_source_up{source="queue"}'] == 1


async def test_messages_by_state_and_the_oldest_due_reflect_a_send(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    key = await _county(conn)
    before = await scrape(client)
    assert before['hub_messages_in_flight{status="accepted"}'] == 0
    assert before["hub_queue_oldest_due_age_seconds"] == 0
    send = await _send(client, key, 3, "normal")
    # It fell due an hour ago and nothing of it went: that is how long the oldest waited.
    await conn.execute(
        "UPDATE sends SET due_at = hub_now() - interval '1 hour' WHERE id = $1", send
    )
    after = await scrape(client)
    assert after['hub_messages_in_flight{status="accepted"}'] == 3
    assert after['hub_sends_open{state="queued"}'] == before['hub_sends_open{state="queued"}'] + 1
    assert after["hub_queue_oldest_due_age_seconds"] == 3600
    # Sent, they leave "accepted"; the send holds nothing due any more.
    await conn.execute("UPDATE messages SET status = 'sent' WHERE send_id = $1", send)
    sent = await scrape(client)
    assert sent['hub_messages_in_flight{status="accepted"}'] == 0
    assert sent['hub_messages_in_flight{status="sent"}'] == 3
    assert sent["hub_queue_oldest_due_age_seconds"] == 0


async def test_quota_alerts_count_tenants_over_a_threshold_until_the_limit_is_raised(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    key = await _county(conn, limit=10)
    assert (await scrape(client))['hub_quota_alerts{threshold="80"}'] == 0
    await _send(client, key, 8, "normal")  # 8 of 10: the 80 % alert
    reached = await scrape(client)
    assert reached['hub_quota_alerts{threshold="80"}'] == 1
    assert reached['hub_quota_alerts{threshold="100"}'] == 0
    await grant(conn, {"510104": 20})  # 8 of 20
    assert (await scrape(client))['hub_quota_alerts{threshold="80"}'] == 0


async def test_a_close_is_timed_where_it_runs(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    operator = await make_key(conn, "000000")
    assert (await scrape(client))["hub_billing_close_last_success_timestamp_seconds"] == 0
    resp = await client.post("/v1/billing/2026-10/close", headers=bearer(operator))
    assert resp.status_code == 200, resp.text
    closed = await scrape(client)
    assert closed["hub_billing_close_duration_seconds"] > 0
    assert closed["hub_billing_close_last_success_timestamp_seconds"] > 0
    assert closed["hub_billing_close_failures_total"] == 0
    # A repeat answers the summary and is not a close: the last close's figures stay.
    again = await client.post("/v1/billing/2026-10/close", headers=bearer(operator))
    assert again.status_code == 200
    assert (await scrape(client))["hub_billing_close_duration_seconds"] == (
        closed["hub_billing_close_duration_seconds"]
    )


async def test_breaker_state_renders_from_its_redis_hash(
    settings: Settings, conn: asyncpg.Connection, redis: ArqRedis
) -> None:
    gateways = [GatewayConfig(name=n, kind="outbox") for n in ("cmcc", "ali", "kannel")]
    settings = msgspec.structs.replace(
        settings, delivery=msgspec.structs.replace(settings.delivery, gateways=gateways)
    )
    now, _ = await redis.time()
    await redis.hset("hub:breaker:cmcc", mapping={"failures": 5, "open_until": now + 30})  # type: ignore[misc]
    await redis.hset("hub:breaker:ali", mapping={"failures": 2, "open_until": now - 30})  # type: ignore[misc]
    app = create_app(settings, db=SingleConnectionDatabase(conn), redis=redis)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        found = await scrape(client)
    assert found['hub_gateway_breaker_open{gateway="cmcc"}'] == 1
    assert found['hub_gateway_breaker_failures{gateway="cmcc"}'] == 5
    assert found['hub_gateway_breaker_open{gateway="ali"}'] == 0  # its time is over: half-open
    assert found['hub_gateway_breaker_failures{gateway="ali"}'] == 2
    assert found['hub_gateway_breaker_open{gateway="kannel"}'] == 0  # no key: closed
    assert found['hub_gateway_breaker_failures{gateway="kannel"}'] == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_redis_down_leaves_its_sources_out_and_still_answers(
    settings: Settings, conn: asyncpg.Connection
) -> None:
    dead_redis = ArqRedis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=1)
    app = create_app(settings, db=SingleConnectionDatabase(conn), redis=dead_redis)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
            await client.get("/healthz")
            found = await scrape(client)
    finally:
        await dead_redis.aclose()
    up = {name: found[f'hub_metrics_source_up{{source="{name}"}}'] for name in SOURCES}
    assert up == {
        "ready": 1,
        "queue": 0,
        "oldest_due": 1,
        "messages": 1,
        "quota": 1,
        "gateways": 0,
        "breakers": 0,
        "billing_close": 0,
    }
    assert 'hub_messages_in_flight{status="accepted"}' in found
    assert found['hub_ready{dependency="redis"}'] == 0
    assert found['hub_ready{dependency="postgres"}'] == 1
    assert not any(name.startswith("hub_gateway_breaker_open") for name in found)
    assert any(name.startswith("hub_requests_total") for name in found)  # this process's own


async def test_a_metrics_token_keeps_outsiders_out(
    settings: Settings, conn: asyncpg.Connection, redis: ArqRedis
) -> None:
    settings = msgspec.structs.replace(
        settings, http=msgspec.structs.replace(settings.http, metrics_token="t0ken")
    )
    app = create_app(settings, db=SingleConnectionDatabase(conn), redis=redis)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        refused = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        found = await scrape(client, Authorization="Bearer t0ken")
    assert refused.status_code == wrong.status_code == 401
    assert refused.json()["error"] == "unauthorized"
    assert found['hub_metrics_source_up{source="messages"}'] == 1


async def test_what_a_flush_could_not_write_is_kept_for_the_next(redis: ArqRedis) -> None:
    tallied = Tally()
    tallied.observe(tally.SUBMIT_SECONDS, 0.2, gateway="cmcc")
    tallied.count(tally.GATEWAY_MESSAGES, 3, gateway="cmcc", outcome="accepted")
    dead = ArqRedis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=1)
    try:
        assert not await tallied.flush(dead)
    finally:
        await dead.aclose()
    tallied.count(tally.GATEWAY_MESSAGES, 2, gateway="cmcc", outcome="accepted")
    assert await tallied.flush(redis)
    stored = await redis.hgetall(tally.PREFIX + tally.GATEWAY_MESSAGES)  # type: ignore[misc]
    assert {k.decode(): float(v) for k, v in stored.items()} == {"gateway=cmcc,outcome=accepted": 5}
    buckets = await redis.hgetall(tally.PREFIX + tally.SUBMIT_SECONDS)  # type: ignore[misc]
    assert {k.decode(): float(v) for k, v in buckets.items()} == {
        "gateway=cmcc,le=0.25": 1,
        "gateway=cmcc,stat=sum": 0.2,
        "gateway=cmcc,stat=count": 1,
    }


async def test_scrapes_at_once_share_one_collection(
    settings: Settings, conn: asyncpg.Connection, redis: ArqRedis
) -> None:
    """A flood of scrapes (an outsider's, where /metrics is left open) costs one collection at
    a time: those that come while one runs get its answer."""
    app = create_app(settings, db=SingleConnectionDatabase(conn), redis=redis)
    ran = 0
    queue_source = SOURCES["queue"]

    async def counted(src: Any) -> Any:
        nonlocal ran
        ran += 1
        await asyncio.sleep(0.2)  # a slow source: the other scrapes arrive meanwhile
        return await queue_source(src)

    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
        SOURCES["queue"] = counted
        try:
            scrapes = await asyncio.gather(*(scrape(client) for _ in range(20)))
            assert ran == 1
            assert all(s['hub_metrics_source_up{source="queue"}'] == 1 for s in scrapes)
            await scrape(client)  # one that comes after collects afresh
            assert ran == 2
        finally:
            SOURCES["queue"] = queue_source
