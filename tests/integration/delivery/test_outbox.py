"""A send goes from the API through the queue, the worker and the outbox gateway to receipts."""

from __future__ import annotations

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis

from hub.settings import GatewayConfig, Settings
from tests.factories import bearer
from tests.integration.delivery.conftest import RunWorker, audit_clean, statuses, with_gateways

PHONES = ["13800138000", "18612345678", "13311112222", "19212345678"]


async def _queued_jobs(redis: ArqRedis) -> list[str]:
    return [j.decode() for j in await redis.zrange("arq:queue", 0, -1)]


# Also through a real PgBouncer in transaction pooling mode: the API's pool and the worker's
# (tests/integration/test_pgbouncer.py shows they really share its few server connections).
@pytest.mark.parametrize("hub_db", ["direct", "pgbouncer"], indirect=True)
async def test_a_send_is_enqueued_in_batches_after_commit_and_delivered(
    client: httpx.AsyncClient,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    resp = await client.post(
        "/v1/messages", json={"to": PHONES, "body": "明早八点开会"}, headers=bearer(county_key)
    )
    assert resp.status_code == 202, resp.text
    send_id = resp.json()["id"]
    # One job per carrier route (移动, 联通, 电信, 广电 here), each naming its batch.
    jobs = await _queued_jobs(redis)
    assert len(jobs) == 4
    assert all(j.startswith(f"deliver:{send_id}:") for j in jobs)

    worker = await run_worker()
    assert worker.jobs_failed == 0
    assert await statuses(live_db, send_id) == {"delivered": 4}
    outbox = await live_db.fetch("SELECT phone, text, sender FROM outbox ORDER BY phone")
    assert [r["phone"] for r in outbox] == sorted(f"+86{p}" for p in PHONES)
    tenant = await live_db.fetchrow(
        "SELECT signature, sms_extension FROM tenants WHERE code = '510104'"
    )
    assert tenant is not None
    assert {r["text"] for r in outbox} == {f"【{tenant['signature']}】明早八点开会"}
    assert {r["sender"] for r in outbox} == {"10690000" + tenant["sms_extension"]}
    # The reservation was used message by message and is settled.
    reservation = await live_db.fetchrow(
        "SELECT status::text, used_part, posted FROM quota_reservations"
    )
    assert reservation is not None
    assert dict(reservation) == {"status": "posted", "used_part": 4, "posted": 4}
    assert await audit_clean(live_db) == []
    # GET shows the counts by status.
    view = await client.get(f"/v1/messages/{send_id}", headers=bearer(county_key))
    assert view.json()["statuses"] == {"delivered": 4}


async def test_batches_hold_at_most_batch_size_messages(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    from tests.integration.delivery.conftest import live_client

    settings = msgspec.structs.replace(
        live_settings, delivery=msgspec.structs.replace(live_settings.delivery, batch_size=3)
    )
    phones = [f"138{n:08d}" for n in range(10)]  # all 中国移动
    async for client in live_client(settings, redis):
        resp = await client.post(
            "/v1/messages", json={"to": phones, "body": "通知"}, headers=bearer(county_key)
        )
        assert resp.status_code == 202, resp.text
    assert len(await _queued_jobs(redis)) == 4  # 3 + 3 + 3 + 1
    await run_worker(settings)
    assert await statuses(live_db, resp.json()["id"]) == {"delivered": 10}


async def test_undelivered_receipts_on_a_gateway_billing_on_delivery_release_the_quota(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    from tests.integration.delivery.conftest import live_client

    outbox = GatewayConfig(
        name="outbox",
        kind="outbox",
        bills_on="delivered",
        options={"receipt_delay": 0, "undelivered_suffix": "0000"},
    )
    settings = with_gateways(live_settings, outbox)
    phones = ["13800130000", "13800131111", "13800132222"]
    async for client in live_client(settings, redis):
        resp = await client.post(
            "/v1/messages", json={"to": phones, "body": "通知"}, headers=bearer(county_key)
        )
    send_id = resp.json()["id"]
    await run_worker(settings)
    assert await statuses(live_db, send_id) == {"delivered": 2, "undelivered": 1}
    reservation = await live_db.fetchrow(
        "SELECT status::text, used_part, released_part FROM quota_reservations"
    )
    assert reservation is not None
    assert dict(reservation) == {"status": "posted", "used_part": 2, "released_part": 1}
    used = await live_db.fetchval(
        "SELECT used FROM quota_accounts a JOIN tenants t ON t.id = a.tenant_id"
        " WHERE t.code = '510104'"
    )
    assert used == 2
    assert await audit_clean(live_db) == []
