"""Redis: the arq transport (and, later, rate-limit buckets). Never the source of truth."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# What redis-py raises when Redis is gone (its own classes, not the builtins).
REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)


def redis_settings(dsn: str) -> RedisSettings:
    return RedisSettings.from_dsn(dsn)


async def connect(dsn: str) -> ArqRedis:
    # Few retries: a readiness probe should say "down" quickly rather than hang on start-up.
    settings = redis_settings(dsn)
    settings.conn_retries = 2
    settings.conn_timeout = 2
    return await create_pool(settings)


class NewJob(NamedTuple):
    """A job for `enqueue_unique`: arq's function name, its arguments, its stable id, where it
    stands in the queue (arq's score: unix milliseconds) and how long it may wait there."""

    function: str
    args: tuple[Any, ...]
    job_id: str
    score_ms: int
    expires_ms: int


# arq's enqueue_job, for many jobs in one round trip: a job is added only when neither its job
# key nor its result key exists (arq's uniqueness by `_job_id`), and Lua runs all at once, so no
# other enqueue slips between the check and the write (arq WATCHes for that: three round trips a
# job). KEYS: the queue, then each job's job key and result key; ARGV: each job's id, score,
# expiry (ms) and serialized payload. Answers how many were new.
_ENQUEUE_UNIQUE = """
local added = 0
for i = 0, #ARGV / 4 - 1 do
    local job_key, result_key = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
    if redis.call('EXISTS', job_key, result_key) == 0 then
        redis.call('PSETEX', job_key, ARGV[3 + 4 * i], ARGV[4 + 4 * i])
        redis.call('ZADD', KEYS[1], ARGV[2 + 4 * i], ARGV[1 + 4 * i])
        added = added + 1
    end
end
return added
"""


# Jobs per script call: a province's send has a couple of thousand batches, and Redis serves
# nothing else while a script runs.
ENQUEUE_CHUNK = 200


async def enqueue_unique(redis: ArqRedis, jobs: Sequence[NewJob]) -> int:
    """Enqueue `jobs` as arq's `enqueue_job(function, *args, _job_id=…, _defer_until=…,
    _expires=…)` would, one round trip for all of them; how many were new (a job whose id is
    queued, running or kept as a result is not added again)."""
    script = redis.register_script(_ENQUEUE_UNIQUE)
    added = 0
    for start in range(0, len(jobs), ENQUEUE_CHUNK):
        enqueued_ms = timestamp_ms()
        keys: list[str] = [redis.default_queue_name]
        argv: list[Any] = []
        for job in jobs[start : start + ENQUEUE_CHUNK]:
            payload = serialize_job(
                job.function, job.args, {}, None, enqueued_ms, serializer=redis.job_serializer
            )
            keys += [job_key_prefix + job.job_id, result_key_prefix + job.job_id]
            argv += [job.job_id, job.score_ms, job.expires_ms, payload]
        added += int(await script(keys=keys, args=argv))
    return added
