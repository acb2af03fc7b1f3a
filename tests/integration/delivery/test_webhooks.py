"""Webhook pushes of replies, to a real HTTP endpoint on a loopback port (uvicorn in a thread):
signed, retried with backoff until a 2xx, given up after MAX_ATTEMPTS; and the webhook setting."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis

from hub.calendar import TIMESTAMP_PATTERN
from hub.db import SingleConnectionDatabase
from hub.delivery import inbound, service, webhooks
from hub.delivery.gateway import Inbound
from hub.settings import GatewayConfig, Settings
from tests.factories import bearer
from tests.integration.delivery.conftest import SECRET, RunWorker, live_client, with_gateways
from tests.peers.aliyun import Receive, Scope, Send, serve

HOOK_SECRET = "tenant-webhook-secret-0123456789"
PHONE = "+8613800138000"


class Pushed(msgspec.Struct, frozen=True):
    path: str
    headers: dict[str, str]
    body: bytes


class Endpoint:
    """A tenant's webhook receiver: records every request and answers 200, or what `script`
    says first (a status, "slow": no answer for 2 s, "redirect": a 302 elsewhere)."""

    def __init__(self) -> None:
        self.url = ""
        self.script: list[int | Literal["slow", "redirect"]] = []
        self.pushed: list[Pushed] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        with self._lock:
            self.pushed.append(Pushed(scope["path"], headers, body))
            answer = self.script.pop(0) if self.script else 200
        extra: list[tuple[bytes, bytes]] = []
        if answer == "slow":
            await asyncio.sleep(2)
            answer = 200
        elif answer == "redirect":
            answer, extra = 302, [(b"location", b"/elsewhere")]
        start = {"type": "http.response.start", "status": answer, "headers": extra}
        await send(start)
        await send({"type": "http.response.body", "body": b"nope" if answer >= 300 else b"ok"})


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    receiver = Endpoint()
    with serve(receiver) as url:
        receiver.url = f"{url}hooks/sms"
        yield receiver


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with webhooks.client(private_ok=True) as client:
        yield client


async def set_webhook(
    client: httpx.AsyncClient, key: str, url: str, code: str = "510104"
) -> httpx.Response:
    body = {"url": url, "secret": HOOK_SECRET}
    return await client.put(f"/v1/tenants/{code}/webhook", json=body, headers=bearer(key))


async def address(conn: asyncpg.Connection, code: str = "510104") -> str:
    extension = await conn.fetchval("SELECT sms_extension FROM tenants WHERE code = $1", code)
    return f"{Settings().delivery.service_number}{extension}"


async def store(conn: asyncpg.Connection, *replies: Inbound) -> list[int]:
    """Replies stored and committed, with no push job enqueued (the tests push themselves)."""
    async with conn.transaction():
        return await inbound.store(conn, Settings().delivery, "outbox", replies)


async def deliveries(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, inbound_id, attempts, delivered_at IS NOT NULL AS delivered, last_error,"
        " next_at > hub_now() AS later, next_at = 'infinity' AS given_up"
        " FROM webhook_deliveries ORDER BY id"
    )
    return [dict(r.items()) for r in rows]


def check_signature(push: Pushed) -> None:
    """What a tenant does: recompute, compare in constant time, check the timestamp."""
    timestamp = push.headers["x-hub-timestamp"]
    expected = webhooks.sign(HOOK_SECRET, timestamp, push.body)
    assert hmac.compare_digest(expected, push.headers["x-hub-signature"])
    assert webhooks.verify(HOOK_SECRET, timestamp, push.body, push.headers["x-hub-signature"])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- pushing ----------------------------------------------------------------------------


@pytest.mark.parametrize("arrives", ["callback", "recorder"])
async def test_a_reply_is_pushed_once_signed_right_after_it_is_stored(
    live_db: asyncpg.Connection,
    live_settings: Settings,
    redis: ArqRedis,
    county_key: str,
    client: httpx.AsyncClient,
    run_worker: RunWorker,
    endpoint: Endpoint,
    arrives: str,
) -> None:
    assert (await set_webhook(client, county_key, endpoint.url)).status_code == 204
    to = await address(live_db) + "7"
    if arrives == "callback":
        # A Kannel sms-service call to the API; the push job is enqueued once it commits.
        kannel = GatewayConfig(
            name="kannel",
            kind="kannel",
            secret=SECRET,
            url="http://127.0.0.1:9",
            options={"callback_url": "http://hub.test"},
        )
        settings = with_gateways(live_settings, *live_settings.delivery.gateways, kannel)
        query = {"secret": SECRET, "from": "13800138000", "to": to, "text": "收到", "id": "mo-9"}
        async for api in live_client(settings, redis):
            resp = await api.get("/v1/gateways/kannel/inbound", params=query)
            assert resp.status_code == 200, resp.text
    else:
        # What an SMPP adapter does with a deliver_sm: the worker's recorder.
        recorder = service.Recorder(SingleConnectionDatabase(live_db), live_settings, redis)
        await recorder.inbound("outbox", [Inbound(PHONE, to, "收到", reference="mo-9")])

    await run_worker()  # burst: runs the enqueued push job, then stops

    [push] = endpoint.pushed
    [row] = await deliveries(live_db)
    assert (row["delivered"], row["attempts"], row["last_error"]) == (True, 1, None)
    assert push.path == "/hooks/sms"
    assert push.headers["content-type"] == "application/json"
    assert push.headers["x-hub-delivery"] == str(row["id"])
    check_signature(push)
    reply = msgspec.json.decode(push.body)
    # The API's one form of a timestamp (RFC 3339, Beijing time, to the microsecond).
    assert re.fullmatch(TIMESTAMP_PATTERN, reply.pop("received_at"))
    gateway = "kannel" if arrives == "callback" else "outbox"
    assert reply == {
        "id": row["inbound_id"],
        "tenant": "510104",
        "phone": PHONE,
        "address": to,
        "text": "收到",
        "opt_out": False,
        "gateway": gateway,
        "send_id": None,  # no send of 510104 asked this phone for a reply
    }
    # The same reply reported again is stored once; nothing is pushed again.
    async with live_db.transaction():
        again = await inbound.store(
            live_db, live_settings.delivery, gateway, [Inbound(PHONE, to, "收到", reference="mo-9")]
        )
    assert again == []
    async with webhooks.client(private_ok=True) as http:
        assert await webhooks.push_due(SingleConnectionDatabase(live_db), http) == 0
    assert len(endpoint.pushed) == 1


async def test_a_failing_endpoint_is_retried_until_it_answers_2xx(
    live_db: asyncpg.Connection,
    county_key: str,
    client: httpx.AsyncClient,
    http: httpx.AsyncClient,
    endpoint: Endpoint,
) -> None:
    await set_webhook(client, county_key, endpoint.url)
    await store(live_db, Inbound(PHONE, await address(live_db), "T", reference="mo-1"))
    db = SingleConnectionDatabase(live_db)
    endpoint.script = [500]

    assert await webhooks.push_due(db, http) == 1
    [row] = await deliveries(live_db)
    assert (row["delivered"], row["attempts"], row["last_error"]) == (False, 1, "HTTP 500: nope")
    assert row["later"]  # backed off: not due now
    assert await webhooks.push_due(db, http) == 0

    await live_db.execute("UPDATE webhook_deliveries SET next_at = hub_now()")  # time passes
    assert await webhooks.push_due(db, http) == 1
    [row] = await deliveries(live_db)
    # The error is kept: what went wrong before.
    assert (row["delivered"], row["attempts"], row["last_error"]) == (True, 2, "HTTP 500: nope")
    # Both attempts: the same delivery id (receivers dedupe on it) and body, each signed.
    first, second = endpoint.pushed
    assert first.headers["x-hub-delivery"] == second.headers["x-hub-delivery"] == str(row["id"])
    assert first.body == second.body
    assert msgspec.json.decode(first.body)["opt_out"] is True
    check_signature(first)
    check_signature(second)
    # Delivered is final.
    await live_db.execute("UPDATE webhook_deliveries SET next_at = hub_now()")
    assert await webhooks.push_due(db, http) == 0


@pytest.mark.parametrize(
    ("trouble", "error"),
    [
        (503, "HTTP 503: nope"),
        ("redirect", "HTTP 302: nope"),  # not followed
        ("slow", "ReadTimeout"),
        ("closed", "ConnectError"),
    ],
)
async def test_failures_are_counted_backed_off_and_given_up_after_max_attempts(
    live_db: asyncpg.Connection,
    county_key: str,
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    trouble: int | Literal["slow", "redirect", "closed"],
    error: str,
) -> None:
    url = endpoint.url if trouble != "closed" else f"http://127.0.0.1:{closed_port()}/hook"
    await set_webhook(client, county_key, url)
    await store(live_db, Inbound(PHONE, await address(live_db), "好的", reference="mo-2"))
    db = SingleConnectionDatabase(live_db)
    if trouble != "closed":
        endpoint.script = [trouble] * webhooks.MAX_ATTEMPTS
    # A short read timeout for the slow endpoint's sake (connecting may take its time).
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.2)) as http:
        assert await webhooks.push_due(db, http) == 1
        [row] = await deliveries(live_db)
        assert (row["attempts"], row["later"], row["given_up"]) == (1, True, False)
        assert row["last_error"].startswith(error)

        # The last attempt fails too: it gives up, and keeps the row with its error.
        await live_db.execute(
            "UPDATE webhook_deliveries SET attempts = $1, next_at = hub_now()",
            webhooks.MAX_ATTEMPTS - 1,
        )
        assert await webhooks.push_due(db, http) == 1
        [row] = await deliveries(live_db)
        assert (row["attempts"], row["given_up"], row["delivered"]) == (12, True, False)
        assert row["last_error"].startswith(error)
        assert await webhooks.push_due(db, http) == 0
    if trouble != "closed":
        assert len(endpoint.pushed) == 2


async def test_concurrent_pushers_push_each_reply_once(
    fresh_db: str,
    live_db: asyncpg.Connection,
    county_key: str,
    client: httpx.AsyncClient,
    endpoint: Endpoint,
) -> None:
    await set_webhook(client, county_key, endpoint.url)
    to = await address(live_db)
    await store(live_db, *(Inbound(PHONE, to, f"#{n}", reference=f"mo-{n}") for n in range(60)))
    conns = [await asyncpg.connect(fresh_db) for _ in range(3)]
    try:
        async with webhooks.client(private_ok=True) as http:
            tried = await asyncio.gather(
                *(webhooks.push_due(SingleConnectionDatabase(c), http, limit=25) for c in conns)
            )
    finally:
        for conn in conns:
            await conn.close()
    assert sum(tried) == 60
    ids = [p.headers["x-hub-delivery"] for p in endpoint.pushed]
    assert len(ids) == len(set(ids)) == 60
    assert all(row["delivered"] and row["attempts"] == 1 for row in await deliveries(live_db))


async def test_without_a_webhook_nothing_is_queued_or_pushed(
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    live_settings: Settings,
    county_key: str,
    client: httpx.AsyncClient,
    run_worker: RunWorker,
    endpoint: Endpoint,
) -> None:
    # Another tenant has one; 510104 does not.
    assert (await set_webhook(client, county_key, endpoint.url, "510104001")).status_code == 204
    recorder = service.Recorder(SingleConnectionDatabase(live_db), live_settings, redis)
    await recorder.inbound("outbox", [Inbound(PHONE, await address(live_db), "收到")])
    await run_worker()
    assert await live_db.fetchval("SELECT count(*) FROM inbound") == 1
    assert await deliveries(live_db) == []
    assert endpoint.pushed == []


# --- the setting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://example.com/hook", "secret": HOOK_SECRET},
        {"url": "https://example.com/a hook", "secret": HOOK_SECRET},
        {"url": "example.com/hook", "secret": HOOK_SECRET},
        {"url": "https://example.com/hook", "secret": "short"},
        {"url": "https://example.com/hook"},
        {"url": "https://example.com/hook", "secret": HOOK_SECRET, "events": ["all"]},
    ],
)
async def test_a_bad_webhook_setting_is_422(
    live_db: asyncpg.Connection, county_key: str, client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    resp = await client.put("/v1/tenants/510104/webhook", json=body, headers=bearer(county_key))
    assert resp.status_code == 422, resp.text
    answer = resp.json()
    assert answer["error"] == "invalid"
    assert answer["detail"]
    assert await live_db.fetchval("SELECT count(*) FROM webhooks") == 0


@pytest.mark.parametrize("code", ["510105", "510100", "520000", "999999"])
async def test_a_webhook_outside_the_callers_subtree_is_404(
    live_db: asyncpg.Connection, county_key: str, client: httpx.AsyncClient, code: str
) -> None:
    resp = await set_webhook(client, county_key, "https://example.com/hook", code)
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"] == "not_found"
    assert await live_db.fetchval("SELECT count(*) FROM webhooks") == 0


async def test_setting_a_webhook_again_replaces_it_for_the_next_push(
    live_db: asyncpg.Connection,
    county_key: str,
    client: httpx.AsyncClient,
    http: httpx.AsyncClient,
    endpoint: Endpoint,
) -> None:
    assert (await set_webhook(client, county_key, endpoint.url + "/old")).status_code == 204
    await store(live_db, Inbound(PHONE, await address(live_db), "收到", reference="mo-3"))
    assert (await set_webhook(client, county_key, endpoint.url)).status_code == 204
    assert await live_db.fetchval("SELECT count(*) FROM webhooks") == 1
    assert await webhooks.push_due(SingleConnectionDatabase(live_db), http) == 1
    [push] = endpoint.pushed
    assert push.path == "/hooks/sms"


async def test_a_webhook_can_be_read_without_its_secret_and_deleted(
    live_db: asyncpg.Connection,
    county_key: str,
    client: httpx.AsyncClient,
    http: httpx.AsyncClient,
    endpoint: Endpoint,
) -> None:
    missing = await client.get("/v1/tenants/510104/webhook", headers=bearer(county_key))
    assert missing.status_code == 404
    assert (await set_webhook(client, county_key, endpoint.url)).status_code == 204
    seen = (await client.get("/v1/tenants/510104/webhook", headers=bearer(county_key))).json()
    assert seen["url"] == endpoint.url
    assert "secret" not in seen
    await store(live_db, Inbound(PHONE, await address(live_db), "收到", reference="mo-4"))
    assert len(await deliveries(live_db)) == 1  # queued, not pushed yet

    gone = await client.delete("/v1/tenants/510104/webhook", headers=bearer(county_key))
    assert gone.status_code == 204
    assert await deliveries(live_db) == []  # the pending push went with it
    assert await webhooks.push_due(SingleConnectionDatabase(live_db), http) == 0
    assert endpoint.pushed == []
    again = await client.delete("/v1/tenants/510104/webhook", headers=bearer(county_key))
    assert again.status_code == 204


# --- only public addresses -------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "http://192.168.1.10/hook",
        "http://169.254.169.254/latest/meta-data",  # a cloud's metadata service
        "http://[::1]/hook",
        "http://localhost:9000/hook",
        "http://localhost./hook",
        "http://127.0.0.1./hook",  # a trailing dot names the same host
        # IPv6 spellings of private IPv4 addresses: refused like the address they carry.
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped
        "http://[::ffff:7f00:1]/hook",  # the same, in hex
        "http://[::127.0.0.1]/hook",  # IPv4-compatible
        "http://[::ffff:0:7f00:1]/hook",  # IPv4-translated
        "http://[64:ff9b::7f00:1]/hook",  # NAT64: 127.0.0.1
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",  # NAT64: 169.254.169.254
        "http://[2002:7f00:1::]/hook",  # 6to4: 127.0.0.1
        "http://[2002:a00:1::1]/hook",  # 6to4: 10.0.0.1
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook",  # Teredo, client 127.0.0.1
        # IPv6 that is not global itself.
        "http://[fd12:3456::1]/hook",  # unique local
        "http://[fe80::1]/hook",  # link-local
        "http://[fec0::1]/hook",  # site-local
        "http://[ff02::1]/hook",  # multicast
        "http://[::]/hook",  # unspecified
        "http://[2001:db8::1]/hook",  # documentation
        "http://[3fff::1]/hook",  # documentation (RFC 9637)
        "http://[64:ff9b:1::a00:1]/hook",  # NAT64 for local use
        "http://224.0.0.1/hook",  # multicast
        "http://100.64.0.1/hook",  # carrier-grade NAT
        "http://0.0.0.0/hook",  # this host
    ],
)
async def test_a_webhook_to_a_private_address_is_422(
    live_db: asyncpg.Connection,
    county_key: str,
    live_settings: Settings,
    redis: ArqRedis,
    url: str,
) -> None:
    strict = msgspec.structs.replace(
        live_settings,
        delivery=msgspec.structs.replace(live_settings.delivery, webhooks_private_ok=False),
    )
    async for client in live_client(strict, redis):
        resp = await set_webhook(client, county_key, url)
        assert resp.status_code == 422, resp.text
        assert "not a public address" in resp.json()["detail"]
        # A public name is taken; it is resolved and checked when it is called.
        assert (await set_webhook(client, county_key, "https://hooks.example.org/sms")).is_success
    assert await live_db.fetchval("SELECT url FROM webhooks") == "https://hooks.example.org/sms"


async def test_a_name_that_resolves_to_a_private_address_is_never_called(
    live_db: asyncpg.Connection, county_key: str, client: httpx.AsyncClient, endpoint: Endpoint
) -> None:
    # A name, set while private addresses were allowed (or one that later resolves inward).
    by_name = endpoint.url.replace("127.0.0.1", "localhost")
    assert (await set_webhook(client, county_key, by_name)).status_code == 204
    await store(live_db, Inbound(PHONE, await address(live_db), "收到", reference="mo-5"))
    async with webhooks.client() as public_only:
        assert await webhooks.push_due(SingleConnectionDatabase(live_db), public_only) == 1
    assert endpoint.pushed == []
    [row] = await deliveries(live_db)
    assert not row["delivered"]
    assert row["last_error"].startswith("ConnectError: localhost is ")
    assert "not a public address" in row["last_error"]


@pytest.mark.parametrize(
    "host",
    ["0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "2130706433", "127.1", "017700000001", "0"],
)
async def test_an_ipv4_address_spelled_as_only_a_resolver_reads_it_is_422(
    live_db: asyncpg.Connection, county_key: str, client: httpx.AsyncClient, host: str
) -> None:
    # Refused even here, where private addresses are allowed: getaddrinfo reads each as an
    # address (127.0.0.1, or 0.0.0.0 for "0") that `ipaddress` and the reader do not see.
    resp = await set_webhook(client, county_key, f"http://{host}:8080/hook")
    assert resp.status_code == 422, resp.text
    answer = resp.json()
    expected = "0.0.0.0" if host == "0" else "127.0.0.1"
    assert answer["error"] == "invalid"
    assert f"is the IPv4 address {expected} in octal, hex or short form" in answer["detail"]
    assert f"{expected} is not a public address" in answer["detail"]
    assert answer["fields"][0]["key"] == "url"
    assert await live_db.fetchval("SELECT count(*) FROM webhooks") == 0


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("http://0x08080808/hook", "is the IPv4 address 8.8.8.8 in octal, hex or short form"),
        ("http://1.2.3.4.5/hook", "1.2.3.4.5 ends in a number but is not an IPv4 address"),
        ("http://999.1.1.1/hook", "999.1.1.1 ends in a number but is not an IPv4 address"),
        ("http://[::1/hook", "not a URL the hub can call"),
        ("http://xn--/hook", "not a URL the hub can call"),  # a bad IDNA label (was a 500)
        ("http://xn--zz.example/hook", "not a URL the hub can call"),
        ("https://hook.example/\n", "url"),  # a trailing line break
    ],
)
async def test_a_webhook_url_no_one_can_read_plainly_is_422(
    live_db: asyncpg.Connection,
    county_key: str,
    client: httpx.AsyncClient,
    url: str,
    detail: str,
) -> None:
    resp = await set_webhook(client, county_key, url)
    assert resp.status_code == 422, resp.text
    assert detail in resp.json()["detail"]
    assert await live_db.fetchval("SELECT count(*) FROM webhooks") == 0


@pytest.mark.parametrize(
    "host",
    [
        "0x7f.0.0.1",
        "0x7f000001",
        "2130706433",
        "127.1",
        "017700000001",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::]",
    ],
)
async def test_a_stored_url_that_leads_inward_is_never_called(
    live_db: asyncpg.Connection,
    county_key: str,
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    host: str,
) -> None:
    # A URL stored before these rules: the push client refuses it at the connection, with the
    # system's own resolver (numeric hosts need no DNS).
    assert (await set_webhook(client, county_key, endpoint.url)).status_code == 204
    port = httpx.URL(endpoint.url).port
    await live_db.execute("UPDATE webhooks SET url = $1", f"http://{host}:{port}/hooks/sms")
    await store(live_db, Inbound(PHONE, await address(live_db), "收到", reference="mo-6"))
    async with webhooks.client() as public_only:
        assert await webhooks.push_due(SingleConnectionDatabase(live_db), public_only) == 1
    assert endpoint.pushed == []
    [row] = await deliveries(live_db)
    assert not row["delivered"]
    assert row["last_error"].startswith("ConnectError: ")
    assert "not a public address" in row["last_error"]


# --- the address checked is the address connected to -------------------------------------

# Plays a public address in these tests: a loopback address of its own, which the tests' rule
# lets through (nothing on this machine may reach the internet). The code path is the real one.
STAND_IN = ipaddress.ip_address("127.0.0.2")


def public_or_stand_in(ip: webhooks.IPAddress) -> bool:
    return ip == STAND_IN or webhooks.is_public(ip)


class Rebinding:
    """A resolver for a name whose DNS answers `first` to the first lookup and `then` to every
    later one — a short TTL flipping a public answer to 127.0.0.1 (DNS rebinding). Counts
    lookups."""

    def __init__(self, first: str, then: str = "127.0.0.1") -> None:
        self.first, self.then = first, then
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return [self.first if len(self.asked) == 1 else self.then]


@pytest.fixture
def stand_in_and_trap() -> Iterator[tuple[Endpoint, Endpoint, int]]:
    """A receiver on the stand-in address, and a trap on 127.0.0.1 at the same port: whatever
    reaches the trap went to 127.0.0.1."""
    honest, trap = Endpoint(), Endpoint()
    with serve(honest, host=str(STAND_IN)) as url:
        port = httpx.URL(url).port
        assert port is not None
        with serve(trap, host="127.0.0.1", port=port):
            yield honest, trap, port


async def test_a_rebinding_name_is_connected_to_the_address_checked_never_to_127_0_0_1(
    live_db: asyncpg.Connection,
    county_key: str,
    client: httpx.AsyncClient,
    stand_in_and_trap: tuple[Endpoint, Endpoint, int],
) -> None:
    honest, trap, port = stand_in_and_trap
    url = f"http://rebind.example:{port}/hooks/sms"
    assert (await set_webhook(client, county_key, url)).status_code == 204
    db = SingleConnectionDatabase(live_db)
    resolver = Rebinding(first=str(STAND_IN))
    await store(live_db, Inbound(PHONE, await address(live_db), "收到", reference="mo-7"))

    async with webhooks.client(resolver=resolver, allowed=public_or_stand_in) as http:
        assert await webhooks.push_due(db, http) == 1
    # One lookup served both the check and the connection: the push reached the address that
    # was checked, under its own name.
    assert resolver.asked == ["rebind.example"]
    [push] = honest.pushed
    assert push.headers["host"] == f"rebind.example:{port}"
    assert push.path == "/hooks/sms"
    check_signature(push)

    # A new connection looks the name up again; it now answers 127.0.0.1, which is refused.
    await store(live_db, Inbound(PHONE, await address(live_db), "好的", reference="mo-8"))
    async with webhooks.client(resolver=resolver, allowed=public_or_stand_in) as http:
        assert await webhooks.push_due(db, http) == 1
    assert resolver.asked == ["rebind.example"] * 2
    first, second = await deliveries(live_db)
    assert first["delivered"]
    assert not second["delivered"]
    assert second["last_error"].startswith("ConnectError: rebind.example is 127.0.0.1, not a")
    assert len(honest.pushed) == 1
    assert trap.pushed == []


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for the name rebind.example only (no address in it)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=rebind.example"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-keyout", key, "-out", cert, "-addext", "subjectAltName=DNS:rebind.example"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize(
    ("name", "delivered"), [("rebind.example", True), ("other.example", False)]
)
async def test_tls_names_and_verifies_the_host_while_connecting_to_the_checked_address(
    live_db: asyncpg.Connection,
    county_key: str,
    client: httpx.AsyncClient,
    certificate: tuple[str, str],
    name: str,
    delivered: bool,
) -> None:
    cert, key = certificate
    receiver = Endpoint()
    with serve(receiver, host=str(STAND_IN), certfile=cert, keyfile=key) as url:
        port = httpx.URL(url).port
        hook = f"https://{name}:{port}/hooks/sms"
        assert (await set_webhook(client, county_key, hook)).status_code == 204
        await store(live_db, Inbound(PHONE, await address(live_db), "收到", reference="mo-9"))
        trusted = ssl.create_default_context(cafile=cert)
        resolver = Rebinding(first=str(STAND_IN))
        async with webhooks.client(
            resolver=resolver, allowed=public_or_stand_in, verify=trusted
        ) as http:
            assert await webhooks.push_due(SingleConnectionDatabase(live_db), http) == 1
    [row] = await deliveries(live_db)
    assert resolver.asked == [name]
    assert row["delivered"] is delivered
    if delivered:
        # The certificate names no address: it matched because TLS named the host.
        [push] = receiver.pushed
        assert push.headers["host"] == f"{name}:{port}"
    else:
        # A certificate for another name is refused, although the address is the one checked.
        assert "CERTIFICATE_VERIFY_FAILED" in row["last_error"]
        assert receiver.pushed == []


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", False),
        ("2400:3200::1", False),
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("172.16.5.4", True),
        ("100.64.0.1", True),  # carrier-grade NAT
        ("fe80::1%eth0", True),
        ("fd00::1", True),
        ("fec0::1", True),
        ("ff0e::1", True),  # global multicast: no TCP there
        ("224.0.0.1", True),
        ("::", True),
        ("::1", True),
        ("5f00::1", True),
        # An IPv6 address that carries an IPv4 one is judged by it too.
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", True),
        ("::ffff:8.8.8.8", False),
        ("::127.0.0.1", True),
        ("::ffff:0:7f00:1", True),
        ("64:ff9b::7f00:1", True),
        ("64:ff9b::c0a8:101", True),  # 192.168.1.1
        ("64:ff9b::808:808", False),  # how an IPv6-only network reaches 8.8.8.8
        ("64:ff9b:1::808:808", True),  # a local translator: its network, not the internet
        ("2002:7f00:1::", True),
        ("2002:a9fe:a9fe::1", True),  # 169.254.169.254
        ("2002:808:808::1", False),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", True),  # Teredo: client 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", True),  # Teredo: no longer a way anywhere
    ],
)
def test_is_public(address: str, refused: bool) -> None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    assert webhooks.is_public(ip) is not refused


# --- signing -----------------------------------------------------------------------------


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    # Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key
    assert webhooks.sign("key", 1700000000, b'{"a":1}') == (
        "sha256=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
    )


@pytest.mark.parametrize(
    ("timestamp", "body", "now", "ok"),
    [
        ("1700000000", b"{}", 1700000000 + 300, True),
        ("1700000000", b"{}", 1700000000 - 300, True),
        ("1700000000", b"{}", 1700000000 + 301, False),  # replayed later
        ("1700000000", b"{}", 1700000000 - 301, False),
        ("1700000000", b"{ }", 1700000000, False),  # body changed
        ("1700000001", b"{}", 1700000000, False),  # timestamp changed
        ("", b"{}", 1700000000, False),
    ],
)
def test_verify(timestamp: str, body: bytes, now: float, ok: bool) -> None:
    signature = webhooks.sign(HOOK_SECRET, 1700000000, b"{}")
    assert webhooks.verify(HOOK_SECRET, timestamp, body, signature, now=now) is ok


@pytest.mark.parametrize("attempts", range(1, webhooks.MAX_ATTEMPTS + 4))
def test_retry_delay_doubles_from_10_seconds_up_to_an_hour_jittered(attempts: int) -> None:
    ceiling = min(3600.0, 10.0 * 2 ** (attempts - 1))
    assert ceiling / 2 <= webhooks.retry_delay(attempts) <= ceiling
