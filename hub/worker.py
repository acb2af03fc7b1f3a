"""The arq worker: `hub worker`, and in-process under `hub up`.

Jobs carry ids, have explicit dotted names and are idempotent (arq may run a job twice). Each
job gets `ctx["db"]` (the worker's pool) and opens its own transaction.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

from arq import Retry, cron, func
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.cron import CronJob
from arq.typing import WorkerCoroutine
from arq.worker import Worker

from hub import calendar, loops, queue
from hub.billing.jobs import roll_up_usage
from hub.campaigns.jobs import run_campaigns
from hub.crons import once_per_tick
from hub.db import PoolDatabase, create_pool, unreachable
from hub.dedup.jobs import purge_expired
from hub.delivery import jobs as delivery_jobs
from hub.delivery import webhooks
from hub.delivery.service import DELIVER_JOB, Delivery
from hub.health.jobs import HEARTBEAT_SECONDS, heartbeat
from hub.messages.jobs import expire_reviews, make_partitions, release_due_sends
from hub.quota.jobs import expire_reservations, return_leases
from hub.retention.jobs import run_retention
from hub.settings import EventLoop, Settings

# Tuned for a queue of batch jobs (one per few hundred messages): short polls keep latency low
# (arq's default 0.5 s poll measured ≈1,000 jobs/s; 0.05 s ≈1,700/s on 2 cores), and a modest
# max_jobs keeps one worker from holding too many database connections.
POLL_DELAY = 0.05
MAX_JOBS = 20
# A job that finds PostgreSQL or Redis gone runs again after 1, 2, 4 … 30 s, up to this many
# times (about ten minutes): an outage does not lose it.
MAX_TRIES = 25
RETRY_CAP_SECONDS = 30

log = logging.getLogger("hub.worker")
Job = Callable[..., Awaitable[Any]]
T = TypeVar("T")


def event_loop(settings: Settings) -> EventLoop:
    """The loop `hub worker` runs on: HUB_WORKER__EVENT_LOOP, else uvloop where installed."""
    return loops.chosen(settings.worker.event_loop, "HUB_WORKER__EVENT_LOOP")


def run(main: Coroutine[Any, Any, T], settings: Settings) -> T:
    """Run `main` (the worker) to its end on the event loop `event_loop(settings)` names."""
    return loops.run(main, settings.worker.event_loop, "HUB_WORKER__EVENT_LOOP")


def server_gone(exc: BaseException) -> bool:
    """PostgreSQL or Redis unreachable (hub.db.UNREACHABLE, redis-py's connection errors)."""
    return unreachable(exc) or isinstance(exc, queue.REDIS_UNREACHABLE)


def surviving(job: Job) -> WorkerCoroutine:
    """`job`, run again later (arq's Retry) when it finds a server gone rather than failed
    for good. Jobs are idempotent and guard their own writes, so running one again is safe."""

    @functools.wraps(job)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        held = asyncio.create_task(
            hold_in_progress(ctx["redis"], ctx["job_id"], ctx["in_progress_seconds"])
        )
        try:
            return await job(ctx, *args, **kwargs)
        except Exception as exc:
            if not server_gone(exc):
                raise
            defer = min(2 ** (ctx.get("job_try", 1) - 1), RETRY_CAP_SECONDS)
            log.warning("%s: a server is gone (%r); again in %d s", job.__name__, exc, defer)
            raise Retry(defer=defer) from exc
        finally:
            held.cancel()

    return cast(WorkerCoroutine, run)


async def hold_in_progress(redis: ArqRedis, job_id: str, seconds: float) -> None:
    """Keep arq's in-progress mark of a running job for `seconds` more, a third of that apart,
    until cancelled: a job that runs long (a batch paced by a slow carrier, the retention run)
    is never started a second time beside itself, while a killed worker's job is free again
    `seconds` after its last renewal (build_worker). Redis gone: the next renewal tries again."""
    key = in_progress_key_prefix + job_id
    while True:
        await asyncio.sleep(seconds / 3)
        try:
            await redis.pexpire(key, int(seconds * 1000))  # none when it ended
        except queue.REDIS_UNREACHABLE as exc:
            log.warning("in-progress mark of %s not renewed (%r)", job_id, exc)


# Tries of a cron's job: a worker killed after it took the job but before it claimed the tick
# would lose the tick; another worker tries it again once arq's in-progress mark lapses
# (build_worker). The tick's row keeps any later try from running it twice.
CRON_TRIES = 3


def shared(job: Job, name: str, **when: Any) -> CronJob:
    """A cron run once per tick by one of the workers: arq's unique job id, and a row in
    PostgreSQL's cron_ticks that survives Redis (hub.crons)."""
    return cron(once_per_tick(name, job), name=name, unique=True, max_tries=CRON_TRIES, **when)


def cron_jobs() -> list[CronJob]:
    """The periodic jobs, new for each worker (arq keeps each one's next run on it). All but
    the heartbeat (one per worker) run once per tick across the workers (hub.crons)."""
    return [
        cron(
            heartbeat,
            name="hub.heartbeat.cron",
            second=set(range(0, 60, HEARTBEAT_SECONDS)),
            unique=False,
        ),
        # Every minute; one worker at a time (SKIP LOCKED would make two harmless anyway).
        shared(expire_reservations, "hub.quota.expire.cron", second={5}),
        # Every minute: leases past their time or month go back to the pooled ancestors.
        shared(return_leases, "hub.quota.return_leases.cron", second={35}),
        shared(release_due_sends, "hub.messages.release_due.cron", second={0}),
        # Daily (and at start): this month's message partition and the next two, made ahead.
        shared(
            make_partitions,
            "hub.messages.partitions.cron",
            hour={3},
            minute={17},
            second={0},
            run_at_startup=True,
        ),
        # Every minute: sends whose review expired are closed and their quota released.
        shared(expire_reviews, "hub.messages.expire_reviews.cron", second={25}),
        # Every minute: a campaign at 09:00 greets at 09:00, to the minute.
        shared(run_campaigns, "hub.campaigns.run.cron", second={20}),
        # Each minute: usage entries into the daily rollup (reads add the rest anyway).
        shared(roll_up_usage, "hub.billing.roll_up.cron", second={50}),
        # Twice a minute: what Redis lost or a dead worker left goes back to work.
        shared(delivery_jobs.sweep, "hub.delivery.sweep.cron", second={10, 40}),
        # Every five minutes: copies relying on an original whose outcome is known (or whose
        # receipt never came in time) are settled or go out (hub.delivery.service.decide).
        shared(
            delivery_jobs.decide,
            "hub.delivery.decide.cron",
            minute=set(range(1, 60, 5)),
            second={45},
        ),
        # Every ten minutes: dedup keys, Idempotency-Key answers and unmatched receipts past
        # their windows go (in small committed batches), so those tables stay bounded.
        shared(
            purge_expired,
            "hub.dedup.purge.cron",
            minute=set(range(3, 60, 10)),
            second={30},
        ),
        # Every 10 s: replies whose push was not enqueued, or is due again after a failure.
        shared(
            delivery_jobs.push_webhooks,
            "hub.delivery.webhooks.cron",
            second=set(range(0, 60, 10)),
        ),
        # Hourly; the job works only in the business day's HUB_RETENTION__RUN_HOUR (03:00 in
        # Shanghai): personal data past its period goes, in committed batches (hub.retention).
        shared(
            run_retention,
            "hub.retention.run.cron",
            minute={37},
            second={0},
            timeout=6 * 3600,
        ),
    ]


def build_worker(
    settings: Settings, *, burst: bool = False, handle_signals: bool = True, crons: bool = True
) -> Worker:
    """The hub's arq worker. `crons=False` leaves the periodic jobs out: a test's burst run
    then does only what was queued, whatever second of the minute it runs in.

    Built inside the loop that runs it: arq's Worker takes the current loop when it is made,
    and outside a running one it makes a loop of its own that nobody closes."""
    asyncio.get_running_loop()  # RuntimeError here, not an unclosed loop found by a later GC
    db_dsn, redis_dsn = settings.db.dsn, settings.redis.dsn
    if not db_dsn or not redis_dsn:
        raise RuntimeError("the worker needs HUB_DB__DSN and HUB_REDIS__DSN (hub up sets both)")

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["db"] = PoolDatabase(await create_pool(settings.db, db_dsn))
        ctx["settings"] = settings
        ctx["in_progress_seconds"] = in_progress_seconds(settings)
        ctx["worker_name"] = f"{socket.gethostname()}:{os.getpid()}"
        ctx["worker_started_at"] = calendar.now()
        ctx["delivery"] = Delivery(settings, ctx["db"], ctx["redis"])
        await ctx["delivery"].start()
        ctx["webhooks"] = webhooks.client(private_ok=settings.delivery.webhooks_private_ok)
        await heartbeat(ctx)

    async def shutdown(ctx: dict[str, Any]) -> None:
        # Each once: run_surviving may call this again after arq's close failed midway.
        if "delivery" in ctx:
            await ctx.pop("delivery").close()
        if "webhooks" in ctx:
            await ctx.pop("webhooks").aclose()
        if "db" in ctx:
            await ctx.pop("db").close()

    worker = Worker(
        functions=[
            func(surviving(job), name=name, max_tries=MAX_TRIES, keep_result=keep)
            for job, name, keep in cast(
                list[tuple[Job, str, int | None]],
                [
                    (heartbeat, "hub.heartbeat", None),
                    (expire_reservations, "hub.quota.expire", None),
                    (return_leases, "hub.quota.return_leases", None),
                    (release_due_sends, "hub.messages.release_due", None),
                    (make_partitions, "hub.messages.partitions", None),
                    (expire_reviews, "hub.messages.expire_reviews", None),
                    (run_campaigns, "hub.campaigns.run", None),
                    (roll_up_usage, "hub.billing.roll_up", None),
                    (purge_expired, "hub.dedup.purge", None),
                    (run_retention, "hub.retention.run", None),
                    # No result kept: a batch's job id names the batch, and arq refuses an id
                    # whose result it still holds, so the sweeper could not enqueue the batch
                    # again for the messages its last job left behind.
                    (delivery_jobs.deliver, DELIVER_JOB, 0),
                    (delivery_jobs.sweep, "hub.delivery.sweep", None),
                    (delivery_jobs.push_webhooks, webhooks.WEBHOOK_JOB, None),
                ],
            )
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
    # arq marks a running job "in progress" for the longest timeout of any job (the retention
    # run's six hours) and no worker starts it again meanwhile: a job whose worker was killed
    # would wait that long, and the sweeper cannot enqueue a batch again under its id. Here the
    # mark lasts as long as a lease, and a running job renews it (hold_in_progress): a killed
    # worker's job is free again soon after its messages' lease runs out, a live one never
    # starts twice.
    worker.in_progress_timeout_s = in_progress_seconds(settings)
    return worker


def in_progress_seconds(settings: Settings) -> float:
    """How long arq keeps a started job from being started again (see build_worker)."""
    return settings.delivery.lease_seconds + 10


async def run_surviving(settings: Settings, *, restart_after: float = 1.0) -> None:
    """Run the worker until cancelled. arq's worker stops when Redis goes away (its poll
    raises), and cannot start while PostgreSQL is gone: each time, the worker is closed and a
    new one started a moment later, until the servers answer again. Its running jobs are left
    to finish first (they settle what they can; leases and the sweeper recover the rest)."""
    while True:
        worker = build_worker(settings, handle_signals=False)
        try:
            await worker.async_run()
            return
        except Exception as exc:
            if not server_gone(exc):
                raise
            log.warning("worker: a server is gone (%r); starting again in %g s", exc, restart_after)
        finally:
            running = [t for t in worker.tasks.values() if not t.done()]
            if running:
                await asyncio.wait(running, timeout=60)
            await _close(worker)
        await asyncio.sleep(restart_after)


async def _close(worker: Worker) -> None:
    """Close a worker whose servers may still be gone: arq's close talks to Redis before it
    runs the shutdown, so when that fails the shutdown (gateways, the pool) runs here."""
    try:
        await worker.close()
    except Exception as exc:
        if not server_gone(exc):
            raise
        log.warning("worker: closed without Redis (%r)", exc)
        if worker.on_shutdown is not None:
            await worker.on_shutdown(worker.ctx)
