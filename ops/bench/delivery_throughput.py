"""Benchmark: sustained delivery, API accept → gateway accepted → receipt applied.

    .venv/bin/python -m ops.bench.delivery_throughput [--scenario outbox|smpp|both] [--repeat 3]
        [--outbox-messages 100000] [--smpp-messages 20000] [--per-post 10000]
        [--dsn postgresql://… [--pgdata DIR]] [--redis redis://…] [--profile DIR] [--timeline F]
        [--worker-loop asyncio|uvloop] [--bare-loops asyncio,uvloop]

Real processes, as in production: `hub serve` and one `hub worker`, on embedded PostgreSQL and
Valkey (or the servers of --dsn / --redis). Each run gets a fresh database (a copy of a seeded
template: province 51's tenants, quota enough on the chain 000000 → 510104, an API key of
510104) and a flushed Redis. The client sends N distinct valid mobiles, one segment each, as
POSTs of --per-post recipients one after another, while the worker delivers. The clock starts at
the first POST; `SELECT status, count(*) FROM messages GROUP BY 1` is polled every 0.2 s, and the
run is timed to (a) every message handed to the gateway and answered (`sent` or beyond) and
(b) every message `delivered` (its receipt applied). segments/s = N / each time; "10-90 %" is the
rate between 10 % and 90 % of the messages delivered (the steady state, without start and tail).
A run in which every message is sent but some receipts are never applied (nothing changes for
STALL_SECONDS) reports them instead of a delivered time.

Scenarios:
- `outbox`: the embedded outbox gateway (`receipt_delay` 0.05 s): the hub's own cost alone.
- `smpp`: the SMPP adapter (window 10) against the fake SMSC `python -m tests.peers.smsc`, a
  separate process. In the same run, against the same SMSC process and before the hub's run,
  `ops.bench.smpp_bare` measures a bare smpp34 client (window 10, receipts on) on the
  same number of messages, once on each event loop of --bare-loops (a child process each): its
  rate to its last submit_sm_resp and to its last receipt. hub / bare is the hub's "to sent"
  rate over the first, and its "to delivered" rate over the second. --worker-loop sets the
  worker's HUB_WORKER__EVENT_LOOP (unset: the worker's default, uvloop where installed).

CPU: user + system seconds over the timed window of the worker process, the API process, the
PostgreSQL server (postmaster and every backend, exited ones included; embedded, or --pgdata),
the fake SMSC, Valkey, this client, and "other": the machine's busy time (all cores, not idle)
less all of those — kernel work not charged to a process, and anything else running on the
machine (a large "other" means the run shared the cores). "ms/1k" = CPU ms per 1,000 segments.
PostgreSQL is also shown less the CPU of the backend serving this client's status poll (its
count(*) every POLL_SECONDS costs more the longer a run lasts: the benchmark's, not the hub's).
--profile DIR records the worker and the API with py-spy (on PATH) over the timed window, as
collapsed stacks in DIR; --timeline appends each run's polls to a JSON-lines file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from redis.asyncio import Redis

from hub.db import create_database, with_database
from hub.embedded import EmbeddedPostgres, EmbeddedValkey
from ops.bench.send_million import PREFIXES, seed_database
from ops.bench.smpp_bare import bare_in_process
from tests.peers.smsc import SmscProcess, free_port

TEMPLATE_DB = "hub_bench_delivery_tpl"
RUN_DB = "hub_bench_delivery"
# With 510104's signature 【锦江区委组织部】 (9) this is 38 characters: one UCS-2 segment.
BODY = "今晚七点在党员活动室召开支部大会，请准时参加。会后有学习材料。"
POLL_SECONDS = 0.2
LATE_SECONDS = 2.0
# No message changed status for this long (the sweeper, which applies receipts that beat their
# `sent`, runs every 30 s): with every message sent, the missing receipts count as never applied.
STALL_SECONDS = 75.0
WINDOW = 10
DONE = ("sent", "delivered", "undelivered", "failed", "expired")
OPEN = ("accepted", "sending")


def _say(line: str = "") -> None:
    print(line, flush=True)


def phones(n: int, seed: int) -> list[str]:
    """n distinct valid mainland mobiles."""
    rng = random.Random(seed)
    seen: set[str] = set()
    while len(seen) < n:
        seen.add(rng.choice(PREFIXES) + f"{rng.randrange(10**8):08d}")
    return sorted(seen, key=lambda _: rng.random())


# --- CPU accounting ----------------------------------------------------------------------


def _cpu(proc: psutil.Process, *, with_exited_children: bool = False) -> float:
    try:
        t = proc.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0
    seconds: float = t.user + t.system
    if with_exited_children:
        seconds += t.children_user + t.children_system
    return seconds


def _tree_cpu(root: psutil.Process) -> dict[tuple[int, float], float]:
    """CPU seconds of `root` (with its exited children) and of each live child, keyed by
    (pid, create time) so a reused pid is not mistaken for an old process."""
    out = {(root.pid, root.create_time()): _cpu(root, with_exited_children=True)}
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                out[child.pid, child.create_time()] = _cpu(child)
    return out


@dataclass
class CpuMeter:
    """CPU seconds of named processes (and PostgreSQL's process tree) between start and stop."""

    procs: dict[str, psutil.Process]
    postmaster: psutil.Process | None
    _start: dict[str, float] = field(default_factory=dict)
    _pg_start: dict[tuple[int, float], float] = field(default_factory=dict)
    _machine_start: Any = None
    used: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self._start = {name: _cpu(p) for name, p in self.procs.items()}
        if self.postmaster is not None:
            self._pg_start = _tree_cpu(self.postmaster)
        self._machine_start = psutil.cpu_times()

    def stop(self, wall: float) -> None:
        self.used = {name: _cpu(p) - self._start[name] for name, p in self.procs.items()}
        if self.postmaster is not None:
            end = _tree_cpu(self.postmaster)
            self.used["postgres"] = sum(v - self._pg_start.get(k, 0.0) for k, v in end.items())
        m0, m1 = self._machine_start, psutil.cpu_times()
        busy = (sum(m1) - m1.idle) - (sum(m0) - m0.idle)
        self.used["other"] = busy - sum(self.used.values())
        self.used["machine"] = busy
        self.used["machine_share"] = busy / (wall * (psutil.cpu_count() or 1))


def _postmaster(pgdata: Path | None) -> psutil.Process | None:
    if pgdata is None:
        return None
    try:
        return psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    except (OSError, ValueError, psutil.NoSuchProcess):
        return None


# --- database and processes --------------------------------------------------------------


async def prepare_template(admin_dsn: str) -> str:
    """A migrated, seeded database to copy for every run; the API key of tenant 510104."""
    _, key = await seed_database(admin_dsn, TEMPLATE_DB)
    return key


def gateway_config(scenario: str, smsc_port: int) -> dict[str, Any]:
    if scenario == "outbox":
        return {
            "name": "outbox",
            "kind": "outbox",
            "rate": 1e9,
            "options": {"receipt_delay": 0.05},
        }
    return {
        "name": "smsc",
        "kind": "smpp",
        "host": "127.0.0.1",
        "port": smsc_port,
        "username": "hub",
        "password": "secret",
        "rate": 1e9,
        "options": {"window": WINDOW},
    }


@contextlib.contextmanager
def hub_processes(
    env: dict[str, str], commands: tuple[str, ...] = ("serve", "worker")
) -> Iterator[tuple[subprocess.Popen[bytes], ...]]:
    """`hub serve` and one `hub worker` (or `commands`), stopped (SIGTERM, then SIGKILL) on
    exit."""
    hub = str(Path(sys.executable).parent / "hub")
    started: list[subprocess.Popen[bytes]] = []
    try:
        for command in commands:
            started.append(subprocess.Popen([hub, command], env=env, stdout=subprocess.DEVNULL))
        yield tuple(started)
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.terminate()
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _wait_ready(client: httpx.AsyncClient, dsn: str, worker: subprocess.Popen[bytes]) -> None:
    """The API answers /readyz and the worker has started (its first heartbeat comes after its
    gateways have started, an SMPP session bound)."""
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("/readyz")).status_code == 200:
                break
        if time.monotonic() > deadline:
            raise RuntimeError("hub serve did not become ready")
        await asyncio.sleep(0.1)
    conn = await asyncpg.connect(dsn)
    try:
        while not await conn.fetchval("SELECT count(*) FROM worker_heartbeats"):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("hub worker did not start")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    await asyncio.sleep(0.5)


# --- one run -----------------------------------------------------------------------------


@dataclass
class Bare:
    """The bare smpp34 client against the same SMSC: its rate (to the last submit_sm_resp),
    its wall time to the last receipt, and its CPU seconds."""

    rate: float
    to_receipts: float
    cpu: float


@dataclass
class Result:
    scenario: str
    messages: int
    posted: float  # seconds from the first POST to the last 202
    to_sent: float
    to_delivered: float
    steady: float  # segments/s between 10 % and 90 % delivered
    cpu: dict[str, float]
    statuses: dict[str, int]
    late: int = 0  # messages still without their receipt applied LATE_SECONDS after all were sent
    bares: dict[str, Bare] = field(default_factory=dict)  # the bare client per loop, same SMSC

    @property
    def sent_rate(self) -> float:
        return self.messages / self.to_sent

    @property
    def delivered_rate(self) -> float:
        return self.messages / self.to_delivered


class Poller:
    """Counts messages by status every POLL_SECONDS; notes when thresholds are first crossed."""

    def __init__(self, dsn: str, since_send: int = 0) -> None:
        self.dsn = dsn
        self.since_send = since_send  # only the messages of sends after this one
        self.counts: dict[str, int] = {}
        self.timeline: list[tuple[float, int, int]] = []  # (t, done, delivered)
        # CPU seconds of this poller's own PostgreSQL backend over the run: the benchmark's
        # cost, not the hub's (its count(*) grows with the run's length).
        self.backend_cpu = 0.0

    async def run(self, started: float, total: int, posted: asyncio.Event) -> tuple[float, float]:
        """Seconds from `started` until every one of `total` messages is done, and delivered
        (infinite if some receipts are never applied)."""
        conn = await asyncpg.connect(self.dsn)
        to_sent: float | None = None
        last_change, last = time.perf_counter(), (-1, -1)
        backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))
        cpu_before = _cpu(backend)
        try:
            while True:
                rows = await conn.fetch(
                    "SELECT status::text, count(*) FROM messages WHERE send_id > $1 GROUP BY 1",
                    self.since_send,
                )
                now = time.perf_counter()
                self.counts = {r[0]: r[1] for r in rows}
                done = sum(self.counts.get(s, 0) for s in DONE)
                delivered = self.counts.get("delivered", 0)
                self.timeline.append((now - started, done, delivered))
                if (done, delivered) != last:
                    last_change, last = now, (done, delivered)
                if posted.is_set() and not any(self.counts.get(s, 0) for s in OPEN):
                    to_sent = to_sent or now - started
                    if delivered + self.counts.get("undelivered", 0) >= total:
                        return to_sent, now - started
                if now - last_change > STALL_SECONDS:
                    if to_sent is not None:
                        return to_sent, math.inf
                    raise RuntimeError(f"stuck for {STALL_SECONDS:.0f} s at {self.counts}")
                await asyncio.sleep(POLL_SECONDS)
        finally:
            self.backend_cpu = _cpu(backend) - cpu_before
            await conn.close()

    def steady_rate(self, total: int) -> float:
        """Delivered segments/s between 10 % and 90 % of `total` delivered (interpolated)."""

        def when(target: float) -> float:
            prev_t, prev_n = 0.0, 0
            for t, _, n in self.timeline:
                if n >= target:
                    return prev_t + (t - prev_t) * (target - prev_n) / max(n - prev_n, 1)
                prev_t, prev_n = t, n
            return self.timeline[-1][0]

        return 0.8 * total / max(when(0.9 * total) - when(0.1 * total), 1e-9)

    def waiting_at(self, t: float) -> int:
        """Messages done (sent or beyond) but not delivered at the first poll at or after t."""
        return next((done - n for at, done, n in self.timeline if at >= t), 0)


def _profilers(out: Path | None, label: str, pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    if out is None:
        return []
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy on PATH")
    out.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "100",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out / f"{label}-{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]


def _check_accepted(resp: httpx.Response, recipients: int) -> None:
    """Every recipient accepted, one segment each."""
    answer = resp.json() if resp.status_code == 202 else {}
    accepted = answer.get("counts", {}).get("accepted")
    if answer.get("segments_per_message") != 1 or accepted != recipients:
        raise RuntimeError(f"send not as planned: {resp.status_code} {resp.text[:300]}")


async def _bare(port: int, n: int, loop: str) -> Bare:
    run = await asyncio.to_thread(bare_in_process, port, n, WINDOW, loop)
    return Bare(run.rate, run.to_receipts, run.cpu)


def hub_env(
    dsn: str, redis_dsn: str, http_port: int, gateway: dict[str, Any], worker_loop: str = ""
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    if worker_loop:
        env["HUB_WORKER__EVENT_LOOP"] = worker_loop
    env.update(
        HUB_DB__DSN=dsn,
        HUB_REDIS__DSN=redis_dsn,
        HUB_HTTP__PORT=str(http_port),
        HUB_DB__STATEMENT_TIMEOUT="600",
        HUB_LOG_LEVEL="WARNING",
        HUB_MESSAGES__QUIET_HOURS="false",
        HUB_DELIVERY__GATEWAYS=json.dumps([gateway]),
    )
    return env


def _meter(args: argparse.Namespace, api: int, worker: int) -> CpuMeter:
    """CPU of the hub's processes, PostgreSQL, this client and its children (Valkey, SMSC)."""
    me = psutil.Process()
    procs = {"worker": psutil.Process(worker), "api": psutil.Process(api), "client": me}
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.name().startswith("valkey"):
                procs["valkey"] = child
            elif "tests.peers.smsc" in child.cmdline():
                procs["smsc"] = child
    return CpuMeter(procs, _postmaster(args.pgdata))


async def _fresh_database(args: argparse.Namespace, redis_dsn: str) -> str:
    dsn = await create_database(args.dsn, RUN_DB, template=TEMPLATE_DB)
    redis = Redis.from_url(redis_dsn)
    try:
        await redis.flushdb()  # job ids restart with the send ids of a fresh database
    finally:
        await redis.aclose()
    return dsn


async def run_once(
    args: argparse.Namespace, scenario: str, number: int, key: str, redis_dsn: str
) -> Result:
    dsn = await _fresh_database(args, redis_dsn)
    return await run_on(args, dsn, scenario, number, key, redis_dsn)


async def run_on(
    args: argparse.Namespace, dsn: str, scenario: str, number: int, key: str, redis_dsn: str
) -> Result:
    """One run on the database `dsn` as it is: only the messages of sends made in the run are
    counted (`args`: outbox_messages, smpp_messages, per_post, profile, timeline, pgdata, and
    optionally worker_loop and bare_loops)."""
    conn = await asyncpg.connect(dsn)
    try:
        since = await conn.fetchval("SELECT coalesce(max(id), 0) FROM sends")
    finally:
        await conn.close()
    n = args.outbox_messages if scenario == "outbox" else args.smpp_messages
    smsc = SmscProcess(free_port()) if scenario == "smpp" else None
    if smsc is not None:
        await smsc.start()
    try:
        bares = {}
        for loop in getattr(args, "bare_loops", "asyncio").split(",") if smsc else ():
            assert smsc is not None
            bares[loop] = await _bare(smsc.port, n, loop)
        port = free_port()
        gateway = gateway_config(scenario, smsc.port if smsc else 0)
        env = hub_env(dsn, redis_dsn, port, gateway, getattr(args, "worker_loop", ""))
        with hub_processes(env) as (api, worker):
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=600
            ) as client:
                await _wait_ready(client, dsn, worker)
                meter = _meter(args, api.pid, worker.pid)
                label = f"{scenario}-{number}"
                spies = _profilers(args.profile, label, {"worker": worker.pid, "api": api.pid})
                poller, started = Poller(dsn, since), time.perf_counter()
                meter.start()
                try:
                    posted, to_sent, to_delivered = await _drive(
                        client, key, phones(n, seed=number + since), args.per_post, poller
                    )
                finally:
                    meter.stop(time.perf_counter() - started)
                    meter.used["postgres_poll"] = poller.backend_cpu
                    for spy in spies:
                        spy.send_signal(signal.SIGINT)
                    for spy in spies:
                        spy.wait(timeout=60)
        if args.timeline is not None:
            with args.timeline.open("a") as f:
                f.write(json.dumps({"run": label, "polls": poller.timeline}) + "\n")
        return Result(
            scenario=scenario,
            messages=n,
            posted=posted,
            to_sent=to_sent,
            to_delivered=to_delivered,
            steady=poller.steady_rate(n),
            cpu=meter.used,
            statuses=poller.counts,
            late=poller.waiting_at(to_sent + LATE_SECONDS),
            bares=bares,
        )
    finally:
        if smsc is not None:
            await smsc.stop()


async def _drive(
    client: httpx.AsyncClient, key: str, recipients: list[str], per_post: int, poller: Poller
) -> tuple[float, float, float]:
    """POST the recipients in slices one after another while polling; seconds from the first
    POST to the last 202, to every message sent, and to every message delivered."""
    started, posted = time.perf_counter(), asyncio.Event()
    polling = asyncio.create_task(poller.run(started, len(recipients), posted))
    try:
        for i in range(0, len(recipients), per_post):
            body = {"to": recipients[i : i + per_post], "body": BODY}
            resp = await client.post(
                "/v1/messages", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            _check_accepted(resp, len(body["to"]))
        posted_at = time.perf_counter() - started
        posted.set()
        to_sent, to_delivered = await polling
    finally:
        polling.cancel()
    return posted_at, to_sent, to_delivered


# --- reporting ---------------------------------------------------------------------------


def _report(r: Result) -> None:
    never = r.statuses.get("sent", 0) if math.isinf(r.to_delivered) else 0
    _say(
        f"{r.scenario:6} {r.messages:>7,} msgs  posted {r.posted:6.2f} s  "
        f"sent {r.to_sent:6.2f} s {r.sent_rate:>7,.0f}/s  "
        + (
            f"delivered {r.to_delivered:6.2f} s {r.delivered_rate:>7,.0f}/s  "
            if not never
            else f"delivered NEVER: {never:,} receipts not applied after {STALL_SECONDS:.0f} s  "
        )
        + f"10-90 % {r.steady:>7,.0f}/s"
        + (f"  ({r.late:,} not delivered {LATE_SECONDS:.0f} s after all sent)" if r.late else "")
    )
    per_k = 1e6 / r.messages  # CPU seconds -> ms per 1,000 segments
    c = r.cpu
    parts = [
        f"{name} {c[name]:.1f} s ({c[name] * per_k:.0f} ms/1k)"
        for name in ("worker", "api", "postgres", "smsc", "valkey", "client", "other")
        if name in c
    ]
    _say(f"       CPU: {', '.join(parts)}; machine busy {c['machine_share']:.0%}")
    if "postgres" in c and "postgres_poll" in c:
        hub_pg = c["postgres"] - c["postgres_poll"]
        _say(
            f"       postgres less the benchmark's own status poll "
            f"({c['postgres_poll']:.1f} s): {hub_pg:.1f} s ({hub_pg * per_k:.0f} ms/1k)"
        )
    for loop, b in r.bares.items():
        _say(
            f"       bare smpp34 on {loop}: {b.rate:,.0f}/s to the last submit_sm_resp, "
            f"{r.messages / b.to_receipts:,.0f}/s to the last receipt, "
            f"CPU {b.cpu:.1f} s ({b.cpu * per_k:.0f} ms/1k); hub / bare: "
            f"to sent {r.sent_rate / b.rate:.2f}, "
            f"to delivered {r.delivered_rate * b.to_receipts / r.messages:.2f}"
        )
    if set(r.statuses) - {"delivered"}:
        _say(f"       statuses: {r.statuses}")


def _summary(results: list[Result]) -> None:
    _say()
    for scenario in dict.fromkeys(r.scenario for r in results):
        runs = [r for r in results if r.scenario == scenario]
        med = statistics.median
        worker = med([r.cpu["worker"] for r in runs])
        if all("postgres" in r.cpu for r in runs):
            per_k = 1e6 / runs[0].messages
            pg = med([r.cpu["postgres"] for r in runs]) * per_k
            hub_pg = med([r.cpu["postgres"] - r.cpu.get("postgres_poll", 0.0) for r in runs])
            _say(
                f"{scenario}, median of {len(runs)}: PostgreSQL CPU {pg:.0f} ms per 1,000 "
                f"segments, {hub_pg * per_k:.0f} less the benchmark's status poll"
            )
        _say(
            f"{scenario}, median of {len(runs)}: to sent {med([r.sent_rate for r in runs]):,.0f} "
            f"segments/s, to delivered {med([r.delivered_rate for r in runs]):,.0f} segments/s "
            f"(10-90 % {med([r.steady for r in runs]):,.0f}/s); worker CPU {worker:.1f} s "
            f"= {worker * 1e6 / runs[0].messages:.0f} ms per 1,000 segments"
        )
        for loop in dict.fromkeys(loop for r in runs for loop in r.bares):
            bares = [(r, r.bares[loop]) for r in runs if loop in r.bares]
            _say(
                f"  bare smpp34 on {loop}: {med([b.rate for _, b in bares]):,.0f}/s to the last "
                f"submit_sm_resp, {med([r.messages / b.to_receipts for r, b in bares]):,.0f}/s "
                f"to the last receipt; hub / bare: to sent "
                f"{med([r.sent_rate / b.rate for r, b in bares]):.2f}, to delivered (over the "
                f"bare client's rate to its last receipt) "
                f"{med([r.delivered_rate * b.to_receipts / r.messages for r, b in bares]):.2f}"
            )


async def _run(args: argparse.Namespace, redis_dsn: str) -> int:
    key = await prepare_template(args.dsn)
    scenarios = ["outbox", "smpp"] if args.scenario == "both" else [args.scenario]
    _say(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{psutil.cpu_count()} CPUs; {args.per_post:,} recipients per POST; 1 segment each"
    )
    results: list[Result] = []
    for number in range(1, args.repeat + 1):
        for scenario in scenarios:
            result = await run_once(args, scenario, number, key, redis_dsn)
            _report(result)
            results.append(result)
    _summary(results)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", help="an admin DSN; the benchmark creates its own databases")
    parser.add_argument("--redis", help="a Redis DSN; the benchmark flushes its database")
    parser.add_argument("--scenario", choices=["outbox", "smpp", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--outbox-messages", type=int, default=100_000)
    parser.add_argument("--smpp-messages", type=int, default=20_000)
    parser.add_argument("--per-post", type=int, default=10_000)
    parser.add_argument(
        "--pgdata", type=Path, help="with --dsn: the server's data dir, to count its CPU"
    )
    parser.add_argument("--profile", type=Path, help="py-spy the worker and API into this dir")
    parser.add_argument("--worker-loop", choices=["asyncio", "uvloop"], default="")
    parser.add_argument(
        "--bare-loops", default="asyncio,uvloop", help="the bare client's loops, comma-separated"
    )
    parser.add_argument(
        "--timeline", type=Path, help="write each run's polls (t, sent or beyond, delivered) here"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        valkey = EmbeddedValkey(Path(tmp)) if not args.redis else None
        pg = EmbeddedPostgres(Path(tmp)) if not args.dsn else None
        try:
            redis_dsn = args.redis or (valkey.start() if valkey else "")
            if pg is not None:
                args.dsn = with_database(pg.start(), "postgres")
                args.pgdata = pg.pgdata
            return asyncio.run(_run(args, redis_dsn))
        finally:
            if valkey is not None:
                valkey.stop()
            if pg is not None:
                pg.stop()


if __name__ == "__main__":
    sys.exit(main())
