"""Probes, metrics and the API's own documentation."""

from __future__ import annotations

import re
import socket

import asyncpg
import httpx
import pytest
from arq.connections import ArqRedis

from hub.app import create_app
from hub.db import PoolDatabase
from hub.settings import Settings


async def test_healthz(client: httpx.AsyncClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


async def test_readyz_checks_both_servers(client: httpx.AsyncClient) -> None:
    resp = await client.get("/readyz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_readyz_is_503_naming_what_is_down(
    settings: Settings, conn: asyncpg.Connection
) -> None:
    """Real connection attempts to ports where nothing listens."""
    dead_pg = await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{_closed_port()}/x", min_size=0
    )
    dead_redis = ArqRedis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=1)
    app = create_app(settings, db=PoolDatabase(dead_pg), redis=dead_redis)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
            resp = await client.get("/readyz")
    finally:
        await dead_pg.close()
        await dead_redis.aclose()
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["postgres"] != "ok"
    assert body["checks"]["redis"] != "ok"


async def test_metrics_count_requests(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    resp = await client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert "hub_requests_total{" in resp.text
    assert 'path="/healthz"' in resp.text


async def test_openapi_schema_and_docs_page(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert "/v1/tenants/{code}/tree" in schema["paths"]
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert (await client.get("/schema/swagger")).status_code == 200
    docs = await client.get("/docs")
    assert docs.status_code in (301, 302, 307, 308)
    assert docs.headers["location"] == "/schema/swagger"


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
async def test_the_docs_pages_load_nothing_from_elsewhere(
    client: httpx.AsyncClient, page: str
) -> None:
    """No CDN, no web fonts: every script, style and icon of the API's documentation is the
    hub's own (it runs where the internet may be out of reach), and each is served."""
    html = (await client.get(page)).text
    linked = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert linked, html
    assert [url for url in linked if not url.startswith("/")] == []
    for url in linked:
        if url.startswith("/schema/"):
            continue  # the document itself
        served = await client.get(url)
        assert served.status_code == 200, url
        assert len(served.content) > 100, url


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/nowhere")
    assert resp.status_code == 404
    assert resp.json()["error"] == "not_found"
