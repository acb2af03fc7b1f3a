"""Many processes, one truth (issue 16, point 1): two `hub serve` and three `hub worker` processes
on one PostgreSQL and one Redis. 50 tenants send 200,000 urgent messages through both API
processes; while they go out one worker is SIGKILLed and a new one started. Then: every message
final, none handed to the gateway twice, the quota audit clean, each cron run once per tick, the
shared rate held, and the circuit breaker one for all workers.

What the gateway was handed is recorded by a trigger on the outbox (the fake carrier's own
table, which keeps one row per message and so would hide a second hand-over): one row per
hand-over, stamped with the database server's clock."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
from collections.abc import Awaitable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO, cast

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from hub import calendar, queue
from hub.delivery.routing import breaker_key
from tests.e2e.conftest import HUB, RECORD_HANDOVERS, clean_env, free_port, run_hub
from tests.factories import bearer, grant_ahead, make_key, make_tenant
from tests.integration.delivery.conftest import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TENANTS = 50
EACH = 4_000  # recipients of each tenant's one send: 200,000 in all
TOTAL = TENANTS * EACH
# Segments a second each gateway may take, shared by every worker (its burst is one second's).
RATE = 3_000.0
# The fallback's rate is low enough to bind: three workers each keeping it alone would take
# three times as much.
SPARE_RATE = 400.0
# Short, so a killed worker's chunk comes back soon; not so short that a live worker's chunk
# on a busy machine outlives it (that one would be closed as outcome unknown too).
LEASE_SECONDS = 20
GATEWAYS = [
    {"name": "outbox", "kind": "outbox", "rate": RATE, "fallback": "spare"},
    {"name": "spare", "kind": "outbox", "rate": SPARE_RATE},
]
OPEN = ("accepted", "sending")
# Liveness bounds only (the test ends as soon as the work is done).
START_TIMEOUT = 300
DELIVERY_TIMEOUT = 600

# Every hand-over to the outbox, even one its ON CONFLICT would swallow.


class Processes:
    """The hub processes this test started, each with its log file; all stopped at the end."""

    def __init__(self, logs: Path, base: dict[str, str]) -> None:
        self.logs, self.base = logs, base
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self._files: list[IO[bytes]] = []

    def start(self, name: str, *args: str, **extra: str) -> subprocess.Popen[bytes]:
        # A fresh environment each time: the hub's clock starts where the test's is now.
        env = clean_env(**self.base, **extra)
        out = (self.logs / f"{name}.log").open("wb")
        self._files.append(out)
        proc = subprocess.Popen([HUB, *args], env=env, stdout=out, stderr=subprocess.STDOUT)
        self.running[name] = proc
        return proc

    def stop(self) -> None:
        for proc in self.running.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.running.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for out in self._files:
            out.close()


@pytest.fixture
def processes(fresh_db: str, redis_dsn: str, tmp_path: Path) -> Iterator[Processes]:
    base = {
        "HUB_DB__DSN": fresh_db,
        "HUB_REDIS__DSN": redis_dsn,
        "HUB_DELIVERY__GATEWAYS": json.dumps(GATEWAYS),
        "HUB_DELIVERY__LEASE_SECONDS": str(LEASE_SECONDS),
        "HUB_LOG_LEVEL": "INFO",
        # Six processes on one server: small pools (a worker runs 20 jobs on them in turn).
        "HUB_DB__POOL_MAX": "6",
    }
    procs = Processes(tmp_path, base)
    try:
        yield procs
    finally:
        procs.stop()


async def _tenants(dsn: str) -> list[str]:
    """50 prefectures under one province, each with a key and this month's quota."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(RECORD_HANDOVERS)
        await make_tenant(conn, "510000", "四川省")
        codes = [f"51{n:02d}00" for n in range(1, TENANTS + 1)]
        for code in codes:
            await make_tenant(conn, code, f"第{code}市", parent="510000")
        await grant_ahead(
            conn, {"000000": 2 * TOTAL, "510000": 2 * TOTAL} | dict.fromkeys(codes, 2 * EACH)
        )
        return [await make_key(conn, code) for code in codes]
    finally:
        await conn.close()


async def _wait_ready(urls: list[str], conn: asyncpg.Connection, workers: int) -> None:
    async with asyncio.timeout(START_TIMEOUT), httpx.AsyncClient(timeout=10) as client:
        for url in urls:
            while True:
                try:
                    if (await client.get(f"{url}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)

    async def beating() -> bool:
        return bool(await conn.fetchval("SELECT count(*) FROM worker_heartbeats") >= workers)

    await eventually(beating, START_TIMEOUT, every=0.2)


async def _send(url: str, key: str, first: int) -> int:
    phones = [f"138{n:08d}" for n in range(first, first + EACH)]
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        sent = await client.post(
            "/v1/messages",
            json={"to": phones, "body": "请于明日9时到会议室开会。", "priority": "urgent"},
            headers=bearer(key),
        )
    assert sent.status_code == 202, sent.text
    return int(sent.json()["id"])


async def _breaker_open_until(redis: Redis, seconds: float) -> None:
    """Set `outbox`'s shared breaker open until `seconds` from now (Redis's clock), as another
    host's failures would have."""
    now, micros = await redis.time()
    state = {"failures": 99, "open_until": f"{now + micros / 1e6 + seconds:.3f}"}
    await cast(Awaitable[int], redis.hset(breaker_key("outbox"), mapping=state))


async def _all_final(conn: asyncpg.Connection) -> None:
    """Nothing queued or leased, and no `sent` one waiting for a receipt: each is delivered, or
    closed as "outcome unknown" (at most once: never sent again, ARCHITECTURE.md)."""

    async def final() -> bool:
        return not await conn.fetchval(
            "SELECT EXISTS (SELECT FROM messages WHERE status::text = ANY($1)"
            " OR (status = 'sent' AND error IS NULL))",
            list(OPEN),
        )

    await eventually(final, DELIVERY_TIMEOUT, every=1)


def _max_in_window(times: list[tuple[float, int]], window: float) -> int:
    """The most segments handed over within any `window` seconds."""
    most = total = start = 0
    for at, segments in times:
        total += segments
        while at - times[start][0] >= window:
            total -= times[start][1]
            start += 1
        most = max(most, total)
    return most


@pytest.mark.timeout(DELIVERY_TIMEOUT + 2 * START_TIMEOUT)
async def test_many_processes_one_truth(
    fresh_db: str, redis_dsn: str, processes: Processes
) -> None:
    keys = await _tenants(fresh_db)
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    for n, port in enumerate(ports):
        processes.start(f"serve-{n}", "serve", HUB_HTTP__PORT=str(port))
    workers = [processes.start(f"worker-{n}", "worker") for n in range(3)]
    conn = await asyncpg.connect(fresh_db)
    redis = await queue.connect(redis_dsn)
    try:
        await _wait_ready(urls, conn, workers=3)
        # The breaker's contract (hub.delivery.routing): another host found `outbox` failing.
        await _breaker_open_until(redis, 3600)

        # Every tenant sends at once, half through each API process.
        send_ids = await asyncio.gather(
            *(_send(urls[n % 2], key, n * EACH) for n, key in enumerate(keys))
        )
        assert len(set(send_ids)) == TENANTS

        # While it is open every worker uses the fallback, `spare`; then its open spell ends.
        async def spare_took_some() -> bool:
            count = "SELECT count(*) FROM handovers WHERE gateway = 'spare'"
            return bool(await conn.fetchval(count) >= TOTAL // 20)

        await eventually(spare_took_some, DELIVERY_TIMEOUT, every=0.2)
        outbox_while_open = await conn.fetchval(
            "SELECT count(*) FROM handovers WHERE gateway = 'outbox'"
        )
        await _breaker_open_until(redis, 0)

        # Mid-delivery: one worker killed outright, a new one started.
        async def a_quarter_went() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM handovers") >= TOTAL // 4)

        await eventually(a_quarter_went, DELIVERY_TIMEOUT, every=0.2)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=30)
        killed_at = await conn.fetchval("SELECT count(*) FROM handovers")
        assert killed_at < TOTAL  # killed mid-delivery, not after it
        processes.start("worker-3", "worker")

        await _all_final(conn)

        # Every message final.
        rows = await conn.fetch("SELECT status::text AS s, count(*) AS n FROM messages GROUP BY 1")
        statuses: dict[str, int] = {r["s"]: r["n"] for r in rows}
        assert sum(statuses.values()) == TOTAL
        assert not set(statuses) & {*OPEN}
        unknown = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE status = 'sent' AND error LIKE 'outcome unknown:%'"
        )
        # Delivered (its receipt came), or closed as "outcome unknown" (the killed worker's).
        assert statuses.get("sent", 0) == unknown
        assert statuses["delivered"] + unknown == TOTAL, statuses

        # None twice at the gateway: one hand-over per message, and per phone.
        twice = await conn.fetchval(
            "SELECT count(*) FROM (SELECT message_id FROM handovers GROUP BY 1"
            " HAVING count(*) > 1) t"
        )
        assert twice == 0
        assert await conn.fetchval("SELECT count(DISTINCT phone) FROM handovers") == (
            await conn.fetchval("SELECT count(*) FROM handovers")
        )
        delivered_not_handed = await conn.fetchval(
            "SELECT count(*) FROM messages m WHERE status = 'delivered'"
            " AND NOT EXISTS (SELECT FROM outbox o WHERE o.message_id = m.id)"
        )
        assert delivered_not_handed == 0

        # The quota audit is clean (each month a send of tonight might have reserved in).
        now = calendar.now()
        for period in sorted({calendar.period_of(now), calendar.period_of(now + timedelta(1))}):
            audit = run_hub(
                "audit", "quota", "--period", f"{period:%Y-%m}", env=clean_env(HUB_DB__DSN=fresh_db)
            )
            assert audit.returncode == 0, audit.stdout + audit.stderr
            assert "clean" in audit.stdout, audit.stdout

        # Each cron once per tick: the sweep's ticks (seconds 10 and 40) follow one another
        # 30 s apart with none missing, each once (the primary key), though three or four
        # workers each enqueued every one.
        ticks = await conn.fetch("SELECT name, tick, worker FROM cron_ticks ORDER BY name, tick")
        sweeps = [r["tick"] for r in ticks if r["name"] == "hub.delivery.sweep.cron"]
        assert len(sweeps) >= 2, ticks
        assert {b - a for a, b in itertools.pairwise(sweeps)} == {timedelta(seconds=30)}
        pushes = [r["tick"] for r in ticks if r["name"] == "hub.delivery.webhooks.cron"]
        assert {b - a for a, b in itertools.pairwise(pushes)} == {timedelta(seconds=10)}
        ran_by = {r["worker"] for r in ticks}
        assert len(ran_by) >= 2  # the ticks went to whichever worker came first

        # The breaker, one for all: while `outbox` was open no worker handed it anything;
        # `spare` took the traffic; after, one worker's trial found `outbox` working and all
        # used it again.
        assert outbox_while_open == 0
        outbox = await conn.fetchval("SELECT count(*) FROM handovers WHERE gateway = 'outbox'")
        assert outbox > TOTAL // 2
        spare = await conn.fetchval("SELECT count(*) FROM handovers WHERE gateway = 'spare'")
        assert TOTAL // 20 <= spare < TOTAL // 2
        state = await cast(Awaitable[dict[bytes, bytes]], redis.hgetall(breaker_key("outbox")))
        assert state[b"failures"] == b"0"  # closed again by the successful trial

        # The shared rate: no gateway took more than its rate a second (its burst one
        # second's), over any 10 s, allowing 3 s for a chunk between its tokens and its
        # hand-over. `spare`'s binds: kept per worker, three would take three times as much.
        for gateway, rate in (("outbox", RATE), ("spare", SPARE_RATE)):
            times = [
                (float(r["at"]), int(r["segments"]))
                for r in await conn.fetch(
                    "SELECT extract(epoch FROM at) AS at, segments FROM handovers"
                    " WHERE gateway = $1 ORDER BY at",
                    gateway,
                )
            ]
            assert _max_in_window(times, 10) <= rate * (10 + 3) + rate

        span = await conn.fetchval("SELECT extract(epoch FROM max(at) - min(at)) FROM handovers")
        print(
            f"\n{TOTAL} messages by {len(ran_by)} cron runners; handed over in {float(span):.1f} s"
            f" ({TOTAL / float(span):.0f}/s); worker killed after {killed_at};"
            f" outcome unknown {unknown}; via spare {spare}; statuses {statuses};"
            f" cron ticks {len(ticks)}"
        )
    finally:
        await redis.aclose()
        await conn.close()
