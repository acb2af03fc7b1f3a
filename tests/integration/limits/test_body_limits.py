"""Per-route body limits: small routes take kilobytes, a send takes the largest legal send, and an
oversize body answers 413 in the JSON shape naming the limit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import msgspec
import pytest

from hub.messages.controllers import MAX_SEND_BYTES
from tests.factories import bearer, grant, make_key, make_small_tree

SMALL = 16_384


@pytest.fixture
async def keys(conn: asyncpg.Connection) -> dict[str, str]:
    await make_small_tree(conn)
    await grant(conn, {"000000": 100_000, "510000": 50_000, "510100": 30_000, "510104": 10_000})
    return {"operator": await make_key(conn, "000000"), "county": await make_key(conn, "510104")}


def padded(body: dict[str, object], size: int) -> bytes:
    """`body` as JSON, padded with legal whitespace to exactly `size` bytes."""
    raw = msgspec.json.encode(body)
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


SMALL_ROUTES = [
    ("POST", "/v1/tenants/510104/children", {"code": "510104901", "name": "红星村"}),
    ("POST", "/v1/tenants/510104/keys", {"scopes": ["messages:read"]}),
    ("PATCH", "/v1/tenants/510104", {"name": "锦江区"}),
    ("PUT", "/v1/tenants/510104/quota/2027-03", {"policy": "strict"}),
    ("PUT", "/v1/tenants/510104/quiet-hours", {"enabled": False}),
    ("POST", "/v1/templates", {"name": "t", "body": "x"}),
    ("PUT", "/v1/tenants/510104/rate-limits", {"key_rate": 1}),
]


@pytest.mark.parametrize(("method", "path", "body"), SMALL_ROUTES)
async def test_small_routes_refuse_more_than_16_kib_naming_their_limit(
    client: httpx.AsyncClient, keys: dict[str, str], method: str, path: str, body: dict[str, object]
) -> None:
    resp = await client.request(
        method,
        path,
        content=padded(body, SMALL + 1),
        headers={**bearer(keys["operator"]), "Content-Type": "application/json"},
    )
    assert resp.status_code == 413, resp.text
    route = path.replace("510104", "{code}").replace("2027-03", "{period}")
    assert resp.json() == {
        "error": "too_large",
        "detail": f"the request body is over {SMALL} bytes, the most {method} {route} accepts",
        "limit_bytes": SMALL,
    }


@pytest.mark.parametrize(("method", "path", "body"), SMALL_ROUTES)
async def test_small_routes_take_a_body_of_exactly_their_limit(
    client: httpx.AsyncClient, keys: dict[str, str], method: str, path: str, body: dict[str, object]
) -> None:
    resp = await client.request(
        method,
        path,
        content=padded(body, SMALL),
        headers={**bearer(keys["operator"]), "Content-Type": "application/json"},
    )
    assert resp.status_code < 300, resp.text


def escaped(n: int) -> str:
    """n characters written the longest way JSON allows: astral, as two \\u escapes (12 bytes)."""
    return "\\ud83d\\ude00" * n


async def test_the_largest_legal_template_fits_a_small_route(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # The longest name (100) and body (500) of a template, every character 12 bytes of JSON.
    raw = f'{{"name": "{escaped(100)}", "body": "{escaped(500)}"}}'.encode()
    assert len(raw) > 7_000
    resp = await client.post(
        "/v1/templates",
        content=raw,
        headers={**bearer(keys["county"]), "Content-Type": "application/json"},
    )
    assert resp.status_code == 201, resp.text


async def test_an_oversize_body_without_a_length_is_cut_off_too(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(40):
            yield b"x" * 1024
        yield b'"}'

    resp = await client.patch(
        "/v1/tenants/510104",
        content=chunks(),
        headers={**bearer(keys["operator"]), "Content-Type": "application/json"},
    )
    assert "content-length" not in resp.request.headers
    assert resp.status_code == 413
    assert resp.json()["limit_bytes"] == SMALL


async def test_a_send_takes_far_more_than_a_small_route(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    phones = [f"1380013{n:04d}" for n in range(5_000)]  # ~75 KB
    resp = await client.post(
        "/v1/messages", json={"to": phones, "body": "今晚七点开会"}, headers=bearer(keys["county"])
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["counts"]["accepted"] == 5_000


async def test_a_send_over_its_limit_is_413(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    resp = await client.post(
        "/v1/messages",
        content=padded({"to": ["13800138000"], "body": "x"}, MAX_SEND_BYTES + 1),
        headers={**bearer(keys["county"]), "Content-Type": "application/json"},
    )
    assert resp.status_code == 413
    assert resp.json()["limit_bytes"] == MAX_SEND_BYTES == 40 * 1024 * 1024
    assert "POST /v1/messages" in resp.json()["detail"]


def test_the_largest_legal_send_fits_the_send_limit() -> None:
    fullwidth = str.maketrans("0123456789", "０１２３４５６７８９")
    largest = {
        # A million numbers of eleven full-width digits (33 bytes each in UTF-8) …
        "to": [f"1{n:010d}".translate(fullwidth) for n in range(1_000_000)],
        # … the most contact ids, each as large as an id may be …
        "to_contacts": [2**53] * 100_000,
        # … and the rest at their longest.
        "to_tags": ["标" * 100] * 100,
        "body": "\U0001f600" * 500,
        "vars": {f"v{i}": "值" * 500 for i in range(100)},
        "priority": "normal",
        "send_at": "2027-03-16T10:00:00+08:00",
        "dedup": "off",
        "subtree": False,
    }
    assert len(msgspec.json.encode(largest)) <= MAX_SEND_BYTES
