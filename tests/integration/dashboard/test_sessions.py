"""Dashboard sessions are rows in PostgreSQL: signing out ends one at once, "sign out
everywhere" ends all of a key's, and a copied cookie is good for nothing else."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from litestar import Litestar

from hub.dashboard.service import MAX_SESSIONS_PER_KEY
from tests.factories import bearer, make_key
from tests.integration.dashboard.conftest import SAME_ORIGIN, Seeded, sign_in

COOKIE = "hub_dashboard"
PAGE = "/dashboard/t/510000"


def _refused(response: httpx.Response) -> bool:
    """Sent to the sign-in page: the session is gone."""
    return response.status_code in (302, 303, 307) and response.headers["location"].startswith(
        "/dashboard/login"
    )


@contextlib.asynccontextmanager
async def _browser(
    app: Litestar, key: str | None = None, base: str = "http://hub.test"
) -> AsyncIterator[httpx.AsyncClient]:
    """Another browser on the same app (its own cookie jar), signed in with `key` if given."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI typing differs
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        if key is not None:
            assert (await sign_in(client, key)).status_code == 303
        yield client


def _with_cookie(client: httpx.AsyncClient, token: str) -> None:
    client.cookies.clear()
    client.cookies.set(COOKIE, token, path="/dashboard")


async def test_only_the_tokens_hash_is_stored_with_its_end(
    client: httpx.AsyncClient, seeded: Seeded, conn: asyncpg.Connection
) -> None:
    response = await sign_in(client, seeded.province_key)
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Secure" not in cookie  # served over http here
    assert "Max-Age=43200" in cookie  # HUB_DASHBOARD__SESSION_HOURS = 12
    token = client.cookies[COOKIE]
    assert len(token) == 43
    row = await conn.fetchrow(
        "SELECT s.token_sha256, s.expires_at - s.created_at AS lasts, k.prefix "
        "FROM dashboard_sessions s JOIN api_keys k ON k.id = s.key_id"
    )
    assert row is not None
    assert row["token_sha256"] == hashlib.sha256(token.encode()).digest()
    assert row["lasts"].total_seconds() == 12 * 3600
    assert row["prefix"] == seeded.province_key.split("_")[1]
    whole = await conn.fetchrow("SELECT * FROM dashboard_sessions")
    assert whole is not None
    assert token not in repr(dict(whole.items()))


async def test_the_cookie_is_secure_over_https(app: Litestar, seeded: Seeded) -> None:
    async with _browser(app, base="https://hub.test") as browser:
        response = await browser.post(
            "/dashboard/login",
            data={"key": seeded.province_key},
            headers={"Origin": "https://hub.test"},
        )
        assert response.status_code == 303
        assert "Secure" in response.headers["set-cookie"]
        logout = await browser.post("/dashboard/logout", headers={"Origin": "https://hub.test"})
        assert "Secure" in logout.headers["set-cookie"]


async def test_sign_out_ends_the_session_for_a_copied_cookie(
    signed_in: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    copied = signed_in.cookies[COOKIE]
    assert (await signed_in.get(PAGE)).status_code == 200
    assert (await signed_in.post("/dashboard/logout", headers=SAME_ORIGIN)).status_code == 303
    # The thief replays the cookie the browser had: refused, and so is every page.
    _with_cookie(signed_in, copied)
    for path in [PAGE, "/dashboard/t/510000/activity", "/dashboard/billing", "/dashboard/"]:
        assert _refused(await signed_in.get(path)), path
    assert await conn.fetchval("SELECT count(*) FROM dashboard_sessions") == 0


async def test_sign_out_everywhere_ends_every_session_of_the_key(
    app: Litestar, seeded: Seeded, conn: asyncpg.Connection
) -> None:
    other_key = await make_key(conn, "510000")  # the same tenant, another key
    county_key = await make_key(conn, "510104")
    async with (
        _browser(app, seeded.province_key) as office,
        _browser(app, seeded.province_key) as phone,
        _browser(app, other_key) as colleague,
        _browser(app, county_key) as county,
    ):
        left_open = phone.cookies[COOKIE]
        # From another site: refused, nothing ends.
        evil = await office.post("/dashboard/logout/everywhere", headers={"Origin": "http://evil"})
        assert evil.status_code == 403
        assert (await phone.get(PAGE)).status_code == 200

        done = await office.post("/dashboard/logout/everywhere", headers=SAME_ORIGIN)
        assert done.status_code == 303
        assert done.headers["location"] == "/dashboard/login"
        assert "Max-Age=0" in done.headers["set-cookie"]
        assert _refused(await phone.get(PAGE))
        _with_cookie(phone, left_open)
        assert _refused(await phone.get(PAGE))
        # Sessions of other keys go on, the same tenant's included.
        assert (await colleague.get(PAGE)).status_code == 200
        assert (await county.get("/dashboard/t/510104")).status_code == 200
    assert await conn.fetchval("SELECT count(*) FROM dashboard_sessions") == 2


async def test_sign_out_everywhere_needs_a_session(
    client: httpx.AsyncClient, seeded: Seeded
) -> None:
    response = await client.post("/dashboard/logout/everywhere", headers=SAME_ORIGIN)
    assert _refused(response)


async def test_sessions_end_after_their_hours_and_when_idle(
    signed_in: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    assert (await signed_in.get(PAGE)).status_code == 200
    # 59 minutes since the last request (the idle limit is 60): still good, and noted.
    await conn.execute("UPDATE dashboard_sessions SET seen_at = hub_now() - interval '59 minutes'")
    assert (await signed_in.get(PAGE)).status_code == 200
    assert await conn.fetchval("SELECT seen_at = hub_now() FROM dashboard_sessions")
    await conn.execute("UPDATE dashboard_sessions SET seen_at = hub_now() - interval '61 minutes'")
    assert _refused(await signed_in.get(PAGE))
    # Started 12 hours and a second ago, used a moment ago: past its end all the same.
    await conn.execute(
        "UPDATE dashboard_sessions SET seen_at = hub_now(), "
        "created_at = hub_now() - interval '12 hours 1 second', "
        "expires_at = hub_now() - interval '1 second'"
    )
    assert _refused(await signed_in.get(PAGE))


async def test_signing_in_again_ends_the_browsers_old_session(
    signed_in: httpx.AsyncClient, seeded: Seeded, conn: asyncpg.Connection
) -> None:
    old = signed_in.cookies[COOKIE]
    assert (await sign_in(signed_in, seeded.reader_key)).status_code == 303
    assert (await signed_in.get(PAGE)).status_code == 200
    _with_cookie(signed_in, old)
    assert _refused(await signed_in.get(PAGE))
    assert await conn.fetchval("SELECT count(*) FROM dashboard_sessions") == 1


async def test_stale_and_surplus_sessions_are_cleared_at_sign_in(
    app: Litestar, seeded: Seeded, conn: asyncpg.Connection
) -> None:
    async with _browser(app, seeded.reader_key) as gone:
        await conn.execute(
            "UPDATE dashboard_sessions SET created_at = hub_now() - interval '13 hours', "
            "expires_at = hub_now() - interval '1 hour'"
        )
        # A script signing in over and over keeps only the newest sessions.
        first = None
        for _ in range(MAX_SESSIONS_PER_KEY + 1):
            async with _browser(app, seeded.province_key) as browser:
                first = first or browser.cookies[COOKIE]
        assert gone.cookies[COOKIE]
    assert await conn.fetchval("SELECT count(*) FROM dashboard_sessions") == MAX_SESSIONS_PER_KEY
    async with _browser(app) as replay:
        assert first is not None
        _with_cookie(replay, first)
        assert _refused(await replay.get(PAGE))


async def test_a_dashboard_cookie_is_no_key_for_the_api(
    signed_in: httpx.AsyncClient,
) -> None:
    token = signed_in.cookies[COOKIE]
    for headers in ({}, bearer(token), {"Cookie": f"{COOKIE}={token}"}):
        response = await signed_in.get("/v1/me", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"
    # Nor with the cookie sent on the API's own path.
    signed_in.cookies.set(COOKIE, token, path="/")
    assert (await signed_in.get("/v1/tenants/510000")).status_code == 401


@pytest.mark.parametrize("path", ["/dashboard/logout", "/dashboard/logout/everywhere"])
async def test_sign_out_without_origin_is_refused(signed_in: httpx.AsyncClient, path: str) -> None:
    assert (await signed_in.post(path)).status_code == 403
    assert (await signed_in.get(PAGE)).status_code == 200
