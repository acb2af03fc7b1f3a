"""Every bad input is a 4xx: control characters anywhere a request carries text (JSON fields at
any depth, object keys, forms, query and path parameters, headers), JSON nested 100,000 deep and
integers beyond what PostgreSQL's bigint holds. Each was a 500 somewhere before (asyncpg cannot
store NUL nor bind an int8 past 2^63; msgspec raises RecursionError)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis
from litestar import Litestar

from hub import inputs
from hub.app import create_app
from hub.db import SingleConnectionDatabase
from hub.settings import Settings
from tests.factories import asgi_scope, bearer, grant, make_key, make_small_tree

BODY = {"to": ["13800138000"], "body": "通知"}
SEND = ("POST", "/v1/messages")


@pytest.fixture
async def county(conn: asyncpg.Connection) -> str:
    await make_small_tree(conn)
    await grant(conn, {"000000": 1000, "510000": 500, "510100": 300, "510104": 100})
    return await make_key(conn, "510104")


@pytest.fixture
async def operator(conn: asyncpg.Connection, county: str) -> str:
    return await make_key(conn, "000000")


def _refused(resp: httpx.Response, key: str, source: str) -> None:
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "invalid"
    assert body["fields"][0]["key"] == key
    assert body["fields"][0]["source"] == source
    assert "control character" in body["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body", "key"),
    [
        (*SEND, {**BODY, "body": "会议\x00通知"}, "body"),
        # The whole send, not just that phone: the published schema says no string of a
        # request holds a control character, `to`'s items included (hub.openapi).
        (*SEND, {**BODY, "to": ["13800138000", "1380013\x008001"]}, "to[1]"),
        (*SEND, {**BODY, "to_tags": ["书记\x1b"]}, "to_tags[0]"),
        (*SEND, {**BODY, "vars": {"name": "张\x00三"}}, "vars.name"),
        (*SEND, {**BODY, "vars": {"na\x00me": "张三"}}, "vars (an object key)"),
        (*SEND, {**BODY, "body": "DEL\x7f"}, "body"),
        (*SEND, {**BODY, "body": "C1 \x85"}, "body"),
        (*SEND, {**BODY, "body": "backspace\b"}, "body"),
        ("POST", "/v1/templates", {"name": "会议\x00", "body": "{name}同志"}, "name"),
        ("POST", "/v1/tenants/510104/keys", {"scopes": ["messages:read"], "name": "a\x00"}, "name"),
        ("PATCH", "/v1/tenants/510104", {"signature": "锦江\x00区委"}, "signature"),
        ("POST", "/v1/tenants/510104/children", {"code": "510104009", "name": "x\x01"}, "name"),
        (
            "PUT",
            "/v1/tenants/510104/webhook",
            {"url": "https://example.org/hook", "secret": "0123456789abcdef\x00"},
            "secret",
        ),
        (
            "POST",
            "/v1/campaigns",
            {"kind": "anniversary", "field": "joined_on", "template": 1, "to_tags": ["\x00"]},
            "to_tags[0]",
        ),
        ("POST", "/v1/templates/1/review", {"decision": "reject", "note": "no\x00"}, "note"),
        (
            "PUT",
            "/v1/tenants/510104/quota/default",
            {"monthly_limit": 1, "policy": "\x00"},
            "policy",
        ),
    ],
)
async def test_control_characters_in_any_json_field_are_422_naming_it(
    client: httpx.AsyncClient, county: str, method: str, path: str, body: Any, key: str
) -> None:
    resp = await client.request(method, path, json=body, headers=bearer(county))
    _refused(resp, key, "body")


async def test_nested_fields_are_named_by_their_path(
    client: httpx.AsyncClient, operator: str
) -> None:
    card = {
        "carrier": "中国移动",
        "valid_from": "2027-03-01",
        "mode": "graduated",
        "bands": [{"from": 0, "to": None, "price_micros": 1, "x\x00": 1}],
    }
    resp = await client.post("/v1/billing/rate-cards", json=card, headers=bearer(operator))
    _refused(resp, "bands[0] (an object key)", "body")


async def test_line_breaks_and_tabs_stay_where_a_field_allows_them(
    client: httpx.AsyncClient, county: str
) -> None:
    body = {**BODY, "body": "第一行\n第二行\r\n\t第三行"}
    resp = await client.post("/v1/messages", json=body, headers=bearer(county))
    assert resp.status_code == 202, resp.text
    # A lone backslash and text that merely looks like an escape is text, not a control.
    resp = await client.post(
        "/v1/messages",
        content=b'{"to": ["13900139000"], "body": "C:\\\\u0000 \\\\b"}',
        headers={**bearer(county), "Content-Type": "application/json"},
    )
    assert resp.status_code == 202, resp.text


@pytest.mark.parametrize(
    ("method", "url", "key", "source"),
    [
        ("GET", "/v1/contacts?q=%00", "q", "query"),
        ("GET", "/v1/tenants/510104/children?after=%00", "after", "query"),
        ("GET", "/v1/inbound?x%01=1", "'x\\x01' (a parameter name)", "query"),
        ("GET", "/v1/tenants/510104%00", "path", "path"),
        ("DELETE", "/v1/keys/%00abc", "path", "path"),
        ("GET", "/v1/tenants/510104/quota/2027-03%0b", "path", "path"),
    ],
)
async def test_control_characters_in_query_and_path_are_422(
    client: httpx.AsyncClient, county: str, method: str, url: str, key: str, source: str
) -> None:
    resp = await client.request(method, url, headers=bearer(county))
    _refused(resp, key, source)


async def test_control_characters_in_headers_are_422(
    client: httpx.AsyncClient, county: str
) -> None:
    for name, value in [("Idempotency-Key", "retry\x00-1"), ("X-Anything", "a\x7fb")]:
        resp = await client.post("/v1/messages", json=BODY, headers={**bearer(county), name: value})
        _refused(resp, name.lower(), "header")
    # Even before the key is looked up.
    resp = await client.get("/v1/me", headers={"Authorization": "Bearer hub_\x00"})
    _refused(resp, "authorization", "header")


async def test_dashboard_forms_refuse_control_characters(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/dashboard/login",
        data={"key": "hub_\x00"},
        headers={"Origin": "http://hub.test"},
    )
    assert resp.status_code == 422
    assert "control character" in resp.text

    # A long parameter name is named by its start: an error never echoes a whole body.
    long_name = "k\x03" + "x" * 10_000
    resp = await client.post(
        "/dashboard/login",
        content=f"{long_name}=1".encode(),
        headers={"Origin": "http://hub.test", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 422
    assert "k\\x03" + "x" * 38 + "…" in resp.text
    assert "x" * 100 not in resp.text


SMALL_BODY_LIMIT = 16_384  # HUB_HTTP__MAX_BODY_BYTES, the limit of every route but a few


@pytest.mark.parametrize("depth", [100_000, 5_000, 2_000])
@pytest.mark.parametrize(
    "route", [SEND, ("POST", "/v1/tenants/510104/keys"), ("PUT", "/v1/tenants/510104/webhook")]
)
async def test_deep_nesting_is_400(
    client: httpx.AsyncClient, county: str, route: tuple[str, str], depth: int
) -> None:
    """Too deep for msgspec: 400. A small route refuses a body over its limit first (413)."""
    for opener, closer in [(b"[", b"]"), (b'{"a":', b"}")]:
        body = opener * depth + b"1" + closer * depth
        resp = await client.request(
            route[0],
            route[1],
            content=body,
            headers={**bearer(county), "Content-Type": "application/json"},
        )
        if route != SEND and len(body) > SMALL_BODY_LIMIT:
            assert resp.status_code == 413, resp.text
            assert resp.json()["error"] == "too_large"
            continue
        assert resp.status_code == 400, resp.text
        assert resp.json() == {
            "error": "malformed",
            "detail": "request body is not valid JSON: nested too deeply",
        }


@pytest.mark.parametrize(
    "url",
    [
        "/v1/messages/99999999999999999999",
        "/v1/messages/-1",
        "/v1/messages/1/recipients?after=18446744073709551616",
        "/v1/messages/1/recipients?limit=-1",
        "/v1/messages/1/recipients?after=-1",
        "/v1/inbound?after=18446744073709551616",
        "/v1/contacts?after=18446744073709551616",
        "/v1/contacts?limit=100000000000000000000",
        "/v1/templates/99999999999999999999",
        "/v1/tenants/510104/quota/2027-03/entries?after=18446744073709551616",
        "/v1/tenants/510104/quota/2027-03/entries?limit=-1",
        "/v1/tenants/510104/tree?depth=18446744073709551616",
        "/v1/tenants/510104/children?limit=18446744073709551616",
    ],
)
async def test_out_of_range_integers_are_422(
    client: httpx.AsyncClient, county: str, url: str
) -> None:
    resp = await client.get(url, headers=bearer(county))
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"] == "invalid"


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("DELETE", "/v1/messages/99999999999999999999"),
        ("DELETE", "/v1/contacts/99999999999999999999"),
        ("DELETE", "/v1/campaigns/99999999999999999999"),
        ("POST", "/v1/templates/99999999999999999999/review"),
    ],
)
async def test_out_of_range_ids_in_writes_are_422(
    client: httpx.AsyncClient, county: str, method: str, url: str
) -> None:
    body = {"decision": "approve"} if url.endswith("review") else None
    resp = await client.request(method, url, json=body, headers=bearer(county))
    assert resp.status_code == 422, resp.text


async def test_out_of_range_integers_in_bodies_are_422(
    client: httpx.AsyncClient, county: str
) -> None:
    bodies: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/messages", {**BODY, "template": 2**64, "body": None}),
        ("PUT", "/v1/tenants/510104001/quota/default", {"monthly_limit": 2**64}),
    ]
    for method, path, body in bodies:
        resp = await client.request(method, path, json=body, headers=bearer(county))
        assert resp.status_code == 422, resp.text


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({**BODY, "vars": {f"v{i}": "x" for i in range(2_000)}}, "vars"),
        ({**BODY, "vars": {"name": "张" * 501}}, "vars[...]"),  # msgspec names no key here
        ({**BODY, "vars": {"n" * 41: "张三"}}, "vars"),
        ({**BODY, "to_tags": ["书" * 51]}, "to_tags[0]"),
        ({**BODY, "to_tags": ["书记\n"]}, "to_tags[0]"),
        ({**BODY, "to_tags": [str(i) for i in range(101)]}, "to_tags"),
    ],
)
async def test_oversized_variables_and_tags_are_422(
    client: httpx.AsyncClient, county: str, body: Any, key: str
) -> None:
    """A send's variables and tags are bounded (one county once sent a 2-million-entry `vars`
    object and held a worker for 46 s)."""
    resp = await client.post("/v1/messages", json=body, headers=bearer(county))
    assert resp.status_code == 422, resp.text
    assert resp.json()["fields"][0]["key"] == key


@pytest.mark.parametrize(
    ("path", "body", "key"),
    [
        ("/v1/messages", {**BODY, "body": "通知】【省委组织部】请速回电"}, "body"),
        ("/v1/messages", {**BODY, "body": "【省委组织部】通知"}, "body"),
        ("/v1/messages", {**BODY, "vars": {"name": "】【省委组织部"}}, "vars[...]"),
        ("/v1/templates", {"name": "通知", "body": "{name}同志【省委】"}, "body"),
    ],
)
async def test_signature_brackets_in_bodies_are_422(
    conn: asyncpg.Connection, client: httpx.AsyncClient, county: str, path: str, body: Any, key: str
) -> None:
    """Only the hub writes 【】: the signature it prepends. A body (or a variable) holding them
    could show a phone a second signature, so it is refused, and nothing is sent."""
    resp = await client.post(path, json=body, headers=bearer(county))
    assert resp.status_code == 422, resp.text
    assert resp.json()["fields"][0]["key"] == key
    assert await conn.fetchval("SELECT count(*) FROM sends") == 0
    assert await conn.fetchval("SELECT count(*) FROM templates") == 0


async def _post_by_asgi(
    app: Litestar, key: str, events: list[dict[str, Any]], pause: float = 0.0
) -> tuple[int, dict[str, Any]]:
    """POST /v1/messages through the app's ASGI interface, its body as `events`, `pause` s
    apart (then a wait that never ends): the status and JSON it answered."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if events:
            await asyncio.sleep(pause)
            return events.pop(0)
        await asyncio.Event().wait()  # the client sends nothing more
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    length = [(b"content-type", b"application/json"), (b"content-length", b"200")]
    scope = asgi_scope("POST", "/v1/messages", key, length)
    await app(scope, receive, send)  # type: ignore[arg-type]
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(answer)


HALF_A_SEND = {
    "type": "http.request",
    "body": b'{"to": ["13800138000"], "body": "',
    "more_body": True,
}


async def test_a_client_gone_before_its_body_ends_logs_no_server_error(
    app: Litestar,
    conn: asyncpg.Connection,
    county: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that hangs up half-way through its body (ASGI's `http.disconnect`, as uvicorn
    passes it on) is answered 499 `client_gone` and leaves no traceback in the log: a county
    could otherwise fill it with "server errors" by hanging up, again and again."""
    with caplog.at_level(logging.INFO):
        status, answer = await _post_by_asgi(
            app, county, [dict(HALF_A_SEND), {"type": "http.disconnect"}]
        )
    assert (status, answer["error"]) == (499, "client_gone")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert await conn.fetchval("SELECT count(*) FROM sends") == 0  # the send never started


async def test_a_body_that_stops_coming_is_408_after_the_body_timeout(
    settings: Settings,
    conn: asyncpg.Connection,
    redis: ArqRedis,
    county: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Half a body and then nothing (the connection kept open): 408 `timeout` once
    HUB_HTTP__BODY_TIMEOUT_SECONDS pass without more of it, and the connection is free; without
    it, a client could hold a connection, and on SIGTERM the shutdown, for as long as it likes."""
    http = msgspec.structs.replace(settings.http, body_timeout_seconds=0.2)
    app = create_app(
        msgspec.structs.replace(settings, http=http),
        db=SingleConnectionDatabase(conn),
        redis=redis,
    )
    with caplog.at_level(logging.INFO):
        status, answer = await asyncio.wait_for(_post_by_asgi(app, county, [dict(HALF_A_SEND)]), 30)
    assert (status, answer["error"]) == (408, "timeout")
    assert "0.2 s" in answer["detail"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert await conn.fetchval("SELECT count(*) FROM sends") == 0


async def test_a_body_trickled_slower_than_the_minimum_rate_is_408(
    conn: asyncpg.Connection,
    settings: Settings,
    redis: ArqRedis,
    county: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A byte now and then, each inside the body timeout, held a request (and a connection) for
    days: 2,000 unauthenticated logins were kept so. A body gets a grace period, then must keep
    up a minimum rate."""
    monkeypatch.setattr(inputs, "BODY_GRACE_SECONDS", 0.3)
    app = create_app(settings, db=SingleConnectionDatabase(conn), redis=redis)
    trickle = [dict(HALF_A_SEND)] + [
        {"type": "http.request", "body": b"x", "more_body": True} for _ in range(1000)
    ]

    status, answer = await asyncio.wait_for(_post_by_asgi(app, county, trickle, pause=0.05), 30)
    assert (status, answer["error"]) == (408, "timeout")
    assert "bytes/s" in answer["detail"]
    assert await conn.fetchval("SELECT count(*) FROM sends") == 0
