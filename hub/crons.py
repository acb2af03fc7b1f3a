"""Each periodic job once per tick, whichever worker (and however many) sees the tick.

arq's `unique` crons already share one job id per tick (`{name}:{scheduled unix ms}`) in Redis,
but that dedup is lost when Redis is flushed or once the job's result expires. So a worker
first inserts (name, tick) into PostgreSQL's `cron_ticks`, in a short transaction of its own,
and runs the job only if its row went in. The tick is the cron's scheduled instant, which every
worker computes alike from the cron's spec (arq names it in the job id), truncated to the
second. A worker killed after arq handed it the job loses nothing: another worker tries the job
again (hub.worker.CRON_TRIES) once arq's in-progress mark lapses, and if the dead worker's row
went in, unfinished (`finished_at` NULL), the try takes it over when it is older than the
mark's life (`ctx["in_progress_seconds"]`, hub.worker.in_progress_seconds; a live run renews
its mark, so only a dead run's job is tried again). A run that fails gives its tick back at once
(its row deleted), so arq's next try of a job that found a server gone runs it. Rows started
more than KEEP ago go with the purge (hub.dedup.jobs). A tick is arq's wall-clock instant, not
the hub's (hub.calendar), so their age is measured by `started_at`, which the hub's clock wrote:
a hub whose clock was started elsewhere (a drill, the tests) would otherwise find every tick of
this week months old, and its purge would drop the rows that keep a tick from running twice.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
from arq.typing import WorkerCoroutine

log = logging.getLogger(__name__)

KEEP = timedelta(days=7)

# Claim a tick: true if this worker's row went in, or took over an unfinished one older than
# $4 seconds (its worker died or its run failed).
CLAIM = """
INSERT INTO cron_ticks (name, tick, worker) VALUES ($1, $2, $3)
ON CONFLICT (name, tick) DO UPDATE SET worker = excluded.worker, started_at = hub_now()
WHERE cron_ticks.finished_at IS NULL
  AND cron_ticks.started_at < hub_now() - make_interval(secs => $4)
RETURNING true
"""

# The tick's run failed: free for the job's next try.
RELEASE = """
DELETE FROM cron_ticks WHERE name = $1 AND tick = $2 AND worker = $3 AND finished_at IS NULL
"""

# The tick's run is over.
FINISH = "UPDATE cron_ticks SET finished_at = hub_now() WHERE name = $1 AND tick = $2"

# A batch of ticks started before $1.
PURGE = """
DELETE FROM cron_ticks WHERE (name, tick) IN (
    SELECT name, tick FROM cron_ticks WHERE started_at < $1 LIMIT $2
)
"""


def tick_of(ctx: dict[str, Any]) -> datetime:
    """The scheduled instant of the cron run in `ctx`, to the second: from the job id arq
    gives a unique cron (`name:unix ms`), else from its queue score (the time it was due)."""
    _, _, suffix = str(ctx.get("job_id", "")).rpartition(":")
    ms = int(suffix) if suffix.isdigit() else int(ctx["score"])
    return datetime.fromtimestamp(ms // 1000, UTC)


def once_per_tick(name: str, job: Callable[..., Awaitable[Any]]) -> WorkerCoroutine:
    """`job` run only by the worker whose row for this tick went in (see the module); `stale`
    is the worker's `ctx["in_progress_seconds"]`."""

    @functools.wraps(job)
    async def run(ctx: dict[str, Any]) -> Any:
        tick = tick_of(ctx)
        async with ctx["db"].acquire() as conn:
            stale = ctx["in_progress_seconds"]
            mine = await conn.fetchval(CLAIM, name, tick, ctx["worker_name"], stale)
        if not mine:
            log.info("%s at %s: run by another worker", name, tick.isoformat())
            return None
        try:
            result = await job(ctx)
        except BaseException:
            # Failed (or a server gone: arq tries it again): the tick is free for that try.
            with contextlib.suppress(Exception):
                async with ctx["db"].acquire() as conn:
                    await conn.execute(RELEASE, name, tick, ctx["worker_name"])
            raise
        async with ctx["db"].acquire() as conn:
            await conn.execute(FINISH, name, tick)
        return result

    return cast(WorkerCoroutine, run)


async def purge(conn: asyncpg.Connection, now: datetime, batch: int) -> int:
    """Delete a batch of ticks started more than KEEP before `now`; how many."""
    status = await conn.execute(PURGE, now - KEEP, batch)
    return int(status.split()[-1])
