"""Rotating an API key without downtime (docs/OPERATIONS.md, "Rotating secrets"): the new key
works beside the old one until the old is revoked; then the old answers 401 and the dashboard
sessions signed in with it end. And the `Secure` cookie setting for a hub behind TLS."""

from __future__ import annotations

import asyncpg
import httpx
import msgspec
from arq.connections import ArqRedis
from litestar import Litestar

from hub.app import create_app
from hub.db import SingleConnectionDatabase
from hub.settings import Settings
from tests.factories import bearer
from tests.integration.dashboard.conftest import Seeded, sign_in

PAGE = "/dashboard/t/510000"


def _refused(response: httpx.Response) -> bool:
    return response.status_code in (302, 303, 307) and response.headers["location"].startswith(
        "/dashboard/login"
    )


async def test_a_key_rotated_works_throughout_and_the_old_one_stops_at_revocation(
    app: Litestar, seeded: Seeded
) -> None:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI typing differs
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://hub.test") as api,
        httpx.AsyncClient(transport=transport, base_url="http://hub.test") as browser,
    ):
        old = seeded.province_key
        assert (await sign_in(browser, old)).status_code == 303
        assert (await browser.get(PAGE)).status_code == 200
        # 1. A new key with the same scopes, made by a key that may (keys:write).
        listed = await api.get("/v1/tenants/510000/keys", headers=bearer(seeded.api_key))
        prefix = old.split("_")[1]
        scopes = next(k["scopes"] for k in listed.json()["items"] if k["prefix"] == prefix)
        made = await api.post(
            "/v1/tenants/510000/keys",
            json={"scopes": scopes, "name": "rotated"},
            headers=bearer(seeded.api_key),
        )
        assert made.status_code == 201, made.text
        new = made.json()["key"]
        # 2. Both work while the clients switch: no request is refused meanwhile.
        for key in (old, new):
            assert (await api.get("/v1/me", headers=bearer(key))).status_code == 200
        assert (await browser.get(PAGE)).status_code == 200
        # 3. The old one revoked: refused at once, its dashboard session ended.
        gone = await api.delete(f"/v1/keys/{prefix}", headers=bearer(seeded.api_key))
        assert gone.status_code == 204
        assert (await api.get("/v1/me", headers=bearer(old))).status_code == 401
        assert _refused(await browser.get(PAGE))
        assert (await api.get("/v1/me", headers=bearer(new))).status_code == 200
        assert (await sign_in(browser, new)).status_code == 303
        assert (await browser.get(PAGE)).status_code == 200


async def test_secure_cookies_mark_the_cookie_secure_over_plain_http(
    settings: Settings, conn: asyncpg.Connection, redis: ArqRedis, seeded: Seeded, app: Litestar
) -> None:
    """Behind a proxy that ends TLS the hub may see plain HTTP: HUB_HTTP__SECURE_COOKIES makes
    the cookie Secure regardless (and the sign-out's expired cookie too)."""
    http = msgspec.structs.replace(settings.http, secure_cookies=True)
    secure_app = create_app(
        msgspec.structs.replace(settings, http=http),
        db=SingleConnectionDatabase(conn),
        redis=redis,
    )
    for which, served in (("default", app), ("secure_cookies", secure_app)):
        transport = httpx.ASGITransport(app=served)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as browser:
            signed = await sign_in(browser, seeded.province_key)
            assert signed.status_code == 303
            out = await browser.post("/dashboard/logout", headers={"Origin": "http://hub.test"})
            assert out.status_code == 303
        for cookie in (signed.headers["set-cookie"], out.headers["set-cookie"]):
            assert ("; Secure" in cookie) is (which == "secure_cookies"), (which, cookie)
