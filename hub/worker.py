"""The arq worker: `hub worker`, and in-process under `hub up`.

Jobs carry ids, have explicit dotted names and are idempotent (arq may run a job twice). Each
job gets `ctx["db"]` (the worker's pool) and opens its own transaction.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from arq import cron, func
from arq.cron import CronJob
from arq.worker import Worker

from hub import calendar, queue
from hub.billing.jobs import roll_up_usage
from hub.campaigns.jobs import run_campaigns
from hub.db import PoolDatabase, create_pool
from hub.dedup.jobs import purge_expired
from hub.delivery import jobs as delivery_jobs
from hub.delivery import webhooks
from hub.delivery.service import DELIVER_JOB, Delivery
from hub.health.jobs import HEARTBEAT_SECONDS, heartbeat
from hub.messages.jobs import release_due_sends
from hub.quota.jobs import expire_reservations
from hub.settings import Settings

# Tuned for a queue of batch jobs (one per few hundred messages): short polls keep latency low
# (arq's default 0.5 s poll measured ≈1,000 jobs/s; 0.05 s ≈1,700/s on 2 cores), and a modest
# max_jobs keeps one worker from holding too many database connections.
POLL_DELAY = 0.05
MAX_JOBS = 20


def cron_jobs() -> list[CronJob]:
    """The periodic jobs, new for each worker (arq keeps each one's next run on it)."""
    return [
        cron(
            heartbeat,
            name="hub.heartbeat.cron",
            second=set(range(0, 60, HEARTBEAT_SECONDS)),
            unique=False,
        ),
        # Every minute; one worker at a time (SKIP LOCKED would make two harmless anyway).
        cron(expire_reservations, name="hub.quota.expire.cron", second={5}, unique=True),
        cron(release_due_sends, name="hub.messages.release_due.cron", second={0}, unique=True),
        # Every minute: a campaign at 09:00 greets at 09:00, to the minute.
        cron(run_campaigns, name="hub.campaigns.run.cron", second={20}, unique=True),
        # Each minute: usage entries into the daily rollup (reads add the rest anyway).
        cron(roll_up_usage, name="hub.billing.roll_up.cron", second={50}, unique=True),
        # Twice a minute: what Redis lost or a dead worker left goes back to work.
        cron(delivery_jobs.sweep, name="hub.delivery.sweep.cron", second={10, 40}, unique=True),
        # Every ten minutes: dedup keys, Idempotency-Key answers and unmatched receipts past
        # their windows go (in small committed batches), so those tables stay bounded.
        cron(
            purge_expired,
            name="hub.dedup.purge.cron",
            minute=set(range(3, 60, 10)),
            second={30},
            unique=True,
        ),
        # Every 10 s: replies whose push was not enqueued, or is due again after a failure.
        cron(
            delivery_jobs.push_webhooks,
            name="hub.delivery.webhooks.cron",
            second=set(range(0, 60, 10)),
            unique=True,
        ),
    ]


def build_worker(
    settings: Settings, *, burst: bool = False, handle_signals: bool = True, crons: bool = True
) -> Worker:
    """The hub's arq worker. `crons=False` leaves the periodic jobs out: a test's burst run
    then does only what was queued, whatever second of the minute it runs in."""
    db_dsn, redis_dsn = settings.db.dsn, settings.redis.dsn
    if not db_dsn or not redis_dsn:
        raise RuntimeError("the worker needs HUB_DB__DSN and HUB_REDIS__DSN (hub up sets both)")

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["db"] = PoolDatabase(await create_pool(settings.db, db_dsn))
        ctx["settings"] = settings
        ctx["worker_name"] = f"{socket.gethostname()}:{os.getpid()}"
        ctx["worker_started_at"] = calendar.now()
        ctx["delivery"] = Delivery(settings, ctx["db"], ctx["redis"])
        await ctx["delivery"].start()
        ctx["webhooks"] = webhooks.client(private_ok=settings.delivery.webhooks_private_ok)
        await heartbeat(ctx)

    async def shutdown(ctx: dict[str, Any]) -> None:
        if "delivery" in ctx:
            await ctx["delivery"].close()
        if "webhooks" in ctx:
            await ctx["webhooks"].aclose()
        if "db" in ctx:
            await ctx["db"].close()

    return Worker(
        functions=[
            func(heartbeat, name="hub.heartbeat"),
            func(expire_reservations, name="hub.quota.expire"),
            func(release_due_sends, name="hub.messages.release_due"),
            func(run_campaigns, name="hub.campaigns.run"),
            func(roll_up_usage, name="hub.billing.roll_up"),
            func(purge_expired, name="hub.dedup.purge"),
            # No result kept: a batch's job id names the batch, and arq refuses an id whose
            # result it still holds, so the sweeper could not enqueue the batch again for the
            # messages its last job left behind.
            func(delivery_jobs.deliver, name=DELIVER_JOB, keep_result=0),
            func(delivery_jobs.sweep, name="hub.delivery.sweep"),
            func(delivery_jobs.push_webhooks, name=webhooks.WEBHOOK_JOB),
        ],
        cron_jobs=cron_jobs() if crons else [],
        redis_settings=queue.redis_settings(redis_dsn),
        on_startup=startup,
        on_shutdown=shutdown,
        burst=burst,
        handle_signals=handle_signals,
        poll_delay=POLL_DELAY,
        max_jobs=MAX_JOBS,
        keep_result=60,
    )
