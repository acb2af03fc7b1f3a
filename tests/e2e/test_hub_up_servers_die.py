"""`hub up` brings its servers back: its embedded PostgreSQL and then its Valkey killed with
SIGKILL mid-delivery are started again, the worker beside the API carries on, and every message
ends in a final state, none sent twice, the quota ledger clean."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import asyncpg
import httpx
import msgspec
import psutil
import pytest

from hub.embedded import RunFile
from tests.e2e.conftest import clean_env, free_port, run_hub
from tests.e2e.test_hub_up import start_hub

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PHONES = [f"1380013{n:04d}" for n in range(200)]
FINAL = {"delivered", "undelivered", "failed", "expired"}


def _postmaster(data_dir: Path) -> int | None:
    try:
        first = (data_dir / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0]
    except FileNotFoundError:
        return None
    return int(first) if first.strip().isdigit() else None


def _valkey(data_dir: Path) -> psutil.Process | None:
    """The process listening on the port of the hub's Valkey (it renames its command line)."""
    run = msgspec.json.decode((data_dir / "run.json").read_bytes(), type=RunFile)
    port = int(run.redis_dsn.rsplit(":", 1)[1].split("/", 1)[0])
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    return None


def _alive(pid: int | None) -> bool:
    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait(what: str, check: object, patience: float) -> None:
    """Poll `check()` until it holds; a liveness bound, not a speed claim."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {patience:g} s")


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _statuses(url: str, send_id: int, auth: dict[str, str]) -> dict[str, int]:
    try:
        resp = httpx.get(f"{url}/v1/messages/{send_id}", headers=auth, timeout=10)
    except httpx.HTTPError:
        return {}
    if resp.status_code != 200:
        return {}
    statuses: dict[str, int] = resp.json()["statuses"]
    return statuses


def _outbox_repeats(data_dir: Path, send_id: int) -> tuple[int, int]:
    """(outbox rows of the send's messages, messages with more than one)."""
    run = msgspec.json.decode((data_dir / "run.json").read_bytes(), type=RunFile)

    async def count() -> tuple[int, int]:
        conn = await asyncpg.connect(run.db_dsn)
        try:
            rows = await conn.fetch(
                "SELECT o.message_id, count(*) AS n FROM outbox o"
                " JOIN messages m ON m.id = o.message_id WHERE m.send_id = $1"
                " GROUP BY o.message_id",
                send_id,
            )
        finally:
            await conn.close()
        return sum(r["n"] for r in rows), sum(r["n"] > 1 for r in rows)

    return asyncio.run(count())


def _drain(proc: subprocess.Popen[str]) -> tuple[list[str], threading.Thread]:
    """Keep reading what `hub up` says (a full pipe would block it mid-outage)."""
    lines: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    thread = threading.Thread(target=lambda: lines.extend(stdout), daemon=True)
    thread.start()
    return lines, thread


def test_up_brings_back_a_killed_postgres_and_valkey_mid_delivery(tmp_path: Path) -> None:
    data_dir = tmp_path / "hubdata"
    # Short leases: a batch whose worker lost PostgreSQL mid-chunk is taken back within seconds.
    env = clean_env(HUB_DELIVERY__LEASE_SECONDS="10")
    proc, url, key = start_hub(data_dir, free_port(), env=env)
    said, reader = _drain(proc)
    auth = {"Authorization": f"Bearer {key}"}
    try:
        granted = run_hub(
            "quota", "set", "--tenant", "000000", "--limit", "1000", "--data-dir", str(data_dir),
            env=env,
        )  # fmt: skip
        assert granted.returncode == 0, granted.stdout + granted.stderr
        quiet = httpx.put(
            f"{url}/v1/tenants/000000/quiet-hours", json={"enabled": False}, headers=auth
        )
        assert quiet.status_code == 200, quiet.text
        sent = httpx.post(
            f"{url}/v1/messages",
            json={"to": PHONES, "body": "服务器宕机演练"},
            headers=auth,
            timeout=30,
        )
        assert sent.status_code == 202, sent.text
        send_id = sent.json()["id"]

        # PostgreSQL's postmaster, killed while the worker delivers.
        old_pg = _postmaster(data_dir)
        assert _alive(old_pg)
        assert old_pg is not None
        os.kill(old_pg, signal.SIGKILL)
        _wait(
            "PostgreSQL started again",
            lambda: (
                _postmaster(data_dir) not in (None, old_pg)
                and _alive(_postmaster(data_dir))
                and _ready(url)
            ),
            patience=90,
        )

        old_vk = _valkey(data_dir)
        assert old_vk is not None
        old_vk.kill()
        _wait(
            "Valkey started again",
            lambda: (
                (new := _valkey(data_dir)) is not None and new.pid != old_vk.pid and _ready(url)
            ),
            patience=60,
        )
        assert proc.poll() is None, "hub up kept running"

        # Every message ends final: what the worker lost goes back to work (leases, the
        # sweeper), and receipts lost on the way are reported again.
        _wait(
            "every message final",
            lambda: (
                (s := _statuses(url, send_id, auth))
                and set(s) <= FINAL
                and sum(s.values()) == len(PHONES)
            ),
            patience=240,
        )
        statuses = _statuses(url, send_id, auth)
        rows, repeated = _outbox_repeats(data_dir, send_id)
        assert repeated == 0
        # None twice, and each delivered one reached the outbox (the carrier) exactly once.
        assert rows == statuses.get("delivered", 0) + statuses.get("undelivered", 0)
        audited = run_hub("audit", "quota", "--data-dir", str(data_dir), env=env)
        assert audited.returncode == 0, audited.stdout + audited.stderr
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    out = "".join(said)
    assert proc.returncode == 0, out
    assert "embedded PostgreSQL died; starting it again" in out, out
    assert "embedded Valkey died; starting it again" in out, out


def test_up_exits_1_naming_a_server_it_cannot_start_again(tmp_path: Path) -> None:
    data_dir = tmp_path / "hubdata"
    proc, _url, _ = start_hub(data_dir, free_port())
    said, reader = _drain(proc)
    try:
        pid = _postmaster(data_dir)
        assert pid is not None
        # Its data folder gone with it: nothing to start again.
        os.kill(pid, signal.SIGKILL)
        (data_dir / "postgres").rename(data_dir / "postgres-gone")
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    out = "".join(said)
    assert proc.returncode == 1, out
    assert "error: embedded PostgreSQL died and did not start again after 10 tries" in out, out
    assert "hub up stopped because embedded PostgreSQL died" in out, out
