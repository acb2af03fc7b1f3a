"""The deploy's nginx site (ops/deploy/nginx-hub.conf), run for real with TLS in front of a real
`hub serve` that trusts only it: the dashboard's cookie is `Secure` when the browser came by
HTTPS, the operation log keeps the address nginx saw, and what a client forges in
X-Forwarded-For / X-Forwarded-Proto changes nothing, through nginx or straight to the hub.

Loopback has many addresses: nginx reaches the hub from 127.0.0.1 (the one trusted proxy), the
browser behind nginx connects from 127.0.0.3, and a client that goes around nginx from
127.0.0.2.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from hub.messages.controllers import MAX_SEND_BYTES
from tenants.scopes import ALL_SCOPES
from tenants.service import create_key, ensure_root
from tests.e2e.conftest import HUB, clean_env, free_port
from tests.peers import require_binary

pytestmark = pytest.mark.e2e

SITE = Path(__file__).resolve().parents[2] / "ops" / "deploy" / "nginx-hub.conf"
BROWSER = "127.0.0.3"  # behind nginx
AROUND = "127.0.0.2"  # straight to the hub, not a trusted proxy
FORGED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
SEND_LIMIT = MAX_SEND_BYTES  # the hub's own limit on POST /v1/messages


@dataclass(frozen=True)
class Rig:
    https: str  # nginx, TLS
    http: str  # nginx, plain (redirects)
    hub: str  # the hub itself
    tls: ssl.SSLContext  # trusts the test's certificate
    key: str  # the operator's key
    log: Path  # nginx's access log of the site


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl, as an operator would make one)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            require_binary("openssl", "openssl"),
            *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "30", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, f"ops/deploy/nginx-hub.conf no longer has {old!r}: update this test"
    return text.replace(old, new)


def _site(hub_port: int, http_port: int, https_port: int, cert: Path, key: Path, log: Path) -> str:
    """The deploy's site with this machine's addresses, the test's certificate and its access
    log's path: nothing else changes."""
    site = SITE.read_text()
    site = _replace(site, "/var/log/nginx/hub.access.log", str(log))
    upstream = f"server 127.0.0.1:{hub_port} max_fails=3 fail_timeout=10s;"
    site = _replace(site, "server 10.0.0.11:8000 max_fails=3 fail_timeout=10s;", upstream)
    site = _replace(site, "    server 10.0.0.12:8000 max_fails=3 fail_timeout=10s;\n", "")
    site = _replace(site, "    listen [::]:80;\n", "")
    site = _replace(site, "    listen [::]:443 ssl http2;\n", "")
    site = _replace(site, "listen 80;", f"listen 127.0.0.1:{http_port};")
    site = _replace(site, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    site = _replace(site, "/etc/ssl/hub/fullchain.pem", str(cert))
    return _replace(site, "/etc/ssl/hub/privkey.pem", str(key))


def _main_config(folder: Path, site: Path) -> str:
    """nginx.conf around the site: every path in `folder`, workers as the test's own user."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    temps = "\n".join(
        f"    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
daemon off;
worker_processes 1;
{"user " + user + " " + group + ";" if os.geteuid() == 0 else ""}
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} warn;
events {{ worker_connections 128; }}
http {{
    access_log {folder / "access.log"};
{temps}
    include {site};
}}
"""


@pytest.fixture
def nginx_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "nginx"
    folder.mkdir()
    return folder


@pytest.fixture
def hub_process(fresh_db: str, redis_dsn: str) -> Iterator[int]:
    port = free_port()
    env = clean_env(
        HUB_DB__DSN=fresh_db,
        HUB_REDIS__DSN=redis_dsn,
        HUB_HTTP__PORT=str(port),
        HUB_HTTP__TRUSTED_PROXIES="127.0.0.1",
    )
    server = subprocess.Popen([HUB, "serve"], env=env)
    try:
        yield port
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.fixture
def nginx(nginx_folder: Path, hub_process: int) -> Iterator[tuple[int, int, Path]]:
    binary = require_binary("/usr/sbin/nginx", "nginx-light")
    cert, key = _certificate(nginx_folder)
    http_port, https_port = free_port(), free_port()
    site = nginx_folder / "hub.conf"
    log = nginx_folder / "hub.access.log"
    site.write_text(_site(hub_process, http_port, https_port, cert, key, log))
    config = nginx_folder / "nginx.conf"
    config.write_text(_main_config(nginx_folder, site))
    command = [binary, "-p", str(nginx_folder), "-c", str(config), "-e", "stderr"]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    server = subprocess.Popen(command)
    try:
        yield http_port, https_port, cert
    finally:
        server.terminate()
        server.wait(timeout=60)


async def _operator_key(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return (await create_key(conn, await ensure_root(conn), ALL_SCOPES, name="e2e")).key
    finally:
        await conn.close()


async def _wait_ready(url: str, **client: object) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30, **client) as ready:  # type: ignore[arg-type]
        async with asyncio.timeout(300):  # importing the hub takes long on a loaded machine
            while True:
                try:
                    if (await ready.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)


@pytest.fixture
async def rig(
    fresh_db: str, hub_process: int, nginx: tuple[int, int, Path], nginx_folder: Path
) -> Rig:
    http_port, https_port, cert = nginx
    tls = ssl.create_default_context(cafile=str(cert))
    rig = Rig(
        https=f"https://127.0.0.1:{https_port}",
        http=f"http://127.0.0.1:{http_port}",
        hub=f"http://127.0.0.1:{hub_process}",
        tls=tls,
        key=await _operator_key(fresh_db),
        log=nginx_folder / "hub.access.log",
    )
    await _wait_ready(rig.hub)
    await _wait_ready(rig.https, verify=tls)
    return rig


def _client(base: str, source: str, tls: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=source, verify=tls or True)
    return httpx.AsyncClient(base_url=base, transport=transport, timeout=60)


async def _sign_in(client: httpx.AsyncClient, key: str, origin: str) -> httpx.Response:
    return await client.post(
        "/dashboard/login", data={"key": key}, headers={"Origin": origin, **FORGED}
    )


async def _logged_address(dsn: str, name: str) -> str:
    """The address the operation log kept for the creation of the key called `name`."""
    conn = await asyncpg.connect(dsn)
    try:
        return str(
            await conn.fetchval(
                "SELECT address FROM operation_log WHERE action = 'key.create'"
                " AND after->>'name' = $1",
                name,
            )
        )
    finally:
        await conn.close()


async def _create_key(client: httpx.AsyncClient, key: str, name: str) -> None:
    made = await client.post(
        "/v1/tenants/000000/keys",
        json={"scopes": ["dashboard:read"], "name": name},
        headers={"Authorization": f"Bearer {key}", **FORGED},
    )
    assert made.status_code == 201, made.text


async def test_nginx_in_front_of_hub_serve(rig: Rig, fresh_db: str) -> None:
    """One hub and one nginx for every check (each start costs seconds on a loaded machine)."""
    await _through_nginx_the_cookie_is_secure_and_the_address_real(rig, fresh_db)
    await _forged_proxy_headers_around_nginx_change_nothing(rig, fresh_db)
    await _plain_http_to_nginx_is_sent_to_https(rig)
    await _nginx_takes_the_hubs_largest_body_and_refuses_more_in_json(rig)


async def _through_nginx_the_cookie_is_secure_and_the_address_real(rig: Rig, fresh_db: str) -> None:
    async with _client(rig.https, BROWSER, rig.tls) as browser:
        signed = await _sign_in(browser, rig.key, rig.https)
        assert signed.status_code == 303, signed.text
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith("hub_dashboard=")
        assert "; Secure" in cookie
        assert "HttpOnly" in cookie
        # The session works through nginx (the Host nginx passes on matches the Origin).
        home = await browser.get("/dashboard/", follow_redirects=True)
        assert home.status_code == 200
        assert home.url.path.startswith("/dashboard/t/000000")
        # nginx replaced the client's X-Forwarded-For with the address it saw.
        await _create_key(browser, rig.key, "through-nginx")
        # TLS with modern settings: HSTS on every answer.
        assert "max-age=" in home.headers["strict-transport-security"]
        # /metrics is for the private network; this browser is not on it (127.0.0.1 is).
        for path in ("/metrics", "/metrics/", "/metrics/?x=1"):
            refused = await browser.get(path)
            assert refused.status_code == 403, path
            assert refused.json()["error"] == "forbidden"  # the hub's error shape, from nginx
        # A carrier's callback carries the gateway's secret in its query: never logged.
        await browser.post("/v1/gateways/outbox/receipts?secret=leak-me-not-42", json=[])
    assert await _logged_address(fresh_db, "through-nginx") == BROWSER
    access = (rig.log).read_text()
    assert "/v1/gateways/outbox/receipts" in access
    assert "leak-me-not-42" not in access
    async with httpx.AsyncClient(base_url=rig.https, verify=rig.tls) as local:
        assert (await local.get("/metrics")).status_code == 200


async def _plain_http_to_nginx_is_sent_to_https(rig: Rig) -> None:
    async with _client(rig.http, BROWSER) as plain:
        answer = await plain.get("/dashboard/login?next=/dashboard/")
    assert answer.status_code == 301
    assert answer.headers["location"].startswith("https://127.0.0.1")
    assert answer.headers["location"].endswith("/dashboard/login?next=/dashboard/")


async def _forged_proxy_headers_around_nginx_change_nothing(rig: Rig, fresh_db: str) -> None:
    """A client that reaches the hub directly (not from a trusted proxy) and claims HTTPS and
    another address: the cookie is not marked Secure on its say-so (it came by plain HTTP), and
    the log keeps its real address."""
    async with _client(rig.hub, AROUND) as around:
        signed = await _sign_in(around, rig.key, rig.hub)
        assert signed.status_code == 303, signed.text
        assert "secure" not in signed.headers["set-cookie"].lower()
        await _create_key(around, rig.key, "around-nginx")
    assert await _logged_address(fresh_db, "around-nginx") == AROUND


async def _nginx_takes_the_hubs_largest_body_and_refuses_more_in_json(rig: Rig) -> None:
    """client_max_body_size sits just above the hub's 40 MiB: a body just over the hub's limit
    reaches the hub (its own 413), one past nginx's gets nginx's 413 in the same JSON shape."""
    headers = {"Authorization": f"Bearer {rig.key}", "Content-Type": "application/json"}
    async with _client(rig.https, BROWSER, rig.tls) as browser:
        over_hub = await browser.post(
            "/v1/messages", content=b" " * (SEND_LIMIT + 1), headers=headers
        )
        over_nginx = await browser.post(
            "/v1/messages", content=b" " * (41 * 1024 * 1024 + 1), headers=headers
        )
    assert over_hub.status_code == 413
    assert over_hub.json()["limit_bytes"] == SEND_LIMIT  # the hub's own answer
    assert over_nginx.status_code == 413
    assert over_nginx.json()["error"] == "too_large"
    assert "limit_bytes" not in over_nginx.json()  # nginx's
