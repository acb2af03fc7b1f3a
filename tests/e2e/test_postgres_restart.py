"""PostgreSQL restarted under load: the hub's side of a failover.

Real `hub serve` and `hub worker` processes run on a PostgreSQL of the test's own while clients
send in a loop, each send with an Idempotency-Key and retried with it after a 503. PostgreSQL is
restarted twice under them: `pg_ctl restart -m fast` (a switchover: sessions cut, a clean
shutdown) and `-m immediate` (a crash, recovery from the WAL), as a Patroni failover looks to
the hub at the same address. Every answer must be 202 (200 for a replay) or 503 with Retry-After
and the JSON error shape, never a 500 and never a connection dropped without an answer; the
processes must come back by themselves; every send answered 202 must exist once, all its
messages final, none twice at the gateway, and the quota ledger must audit clean.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from hub import calendar
from hub.db import create_pool
from hub.quota import service as quota
from hub.settings import load_settings
from tests.e2e.conftest import HUB, RECORD_HANDOVERS, clean_env, free_port
from tests.factories import bearer, grant, make_key, make_small_tree
from tests.peers.pg_cluster import PgCluster, hub_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FINAL = {"delivered", "undelivered", "failed", "expired"}
CLIENTS = 4
RECIPIENTS = 5
# Sends every phase must see accepted before the next one starts.
PER_PHASE = 12
# Liveness bounds for the waits, not speed claims.
PATIENCE = 180
OUTBOX = '[{"name":"outbox","kind":"outbox","rate":1000000,"options":{"receipt_delay":0}}]'


async def _until(check: Callable[[], Awaitable[bool]], patience: float = PATIENCE) -> None:
    """Poll `check()` until it holds (processes and servers offer nothing else to wait on)."""
    async with asyncio.timeout(patience):
        while True:
            if await check():
                return
            await asyncio.sleep(0.2)


@contextlib.contextmanager
def _processes(tmp_path: Path, env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`hub serve` and `hub worker`, their output in files (a full pipe would block them)."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for command in ("serve", "worker"):
            with (tmp_path / f"{command}.log").open("wb") as out:
                started.append(
                    subprocess.Popen([HUB, command], env=env, stdout=out, stderr=subprocess.STDOUT)
                )
        yield started
    finally:
        for proc in started:
            proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


class Load:
    """Clients sending small sends in a loop; what they were answered."""

    def __init__(self, url: str, keys: list[str]) -> None:
        self.url, self.keys = url, keys
        self.accepted: dict[str, int] = {}  # Idempotency-Key -> send id
        self.answers: collections.Counter[int] = collections.Counter()
        self.wrong: list[str] = []
        self.stop = asyncio.Event()

    async def client(self, number: int) -> None:
        key = self.keys[number % len(self.keys)]
        phones = [f"1380{number:02d}{r:05d}" for r in range(RECIPIENTS)]
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as http:
            n = 0
            while not self.stop.is_set():
                idem = f"restart-{number}-{n}"
                body = {"to": phones, "body": f"重启演练 {number}-{n}"}
                while True:
                    try:
                        resp = await http.post(
                            "/v1/messages",
                            json=body,
                            headers={**bearer(key), "Idempotency-Key": idem},
                        )
                    except httpx.TransportError as exc:
                        self.wrong.append(f"{idem}: no answer ({exc!r})")
                        await asyncio.sleep(0.2)
                        continue
                    self.answers[resp.status_code] += 1
                    if resp.status_code in (200, 202):
                        self.accepted[idem] = resp.json()["id"]
                        break
                    if resp.status_code == 503 and self._well_formed_503(idem, resp):
                        await asyncio.sleep(0.1)  # (Retry-After says 5: a test's patience)
                        continue
                    self.wrong.append(f"{idem}: {resp.status_code} {resp.text[:300]}")
                    break
                n += 1

    def _well_formed_503(self, idem: str, resp: httpx.Response) -> bool:
        try:
            shape = resp.json()
        except ValueError:
            shape = None
        if (
            not resp.headers.get("Retry-After", "").isdigit()
            or not isinstance(shape, dict)
            or shape.get("error") not in ("unavailable", "busy")
            or not isinstance(shape.get("detail"), str)
        ):
            self.wrong.append(f"{idem}: 503 malformed {resp.headers} {resp.text[:300]}")
            return False
        return True

    async def more(self, count: int) -> None:
        """Wait until `count` more sends were accepted than now."""
        target = len(self.accepted) + count

        async def enough() -> bool:
            assert not self.wrong, self.wrong
            return len(self.accepted) >= target

        await _until(enough)


async def _ready(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            return (await http.get(f"{url}/readyz")).status_code == 200
    except httpx.TransportError:
        return False


async def test_postgres_restarted_under_load_loses_no_send(tmp_path: Path, redis_dsn: str) -> None:
    cluster = PgCluster(tmp_path / "pg")
    cluster.init()
    cluster.start()
    try:
        dsn = await hub_database(cluster)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(RECORD_HANDOVERS)
            await make_small_tree(conn)
            await grant(conn, {"000000": 100_000, "510000": 50_000, "510100": 30_000})
            await grant(conn, {"510104": 10_000, "510105": 10_000})
            keys = [await make_key(conn, "510104"), await make_key(conn, "510105")]
        finally:
            await conn.close()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = clean_env(
            HUB_DB__DSN=dsn,
            HUB_REDIS__DSN=redis_dsn,
            HUB_HTTP__PORT=str(port),
            HUB_DELIVERY__GATEWAYS=OUTBOX,
            HUB_MESSAGES__QUIET_HOURS="false",
            # A chunk whose worker lost PostgreSQL mid-way comes back within seconds.
            HUB_DELIVERY__LEASE_SECONDS="10",
            HUB_LIMITS__KEY_RATE="10000",
            HUB_LIMITS__KEY_BURST="100000",
            HUB_LIMITS__TENANT_RATE="10000",
            HUB_LIMITS__TENANT_BURST="100000",
        )
        with _processes(tmp_path, env) as (serve, worker):

            async def serving() -> bool:
                assert serve.poll() is None, (tmp_path / "serve.log").read_text()
                return await _ready(url)

            await _until(serving, patience=300)
            load = Load(url, keys)
            clients = [asyncio.create_task(load.client(n)) for n in range(CLIENTS)]
            try:
                await load.more(PER_PHASE)
                # A switchover, then a crash, each under the clients' sends.
                await asyncio.to_thread(cluster.restart, "fast")
                await load.more(PER_PHASE)
                await asyncio.to_thread(cluster.restart, "immediate")
                await load.more(PER_PHASE)
            finally:
                load.stop.set()
                await asyncio.gather(*clients)
            assert not load.wrong, load.wrong
            # The outages were seen (else this test proved nothing), and survived.
            assert load.answers[503] > 0, load.answers
            assert set(load.answers) <= {200, 202, 503}, load.answers

            conn = await asyncpg.connect(dsn)
            try:
                sends = sorted(set(load.accepted.values()))
                assert len(sends) == len(load.accepted), "two keys answered with one send"

                async def all_final() -> bool:
                    assert serve.poll() is None, "hub serve died"
                    assert worker.poll() is None, "hub worker died"
                    left = await conn.fetchval(
                        "SELECT count(*) FROM messages WHERE NOT status = ANY($1)", list(FINAL)
                    )
                    return bool(left == 0)

                await _until(all_final)
                # Every send answered 202 is there, whole, and nothing else is: a send whose
                # answer was lost was replayed under its key, never made twice.
                rows = await conn.fetch(
                    "SELECT s.id, count(m.*) AS n, count(*) FILTER (WHERE m.status ="
                    " 'delivered') AS delivered FROM sends s JOIN messages m ON m.send_id = s.id"
                    " GROUP BY s.id ORDER BY s.id"
                )
                assert [r["id"] for r in rows] == sends
                assert {r["n"] for r in rows} == {RECIPIENTS}
                # None twice at the gateway: each message handed over at most once.
                twice = await conn.fetchval(
                    "SELECT count(*) FROM (SELECT message_id FROM handovers GROUP BY 1"
                    " HAVING count(*) > 1) t"
                )
                assert twice == 0
                outboxed = await conn.fetchval("SELECT count(*) FROM outbox")
                assert outboxed == sum(r["delivered"] for r in rows)
                # Each month a send of tonight might have reserved in (23:30 on the 31st).
                now = calendar.now()
                audits = [
                    await quota.audit(conn, calendar.period_of(moment))
                    for moment in sorted({now, now + timedelta(hours=1)})
                ]
            finally:
                await conn.close()
            assert audits[0][0] > 0
            assert [problems for _, problems in audits] == [[] for _ in audits]
            # The same processes throughout: they reconnected by themselves.
            assert serve.poll() is None
            assert worker.poll() is None
            print(f"answers {dict(load.answers)}, sends {len(sends)}, outbox {outboxed}")
    finally:
        cluster.cleanup()


async def test_a_multi_host_dsn_reaches_the_writable_server(tmp_path: Path) -> None:
    """The other way to follow a failover without a proxy: HUB_DB__DSN listing every node, with
    `target_session_attrs=read-write` (asyncpg ≥ 0.28 reads it from the DSN, as libpq does).
    The first node here refuses writes, as a standby or a demoted primary does: the hub's pool
    skips it for the writable one, and without the option it would have taken the first."""
    nodes = [PgCluster(tmp_path / "first"), PgCluster(tmp_path / "second")]
    try:
        for node in nodes:
            node.init()
        nodes[0].conf("default_transaction_read_only = on")
        for node in nodes:
            node.start()
        hosts = ",".join(str(node.socket_dir) for node in nodes)
        dsn = f"postgresql://postgres@/postgres?host={hosts}&target_session_attrs=read-write"
        settings = load_settings({"HUB_DB__DSN": dsn})
        pool = await create_pool(settings.db, dsn)
        try:
            async with pool.acquire() as conn:
                where = await conn.fetchval("SHOW unix_socket_directories")
                assert where == str(nodes[1].socket_dir)
                await conn.execute("CREATE TABLE written (n int)")
        finally:
            await pool.close()
        anyone = await asyncpg.connect(f"postgresql://postgres@/postgres?host={hosts}")
        try:
            assert await anyone.fetchval("SHOW unix_socket_directories") == str(nodes[0].socket_dir)
        finally:
            await anyone.close()
    finally:
        for node in nodes:
            node.cleanup()
