"""Redis: the arq transport (and, later, rate-limit buckets). Never the source of truth."""

from __future__ import annotations

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
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
