"""Batches go to arq in one round trip (hub.queue.enqueue_unique), unique by job id as arq's
own enqueue_job makes them: a batch enqueued twice is queued once and delivered once."""

from __future__ import annotations

import asyncpg
import httpx
from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import deserialize_job

from hub import queue
from hub.db import SingleConnectionDatabase
from hub.delivery.service import enqueue_send
from hub.settings import Settings
from tests.factories import bearer
from tests.integration.delivery.conftest import RunWorker, statuses

PHONES = ["13800138000", "18612345678", "13311112222"]  # 移动, 联通, 电信: three batches


async def test_a_job_is_queued_once_with_what_arq_would_store(redis: ArqRedis) -> None:
    job = queue.NewJob("hub.test", (7, "中国移动", 1, 9), "deliver:7:x", 1_000, 60_000)
    assert await queue.enqueue_unique(redis, [job]) == 1
    assert await queue.enqueue_unique(redis, [job, job]) == 0
    assert await redis.zrange("arq:queue", 0, -1, withscores=True) == [(b"deliver:7:x", 1000.0)]
    stored = await redis.get(job_key_prefix + "deliver:7:x")
    assert stored is not None
    found = deserialize_job(stored)
    assert (found.function, found.args, found.kwargs) == ("hub.test", (7, "中国移动", 1, 9), {})
    assert 0 < await redis.pttl(job_key_prefix + "deliver:7:x") <= 60_000


async def test_a_job_whose_result_is_kept_is_not_queued_again(redis: ArqRedis) -> None:
    await redis.set(result_key_prefix + "deliver:8:x", b"done")
    fresh = queue.NewJob("hub.test", (8,), "deliver:8:y", 1_000, 60_000)
    done = queue.NewJob("hub.test", (8,), "deliver:8:x", 1_000, 60_000)
    assert await queue.enqueue_unique(redis, [done, fresh]) == 1
    assert await redis.zrange("arq:queue", 0, -1) == [b"deliver:8:y"]


async def test_many_jobs_go_in_chunks(redis: ArqRedis) -> None:
    jobs = [
        queue.NewJob("hub.test", (n,), f"job:{n}", n, 60_000)
        for n in range(queue.ENQUEUE_CHUNK * 2 + 3)
    ]
    assert await queue.enqueue_unique(redis, jobs) == len(jobs)
    assert await redis.zcard("arq:queue") == len(jobs)
    assert await queue.enqueue_unique(redis, jobs[-5:]) == 0


async def test_a_send_enqueued_twice_is_delivered_once(
    client: httpx.AsyncClient,
    live_db: asyncpg.Connection,
    live_settings: Settings,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    resp = await client.post(
        "/v1/messages", json={"to": PHONES, "body": "明早八点开会"}, headers=bearer(county_key)
    )
    assert resp.status_code == 202, resp.text
    send_id = resp.json()["id"]
    assert await redis.zcard("arq:queue") == 3
    # Again, as the sweeper would while the batches wait: nothing new.
    db = SingleConnectionDatabase(live_db)
    assert await enqueue_send(db, redis, live_settings.delivery, send_id) == 0
    worker = await run_worker()
    assert (worker.jobs_complete, worker.jobs_failed) == (3, 0)
    assert await statuses(live_db, send_id) == {"delivered": 3}
    assert await live_db.fetchval("SELECT count(*) FROM outbox") == 3
