"""The newcomer's command: `hub up` with no DSNs, exactly as the README runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import asyncpg
import httpx
import msgspec
import psutil
import pytest

from hub.embedded import RunFile
from tests.e2e.conftest import HUB, clean_env, free_port, key_from, run_hub

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def start_hub(
    data_dir: Path, port: int, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, str]:
    """Start `hub up`; return the process, the URL and the key it printed, once it is ready."""
    proc = subprocess.Popen(
        [HUB, "up", "--data-dir", str(data_dir), "--port", str(port)],
        cwd=cwd,
        env=clean_env() if env is None else env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        output.append(line)
        if line.startswith("HUB_API_KEY="):
            url = f"http://127.0.0.1:{port}"
            assert httpx.get(f"{url}/readyz", timeout=10).json()["status"] == "ok"
            return proc, url, key_from("".join(output))
    proc.kill()
    raise AssertionError("hub up did not become ready:\n" + "".join(output))


def _servers_of(data_dir: Path) -> list[psutil.Process]:
    """Every live process whose command line mentions the data dir (postgres, valkey)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(data_dir) in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def _worker_heartbeats(data_dir: Path) -> int:
    """Heartbeats in the running hub's database, found through its run file."""
    run = msgspec.json.decode((data_dir / "run.json").read_bytes(), type=RunFile)

    async def count() -> int:
        conn = await asyncpg.connect(run.db_dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM worker_heartbeats"))
        finally:
            await conn.close()

    deadline = time.monotonic() + 10
    while (found := asyncio.run(count())) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def _delivered(send_url: str, auth: dict[str, str]) -> bool:
    deadline = time.monotonic() + 60  # a liveness bound: the receipt comes within a second
    while time.monotonic() < deadline:
        if httpx.get(send_url, headers=auth, timeout=10).json()["statuses"] == {"delivered": 1}:
            return True
        time.sleep(0.2)
    return False


def _dashboard_session(url: str, key: str) -> str:
    """Sign in to the dashboard with `key`; the session cookie's value."""
    signed = httpx.post(
        f"{url}/dashboard/login", data={"key": key}, headers={"Origin": url}, timeout=10
    )
    assert signed.status_code == 303, signed.text
    return signed.cookies["hub_dashboard"]


def stop_hub(proc: subprocess.Popen[str], signum: int = signal.SIGINT) -> str:
    """Stop it as Ctrl-C (or, with SIGTERM, as systemd or `docker stop`) does: exit 0."""
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return out


def _all_stopped(data_dir: Path) -> None:
    """Nothing of `hub up` is left: no server under the data dir, no run file."""
    # A liveness bound, not a speed claim: a loaded 2-core CI machine may take a while.
    deadline = time.monotonic() + 45
    while _servers_of(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _servers_of(data_dir) == []
    assert not (data_dir / "run.json").exists()


def _people_found(url: str, auth: dict[str, str]) -> list[int]:
    """The sends the operator's lookup finds for the phone the test sent to."""
    found = httpx.post(
        f"{url}/v1/people/lookup", json={"phone": "13800138000"}, headers=auth, timeout=10
    )
    assert found.status_code == 200, found.text
    return [m["send_id"] for m in found.json()["messages"]]


def test_up_serves_shares_its_servers_and_stops_clean(tmp_path: Path) -> None:
    data_dir = tmp_path / "hubdata"
    port = free_port()
    proc, url, key = start_hub(data_dir, port)
    try:
        me = httpx.get(f"{url}/v1/me", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert me.status_code == 200
        assert me.json()["tenant"]["code"] == "000000"
        assert len(me.json()["scopes"]) >= 12
        tree = httpx.get(
            f"{url}/v1/tenants/510000/tree",
            params={"depth": 1},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        ).json()
        assert len(tree["children"]) == 21  # the demo province with all its prefectures
        assert _servers_of(data_dir), "expected embedded servers under the data dir"
        assert _worker_heartbeats(data_dir) >= 1, "hub up runs the worker beside the API"

        # Another command on the same data dir uses the running servers: its key works on the API.
        made = run_hub(
            "keys",
            "create",
            "--tenant",
            "510104",
            "--scope",
            "all",
            "--data-dir",
            str(data_dir),
            env=clean_env(),
        )
        assert made.returncode == 0, made.stdout + made.stderr
        county_key = key_from(made.stdout)
        me2 = httpx.get(f"{url}/v1/me", headers={"Authorization": f"Bearer {county_key}"})
        assert me2.json()["tenant"]["code"] == "510104"

        # The worker beside the API delivers through the default outbox gateway. The quota is
        # this month's by the hub's own clock; quiet hours are switched off so that the normal
        # send goes now at any hour (tests/e2e/test_readme_tour.py shows what they hold).
        granted = run_hub(
            "quota",
            "set",
            "--tenant",
            "000000",
            "--limit",
            "100",
            "--data-dir",
            str(data_dir),
            env=clean_env(),
        )
        assert granted.returncode == 0, granted.stdout + granted.stderr
        auth = {"Authorization": f"Bearer {key}"}
        quiet = httpx.put(
            f"{url}/v1/tenants/000000/quiet-hours", json={"enabled": False}, headers=auth
        )
        assert quiet.status_code == 200, quiet.text
        sent = httpx.post(
            f"{url}/v1/messages",
            json={"to": ["13800138000"], "body": "hub up 试发"},
            headers=auth,
            timeout=30,
        )
        assert sent.status_code == 202, sent.text
        assert _delivered(f"{url}/v1/messages/{sent.json()['id']}", auth)
        # The operator's lookup of a person works out of the box: `hub up` made the HMAC's
        # secret (HUB_PEOPLE__SECRET) in the data dir.
        assert _people_found(url, auth) == [sent.json()["id"]]
        secret = (data_dir / "people-secret").read_text()
        cookie = _dashboard_session(url, key)
    finally:
        if proc.poll() is None:
            stop_hub(proc)

    _all_stopped(data_dir)

    # A second run reuses the data: same tenants, same demo key, and the dashboard session
    # (it lives in PostgreSQL). The signing secret earlier versions kept is deleted.
    (data_dir / "dashboard-secret").write_text("0" * 64 + "\n")
    port2 = free_port()
    proc2, url2, key2 = start_hub(data_dir, port2, env=clean_env(HUB_HTTP__SHUTDOWN_SECONDS="2"))
    try:
        assert key2 == key
        again = httpx.get(f"{url2}/v1/tenants/510104", headers={"Authorization": f"Bearer {key2}"})
        assert again.status_code == 200
        page = httpx.get(f"{url2}/dashboard/t/000000", cookies={"hub_dashboard": cookie})
        assert page.status_code == 200
        assert not (data_dir / "dashboard-secret").exists()
        assert (data_dir / "people-secret").read_text() == secret
        assert _people_found(url2, {"Authorization": f"Bearer {key2}"}) == [sent.json()["id"]]
        # Half a sign-in form, no key needed, and then nothing: the shutdown does not wait for
        # it past HUB_HTTP__SHUTDOWN_SECONDS.
        held = socket.create_connection(("127.0.0.1", port2))
        held.sendall(
            b"POST /dashboard/login HTTP/1.1\r\nHost: hub\r\nContent-Length: 100\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\nkey="
        )
    finally:
        # SIGTERM (systemd's stop, `docker stop`) stops it as cleanly as Ctrl-C: uvicorn raises
        # the signal again once it has shut down, which once ended the process on the spot and
        # left PostgreSQL running under the data dir.
        out = stop_hub(proc2, signal.SIGTERM)
    held.close()
    assert "hub stopped; stopping its servers" in out
    _all_stopped(data_dir)
    assert os.path.exists(data_dir / "postgres" / "PG_VERSION")


def test_sigterm_while_starting_stops_what_started(tmp_path: Path) -> None:
    """SIGTERM as soon as the embedded PostgreSQL runs, before the hub is up (migrations, the
    demo data): it exits 130 and leaves no server behind."""
    data_dir = tmp_path / "hubdata"
    proc = subprocess.Popen(
        [HUB, "up", "--data-dir", str(data_dir), "--port", str(free_port())],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        started = data_dir / "postgres" / "postmaster.pid"  # the server's own lock file
        deadline = time.monotonic() + 120
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "the embedded PostgreSQL never started"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "hub: interrupted" in out
    assert "hub is up" not in out
    _all_stopped(data_dir)
