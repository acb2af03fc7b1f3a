"""What a worker measures (gateway calls, their outcomes, receipts' lags) reaches a scrape of an
API process through Redis (hub.health.tally): the worker and the app here share nothing else."""

from __future__ import annotations

import asyncpg
import httpx
from arq.connections import ArqRedis

from hub.health import tally
from hub.settings import Settings
from tests.factories import bearer
from tests.integration.delivery.conftest import running_worker, wait_statuses
from tests.integration.test_metrics import scrape


async def test_a_workers_gateway_calls_and_receipts_show_in_a_scrape(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    client: httpx.AsyncClient,
    county_key: str,
) -> None:
    before = await scrape(client)
    assert before['hub_gateway_submit_duration_seconds_count{gateway="outbox"}'] == 0
    assert before['hub_gateway_messages_total{gateway="outbox",outcome="accepted"}'] == 0
    resp = await client.post(
        "/v1/messages",
        json={"to": ["13800000001", "13800000002", "13800000003"], "body": "通知"},
        headers=bearer(county_key),
    )
    assert resp.status_code == 202, resp.text
    async with running_worker(live_settings):
        await wait_statuses(live_db, resp.json()["id"], {"delivered": 3})
    # The worker stopped: what it measured was flushed to Redis as it closed.
    assert await redis.exists(tally.PREFIX + tally.SUBMIT_SECONDS)
    after = await scrape(client)
    calls = after['hub_gateway_submit_duration_seconds_count{gateway="outbox"}']
    assert calls >= 1  # one chunk, or more if the messages were claimed apart
    assert after['hub_gateway_submit_duration_seconds_bucket{gateway="outbox",le="+Inf"}'] == calls
    assert after['hub_gateway_submit_duration_seconds_sum{gateway="outbox"}'] > 0
    assert after['hub_gateway_messages_total{gateway="outbox",outcome="accepted"}'] == 3
    assert after['hub_gateway_messages_total{gateway="outbox",outcome="retry"}'] == 0
    assert after['hub_gateway_submit_errors_total{gateway="outbox",reason="unreachable"}'] == 0
    assert after['hub_receipt_lag_seconds_count{gateway="outbox"}'] == 3
    assert after['hub_metrics_source_up{source="gateways"}'] == 1
