"""The nightly cron: registered, unique, and working only in the business day's run hour; its
result (what arq keeps in Redis for a minute) is counts, never a phone or a text."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis

from hub import calendar
from hub.db import SingleConnectionDatabase
from hub.retention.jobs import run_retention
from hub.settings import Settings
from hub.worker import cron_jobs
from tests.factories import bearer, grant_ahead, make_key, make_small_tree, make_tenant

REPLY = (
    "INSERT INTO inbound (tenant_id, gateway, reference, phone, address, text, opt_out,"
    " received_at) VALUES ($1, 'outbox', 'r', '+8613900139000', '10690000510000', '收到', false,"
    " $2)"
)


def _at_hour(settings: Settings, hour: int) -> Settings:
    return msgspec.structs.replace(
        settings, retention=msgspec.structs.replace(settings.retention, run_hour=hour)
    )


async def test_the_cron_is_registered_once_an_hour_and_unique() -> None:
    (job,) = [j for j in cron_jobs() if j.name == "hub.retention.run.cron"]
    assert job.unique
    assert job.minute == {37}


@pytest.mark.parametrize("off_by", [0, 1])
async def test_the_job_runs_only_in_the_run_hour_and_answers_counts(
    conn: asyncpg.Connection, settings: Settings, off_by: int
) -> None:
    tenant = await make_tenant(conn, "510000", "四川省")
    await conn.execute(REPLY, tenant.id, calendar.now() - timedelta(days=181))
    hour = calendar.now().astimezone(calendar.BUSINESS_TZ).hour
    ctx = {
        "db": SingleConnectionDatabase(conn),
        "settings": _at_hour(settings, (hour + off_by) % 24),
    }
    result = await run_retention(ctx)
    phone = await conn.fetchval("SELECT phone FROM inbound")
    if off_by:
        assert result == {}
        assert phone == "+8613900139000"
    else:
        assert result["inbound (phones and texts erased)"] == 1
        assert set(map(type, result.values())) == {int}
        assert phone == ""
        assert "1390013900" not in msgspec.json.encode(result).decode()


READ_ALL = {
    "string": ("GET",),
    "zset": ("ZRANGE", 0, -1),
    "hash": ("HGETALL",),
    "list": ("LRANGE", 0, -1),
    "set": ("SMEMBERS",),
}


async def _everything_in(redis: ArqRedis) -> bytes:
    """Every key and value Redis holds, whatever its type, as one blob."""
    blob = b""
    async for key in redis.scan_iter():
        command, *rest = READ_ALL[(await redis.type(key)).decode()]
        value = await redis.execute_command(command, key, *rest)  # type: ignore[no-untyped-call]
        blob += key + repr(value).encode()
    return blob


async def test_what_a_send_leaves_in_redis_names_no_phone_and_no_text(
    conn: asyncpg.Connection, client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    await make_small_tree(conn)
    await grant_ahead(conn, {"000000": 100, "510000": 100, "510100": 100, "510104": 100})
    key = await make_key(conn, "510104")
    sent = await client.post(
        "/v1/messages",
        json={"to": ["13900139000"], "body": "请张三同志周五到会"},
        headers=bearer(key),
    )
    assert sent.status_code == 202, sent.text
    blob = await _everything_in(redis)
    assert b"arq:job:" in blob  # the delivery batch is queued
    assert b"13900139000" not in blob
    assert "张三".encode() not in blob
    assert repr("张三").encode() not in blob
