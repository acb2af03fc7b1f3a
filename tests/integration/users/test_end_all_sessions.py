"""The dashboard's old signing secret (HUB_DASHBOARD__SECRET) is retired: sessions are rows,
so "rotate the secret" becomes "end every session" — the one statement docs/OPERATIONS.md
gives, run while the hub serves. People's sessions (with their second-factor codes) and the
operator's key sessions end at once; the next sign-in works."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from litestar import Litestar

from tenants.scopes import Role
from tests.factories import make_key
from tests.integration.users.conftest import make_user, sign_in, signed_in

pytestmark = pytest.mark.usefixtures("tree")
# docs/OPERATIONS.md, "Rotating secrets": ends every console session, everyone's.
END_ALL_SESSIONS = "DELETE FROM dashboard_sessions"


def _client(app: Litestar) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI typing differs
    return httpx.AsyncClient(transport=transport, base_url="http://hub.test")


def _to_sign_in(response: httpx.Response) -> bool:
    return response.status_code in (302, 303) and response.headers["location"].startswith(
        "/dashboard/login"
    )


async def test_one_statement_ends_every_session_and_truncate_would_not(
    app: Litestar, conn: asyncpg.Connection
) -> None:
    await make_user(conn, "510000", "admin", {Role.ADMIN})  # signs in with an SMS code
    await make_user(conn, "510104", "sender", {Role.SEND}, phone="13800138001")
    operator_key = await make_key(conn, "000000")
    async with _client(app) as admin, _client(app) as sender, _client(app) as operator:
        await signed_in(admin, conn, "admin")
        await signed_in(sender, conn, "sender", "+8613800138001")
        signed = await operator.post(
            "/dashboard/login", data={"key": operator_key}, headers={"Origin": "http://hub.test"}
        )
        assert signed.status_code == 303, signed.text
        pages = {
            admin: "/dashboard/t/510000",
            sender: "/dashboard/t/510104",
            operator: "/dashboard/t/000000",
        }
        for browser, page in pages.items():
            assert (await browser.get(page)).status_code == 200, page
        assert await conn.fetchval("SELECT count(*) FROM dashboard_sessions") == 3
        # The admin's code row points at its session: TRUNCATE is refused for that reason.
        assert await conn.fetchval("SELECT count(*) FROM user_codes") >= 1
        with pytest.raises(asyncpg.FeatureNotSupportedError):
            async with conn.transaction():
                await conn.execute("TRUNCATE dashboard_sessions")

        await conn.execute(END_ALL_SESSIONS)

        for browser, page in pages.items():
            assert _to_sign_in(await browser.get(page)), page
        # Nothing else is lost: people sign in again as before.
        again = await sign_in(sender, "sender")
        assert again.status_code == 303
        assert (await sender.get("/dashboard/t/510104")).status_code == 200
