"""Request-rate limits per API key and per tenant, shared through a real Redis, and their fallback
to per-process buckets when that Redis is stopped. Every limit here is tight on purpose."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from arq.connections import ArqRedis
from litestar import Litestar
from redis.asyncio import Redis

from hub import queue
from hub.app import create_app
from hub.db import SingleConnectionDatabase
from hub.embedded import start_valkey
from hub.limits import service as limits
from hub.limits.schemas import RateLimitsSetting
from hub.limits.service import COSTS, body_length, cost_of
from hub.settings import Settings, load_settings
from tenants import service
from tenants.scopes import Role
from tests.factories import asgi_scope, bearer, grant, make_key, make_small_tree, make_tenant
from tests.integration.users.conftest import SAME_ORIGIN, make_user, signed_in

TIGHT = {
    "HUB_LIMITS__KEY_RATE": "0.01",  # a unit every 100 s: nothing refills during a test
    "HUB_LIMITS__KEY_BURST": "4",
    "HUB_LIMITS__TENANT_RATE": "0.01",
    "HUB_LIMITS__TENANT_BURST": "6",
}


def tight_settings(settings: Settings, **extra: str) -> Settings:
    env = {
        "HUB_DB__DSN": settings.db.dsn or "",
        "HUB_REDIS__DSN": settings.redis.dsn or "",
        "HUB_MESSAGES__QUIET_HOURS": "false",
        **TIGHT,
        **extra,
    }
    return load_settings(env)


def app_on(settings: Settings, conn: asyncpg.Connection, redis: Redis) -> Litestar:
    return create_app(settings, db=SingleConnectionDatabase(conn), redis=redis)  # type: ignore[arg-type]


def client_of(app: Litestar) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://hub.test")


@pytest.fixture
async def tight(
    settings: Settings, conn: asyncpg.Connection, redis: ArqRedis
) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(app_on(tight_settings(settings), conn, redis)) as client:
        yield client


@pytest.fixture
async def tree(conn: asyncpg.Connection) -> None:
    await make_small_tree(conn)
    await grant(conn, {"000000": 1000, "510000": 500, "510100": 300, "510104": 100})


async def statuses(client: httpx.AsyncClient, key: str, n: int, path: str = "/v1/me") -> list[int]:
    return [(await client.get(path, headers=bearer(key))).status_code for _ in range(n)]


async def test_a_key_over_its_burst_gets_429_with_retry_after_in_the_json_shape(
    conn: asyncpg.Connection, tight: httpx.AsyncClient, tree: None
) -> None:
    key = await make_key(conn, "510104")
    first = await tight.get("/v1/me", headers=bearer(key))
    assert first.status_code == 200
    assert first.headers["RateLimit-Limit"] == "4"
    assert first.headers["RateLimit-Remaining"] == "3"
    assert await statuses(tight, key, 3) == [200, 200, 200]

    refused = await tight.get("/v1/me", headers=bearer(key))
    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == "rate_limited"
    assert body["limit"] == "key"
    assert "this API key" in body["detail"]
    # One unit at 0.01 a second: 100 s, by Redis's own clock.
    assert 99 <= int(refused.headers["Retry-After"]) <= 100
    assert body["retry_after"] == int(refused.headers["Retry-After"])
    assert refused.headers["RateLimit-Remaining"] == "0"


async def test_the_keys_of_one_tenant_share_its_bucket(
    conn: asyncpg.Connection, tight: httpx.AsyncClient, tree: None
) -> None:
    first, second = await make_key(conn, "510104"), await make_key(conn, "510104")
    assert await statuses(tight, first, 4) == [200] * 4
    # The second key has its own 4, but the tenant has only 2 of its 6 left.
    assert await statuses(tight, second, 3) == [200, 200, 429]
    refused = await tight.get("/v1/me", headers=bearer(second))
    assert refused.json()["limit"] == "tenant"


async def test_a_flooding_county_does_not_block_another(
    conn: asyncpg.Connection, tight: httpx.AsyncClient, tree: None
) -> None:
    hostile, other = await make_key(conn, "510104"), await make_key(conn, "510105")
    assert (await statuses(tight, hostile, 10))[-1] == 429
    # Its province, its sibling and the province's own key are untouched.
    assert await statuses(tight, other, 4) == [200] * 4
    province = await make_key(conn, "510000")
    assert await statuses(tight, province, 4) == [200] * 4


async def test_a_countys_units_share_its_division_bucket(
    conn: asyncpg.Connection, settings: Settings, redis: ArqRedis, tree: None
) -> None:
    """A county may create up to 2,000 units (and they units of their own), each with a tenant
    bucket of its own: without a bucket per division it multiplied its limits by creating
    units. Its units, their units included, share one (here 6 units, the county's own tenant
    burst). The county itself is not charged to it, so its units cannot shut it out; other
    divisions have their own."""
    await make_tenant(conn, "510104002", "督院街街道", parent="510104")
    await make_tenant(conn, "510104002001", "督院街社区", parent="510104002")
    first, second, third = [
        await make_key(conn, c) for c in ("510104001", "510104002", "510104002001")
    ]
    county, neighbour, city = [await make_key(conn, c) for c in ("510104", "510105", "510100")]
    division = {"HUB_LIMITS__DIVISION_RATE": "0.01", "HUB_LIMITS__DIVISION_BURST": "1"}
    app = app_on(tight_settings(settings, **division), conn, redis)
    async with client_of(app) as client:
        assert await statuses(client, first, 5) == [200, 200, 200, 200, 429]  # its key's 4
        assert await statuses(client, second, 1) == [200]
        assert await statuses(client, third, 2) == [200, 429]  # the division's last one
        for key in (second, third):
            refused = await client.get("/v1/me", headers=bearer(key))
            assert refused.status_code == 429
            assert refused.json()["limit"] == "division"
            assert "Retry-After" in refused.headers
        # The county, its neighbour county and the prefecture above it: their own buckets.
        assert await statuses(client, county, 4) == [200, 200, 200, 200]
        assert await statuses(client, neighbour, 1) == [200]
        assert await statuses(client, city, 1) == [200]


async def test_an_override_lifting_a_county_lifts_what_its_units_share(
    conn: asyncpg.Connection, settings: Settings, redis: ArqRedis, tree: None
) -> None:
    """The operator lifts a county (PUT /v1/tenants/510104/rate-limits): its units, sharing
    its division's bucket, are not held at the hub's default for a division."""
    await make_tenant(conn, "510104002", "督院街街道", parent="510104")
    first, second = await make_key(conn, "510104001"), await make_key(conn, "510104002")
    county = await service.get_by_code(conn, "510104")
    assert county is not None
    lifted = RateLimitsSetting(tenant_burst=20)
    await limits.set_limits(conn, county, lifted, "test", settings.limits)
    # A division's bucket is never below its own tenant's: 20 here, not the default's 1.
    division = {"HUB_LIMITS__DIVISION_RATE": "0.01", "HUB_LIMITS__DIVISION_BURST": "1"}
    async with client_of(app_on(tight_settings(settings, **division), conn, redis)) as client:
        assert await statuses(client, first, 5) == [200, 200, 200, 200, 429]
        assert await statuses(client, second, 5) == [200, 200, 200, 200, 429]  # its key's 4
        assert (await client.get("/v1/me", headers=bearer(second))).json()["limit"] == "key"
        # The limits' views say so: a unit's names its county's, the county's its own.
        reader = await make_key(conn, "510104")
        for code in ("510104001", "510104"):
            path = f"/v1/tenants/{code}/rate-limits"
            view = (await client.get(path, headers=bearer(reader))).json()
            assert (view["division"], view["division_burst"]) == ("510104", 20), view
        view = (await client.get("/v1/tenants/510105/rate-limits", headers=bearer(reader))).json()
        assert view["error"] == "not_found"  # another county's: not the county's to read


async def test_a_send_costs_more_than_a_read(
    conn: asyncpg.Connection, settings: Settings, redis: ArqRedis, tree: None
) -> None:
    app = app_on(tight_settings(settings, HUB_LIMITS__KEY_BURST="8"), conn, redis)
    key = await make_key(conn, "510104")
    send = {"to": ["13800138000"], "body": "今晚七点开会", "dedup": "off"}
    async with client_of(app) as client:
        sent = await client.post("/v1/messages", json=send, headers=bearer(key))
        assert sent.status_code == 202, sent.text
        assert sent.headers["RateLimit-Remaining"] == "1"  # the tenant's 6 less 5
        again = await client.post("/v1/messages", json=send, headers=bearer(key))
        assert again.status_code == 429
        assert await statuses(client, key, 2) == [200, 429]


def test_costs_by_route_and_body() -> None:
    assert cost_of("GET", "/v1/me", 0) == 1
    assert cost_of("PUT", "/v1/tenants/{code}/quota/{period}", 120) == 2
    assert cost_of("POST", "/v1/messages", 100) == 5
    assert cost_of("POST", "/v1/messages", 14_000_000) == 5 + 213
    assert cost_of("POST", "/v1/contacts/import", 0) == 20
    assert body_length({"content-length": "14000000"}, 40 << 20) == 14_000_000
    assert body_length({"content-length": "garbage"}, 40 << 20) == 0
    assert body_length({}, 40 << 20) == 0  # no body at all
    assert body_length({"transfer-encoding": "chunked"}, 40 << 20) == 40 << 20  # its most


async def test_a_body_of_unannounced_length_is_charged_as_the_largest_its_route_takes(
    conn: asyncpg.Connection, settings: Settings, redis: ArqRedis, tree: None
) -> None:
    """A chunked body's size is not known before it is read: charged by Content-Length, a 20 MB
    roster sent chunked cost 20 units instead of 340 (one person held 24 console previews at
    once). It costs what the route's largest body would."""
    roomy = {f"HUB_LIMITS__{k}_BURST": "1000" for k in ("KEY", "TENANT")}
    key = await make_key(conn, "510104")
    roster = "姓名,手机\n张三,13800138000\n".encode()

    async def chunks() -> AsyncIterator[bytes]:
        yield roster

    headers = {**bearer(key), "Content-Type": "text/csv"}
    async with client_of(app_on(tight_settings(settings, **roomy), conn, redis)) as client:
        announced = await client.post("/v1/contacts/import", content=roster, headers=headers)
        assert announced.status_code == 200, announced.text
        assert announced.headers["RateLimit-Remaining"] == str(1000 - 20)
        chunked = await client.post("/v1/contacts/import", content=chunks(), headers=headers)
        assert chunked.status_code == 200, chunked.text
        assert chunked.headers["RateLimit-Remaining"] == str(1000 - 20 - (20 + 320))


async def test_a_request_costing_more_than_the_bucket_still_goes_once_it_is_full(
    conn: asyncpg.Connection, tight: httpx.AsyncClient, tree: None
) -> None:
    key = await make_key(conn, "510104")
    send = {
        "to": ["13800138000"],
        "body": "今晚七点开会",
        "dedup": "off",
        "vars": {f"v{i}": "字" * 500 for i in range(50)},  # 75,000 bytes, within the caps
    }
    # 5 + 1 per 64 KiB = 6 units against a 4-unit bucket: charged as a full bucket.
    sent = await tight.post("/v1/messages", json=send, headers=bearer(key))
    assert sent.status_code == 202, sent.text
    assert (await tight.get("/v1/me", headers=bearer(key))).status_code == 429


async def test_every_api_process_shares_the_buckets(
    conn: asyncpg.Connection, settings: Settings, redis: ArqRedis, tree: None
) -> None:
    key = await make_key(conn, "510104")
    limited = tight_settings(settings)
    # Two apps, two limiters, as two `hub serve` processes would have; one Redis.
    async with client_of(app_on(limited, conn, redis)) as one:
        async with client_of(app_on(limited, conn, redis)) as two:
            assert await statuses(one, key, 2) == [200, 200]
            assert await statuses(two, key, 2) == [200, 200]
            assert await statuses(one, key, 1) == [429]
            assert await statuses(two, key, 1) == [429]


async def test_health_metrics_and_gateway_callbacks_are_not_limited(
    conn: asyncpg.Connection, tight: httpx.AsyncClient, tree: None
) -> None:
    key = await make_key(conn, "510104")
    for path in ("/healthz", "/metrics"):
        assert {(await tight.get(path, headers=bearer(key))).status_code for _ in range(8)} == {200}
    # A gateway's callback with a wrong secret: 401 every time, never 429.
    codes = {(await tight.post("/v1/gateways/outbox/receipts")).status_code for _ in range(8)}
    assert 429 not in codes
    # The key itself was not charged by any of it.
    assert (await tight.get("/v1/me", headers=bearer(key))).headers["RateLimit-Remaining"] == "3"


async def test_a_persons_heavy_console_writes_are_charged_before_their_body_is_read(
    conn: asyncpg.Connection, settings: Settings, redis: ArqRedis, tree: None
) -> None:
    """A roster preview in the console costs what the API's import does, from the person's own
    bucket and the tenant's (50 parallel 20 MB previews by one person once took a process to
    3.6 GB): past them, 429 in Chinese with Retry-After, before a byte of the body is read, and
    nothing held. A sibling county's person is not held back; the console's pages and its other
    forms (securing an account must not wait on the unit's keys) are not charged."""
    await make_user(conn, "510104", "sender", {Role.SEND})
    await make_user(conn, "510104", "second", {Role.SEND}, phone="13800138001")
    await make_user(conn, "510105", "sibling", {Role.SEND}, phone="13800138002")
    upload = {"file": ("roster.csv", "姓名,手机\n张三,13800138000\n".encode(), "text/csv")}
    app = app_on(tight_settings(settings), conn, redis)
    async with client_of(app) as console:

        async def preview(login: str, phone: str) -> httpx.Response:
            console.cookies.clear()
            await signed_in(console, conn, login, phone)
            return await console.post(
                "/dashboard/contacts/import", files=upload, headers=SAME_ORIGIN
            )

        assert (await preview("sender", "+8613800138000")).status_code == 200  # its 4 units
        again = await console.post("/dashboard/contacts/import", files=upload, headers=SAME_ORIGIN)
        assert again.status_code == 429
        assert "操作过于频繁：您的账号" in again.text
        assert int(again.headers["Retry-After"]) > 0
        # A body announced as 20 MiB that never comes: refused all the same, none of it read.
        cookie = "; ".join(f"{k}={v}" for k, v in console.cookies.items())
        announced = [
            (b"cookie", cookie.encode()),
            (b"origin", SAME_ORIGIN["Origin"].encode()),
            (b"content-type", b"multipart/form-data; boundary=x"),
            (b"content-length", str(20 << 20).encode()),
        ]
        status = await _status_by_asgi(app, "/dashboard/contacts/import", announced)
        assert status == 429
        assert (await console.get("/dashboard/contacts/import")).status_code == 200  # a page
        refused = await preview("second", "+8613800138001")  # the tenant's 6 units: 2 left
        assert refused.status_code == 429
        assert "操作过于频繁：本单位" in refused.text
        assert await conn.fetchval("SELECT count(*) FROM roster_uploads") == 1
        ended = await console.post("/dashboard/logout/everywhere", headers=SAME_ORIGIN)
        assert ended.status_code == 303  # not charged
        assert (await preview("sibling", "+8613800138002")).status_code == 200
        key = await make_key(conn, "510104")  # the refusals took nothing: the tenant has 2 left
        me = await console.get("/v1/me", headers=bearer(key))
        assert me.headers["RateLimit-Remaining"] == "1"


async def _status_by_asgi(app: Litestar, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    """The status `app` answers a POST whose body never comes (its receive waits for ever)."""
    started: list[int] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.append(message["status"])

    scope = {**asgi_scope("POST", path, ""), "headers": [(b"host", b"hub.test"), *headers]}
    await asyncio.wait_for(app(scope, receive, send), 30)  # type: ignore[arg-type]
    return started[0]


# --- Redis gone -------------------------------------------------------------------------------


@pytest.fixture
async def stopped_redis() -> AsyncIterator[Redis]:
    """A client of a real Valkey that answered once and then was stopped."""
    with tempfile.TemporaryDirectory(prefix="hub-test-gone-") as tmp:
        server = start_valkey(Path(tmp))
        client = await queue.connect(f"redis://127.0.0.1:{server.port}/0")
        try:
            assert await client.ping()
            server.stop()
            yield client
        finally:
            await client.aclose()


async def test_without_redis_each_process_limits_on_its_own(
    conn: asyncpg.Connection, settings: Settings, stopped_redis: Redis, tree: None
) -> None:
    key = await make_key(conn, "510104")
    app = app_on(tight_settings(settings), conn, stopped_redis)
    async with client_of(app) as client:
        # Not "refuse everything": the bucket's worth goes through; not "unlimited": then 429.
        assert await statuses(client, key, 5) == [200, 200, 200, 200, 429]
        refused = await client.get("/v1/me", headers=bearer(key))
        assert refused.json()["error"] == "rate_limited"
        assert "Retry-After" in refused.headers


async def test_one_late_answer_from_redis_does_not_hand_out_the_local_burst(
    conn: asyncpg.Connection, settings: Settings, tree: None
) -> None:
    """A loop stalled past the deadline (or a Redis slow for a moment) times out one call.
    Falling back on it gave each process's full local bucket on top of the shared one: a
    flood that stalls the loop bought itself a burst. Here Redis holds its writes for 1.2 s
    (CLIENT PAUSE WRITE): the call times out once, the limiter asks again, and the shared
    bucket still decides."""
    with tempfile.TemporaryDirectory(prefix="hub-test-paused-") as tmp:
        server = start_valkey(Path(tmp))
        redis = await queue.connect(f"redis://127.0.0.1:{server.port}/0")
        try:
            key = await make_key(conn, "510104")
            app = app_on(tight_settings(settings), conn, redis)
            async with client_of(app) as client:
                assert await statuses(client, key, 1) == [200]  # 3 of the key's 4 left
                await redis.execute_command("CLIENT", "PAUSE", "1200", "WRITE")  # type: ignore[no-untyped-call]
                # Falling back, the process's own bucket of 4 would let all five through.
                seen = await statuses(client, key, 5)
            assert seen.count(200) <= 3, seen
            assert seen[-1] == 429, seen
        finally:
            await redis.aclose()
            server.stop()


async def test_without_redis_the_processes_split_the_rate(
    conn: asyncpg.Connection, settings: Settings, tree: None
) -> None:
    unreachable = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    key = await make_key(conn, "510104")
    # Two workers per host: each holds half of the 4-unit burst while Redis is away.
    app = app_on(tight_settings(settings, HUB_HTTP__WORKERS="2"), conn, unreachable)
    try:
        async with client_of(app) as client:
            assert await statuses(client, key, 3) == [200, 200, 429]
    finally:
        await unreachable.aclose()


# --- the operator's overrides ----------------------------------------------------------------


async def test_the_operator_raises_a_tenants_limits_and_only_the_operator_may(
    conn: asyncpg.Connection, tight: httpx.AsyncClient, tree: None
) -> None:
    operator, county = await make_key(conn, "000000"), await make_key(conn, "510104")
    sibling, province = await make_key(conn, "510105"), await make_key(conn, "510000")
    path = "/v1/tenants/510104/rate-limits"
    lift = {"key_burst": 10, "tenant_burst": 10}
    # Nobody below the operator lifts their own limits or a child's.
    for hostile, code in ((sibling, "510105"), (province, "510104"), (province, "510000")):
        refused = await tight.put(
            f"/v1/tenants/{code}/rate-limits", json=lift, headers=bearer(hostile)
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "forbidden"

    resp = await tight.put(path, json=lift, headers=bearer(operator))
    assert resp.status_code == 200, resp.text
    assert resp.json()["overridden"] == ["key_burst", "tenant_burst"]
    assert resp.json()["key_rate"] == 0.01  # the default still holds where not overridden
    # The county sees its own limits (a read: 1 unit), then has 9 more.
    seen = await tight.get(path, headers=bearer(county))
    assert seen.json()["key_burst"] == 10
    assert seen.headers["RateLimit-Remaining"] == "9"
    assert await statuses(tight, county, 9) == [200] * 9
    assert await statuses(tight, county, 1) == [429]

    assert (await tight.delete(path, headers=bearer(operator))).status_code == 204
    # (the operator is limited too: a fresh key of its, as its first has spent 4 of 4)
    view = (await tight.get(path, headers=bearer(await make_key(conn, "000000")))).json()
    assert (view["key_burst"], view["overridden"]) == (4, [])


async def test_a_county_cannot_read_another_countys_limits(
    conn: asyncpg.Connection, tight: httpx.AsyncClient, tree: None
) -> None:
    county = await make_key(conn, "510104")
    resp = await tight.get("/v1/tenants/510105/rate-limits", headers=bearer(county))
    assert resp.status_code == 404
    assert resp.json() == {"error": "not_found", "detail": "tenant not found"}


@pytest.mark.parametrize(
    "body",
    [{"key_rate": 0}, {"key_burst": 0.5}, {"key_rate": 1e300}, {"other": 1}, {"key_rate": "x"}],
)
async def test_nonsense_overrides_are_422(
    conn: asyncpg.Connection, tight: httpx.AsyncClient, tree: None, body: dict[str, object]
) -> None:
    operator = await make_key(conn, "000000")
    resp = await tight.put("/v1/tenants/510104/rate-limits", json=body, headers=bearer(operator))
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"] == "invalid"


def test_every_costed_route_exists(app: Litestar) -> None:
    # The limiter sees Litestar's route templates (`path_template`: OpenAPI's spelling).
    routes = {(m, r.path_format) for r in app.routes for m in getattr(r, "methods", ())}
    for method, route in COSTS:
        assert (method, route) in routes, (method, route)


async def test_malformed_and_nul_laden_overrides_are_4xx(
    conn: asyncpg.Connection, tight: httpx.AsyncClient, tree: None
) -> None:
    operator = await make_key(conn, "000000")
    headers = {**bearer(operator), "Content-Type": "application/json"}
    path = "/v1/tenants/510104/rate-limits"
    garbled = await tight.put(path, content=b'{"key_rate": ', headers=headers)
    assert garbled.status_code == 400
    assert garbled.json()["error"] == "malformed"
    nul = await tight.put(path, content=b'{"key_rate": "1\\u0000"}', headers=headers)
    assert nul.status_code == 422
    reader = await make_key(conn, "000000")  # the first key has spent its 4 units
    odd = await tight.get("/v1/tenants/51%0001/rate-limits", headers=bearer(reader))
    assert odd.status_code == 422
    assert odd.json()["error"] == "invalid"
