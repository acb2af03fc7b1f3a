"""People's accounts: the small tree with the operator's quota (the second factor's codes are
the operator's sends), people in it, and helpers to sign them in through the console."""

from __future__ import annotations

import re

import asyncpg
import httpx
import pytest

from hub.settings import UsersSettings
from hub.users import service as users
from hub.users.repository import UserRow
from hub.users.schemas import InviteIn
from tenants.scopes import Role
from tenants.service import get_by_code
from tests.factories import grant_ahead, make_small_tree

ORIGIN = "http://hub.test"
SAME_ORIGIN = {"Origin": ORIGIN}
PASSWORD = "correct horse battery"
RULES = UsersSettings()


async def make_user(
    conn: asyncpg.Connection,
    code: str,
    login: str,
    roles: set[Role],
    phone: str = "13800138000",
    password: str | None = PASSWORD,
) -> UserRow:
    tenant = await get_by_code(conn, code)
    assert tenant is not None
    data = InviteIn(login=login, display_name=f"{login}的名字", phone=phone, roles=sorted(roles))
    return await users.create_user(conn, tenant, data, "test", password, RULES)


@pytest.fixture
async def tree(conn: asyncpg.Connection) -> None:
    await make_small_tree(conn)
    await grant_ahead(conn, {"000000": 10_000, "510000": 1_000, "510100": 500, "510104": 100})


async def sign_in(
    client: httpx.AsyncClient, login: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post(
        "/dashboard/login", data={"login": login, "password": password}, headers=SAME_ORIGIN
    )


async def last_code(conn: asyncpg.Connection, phone: str = "+8613800138000") -> str:
    """The code the hub sends to `phone`, read from the operator's message before delivery (the
    send itself stores a placeholder, and the message forgets the code once it went)."""
    body = await conn.fetchval(
        "SELECT m.body FROM sends s JOIN messages m ON m.send_id = s.id "
        "WHERE s.actor = $1 AND m.phone = $2 ORDER BY s.id DESC LIMIT 1",
        users.CODE_ACTOR,
        phone,
    )
    assert body is not None, "no code was sent"
    found = re.search(r"验证码：(\d{6})", body)
    assert found is not None, body
    return found[1]


async def signed_in(
    client: httpx.AsyncClient, conn: asyncpg.Connection, login: str, phone: str = "+8613800138000"
) -> None:
    """Signed in, the SMS code entered when the person's roles want one."""
    response = await sign_in(client, login)
    assert response.status_code == 303, response.text
    if response.headers["location"].startswith("/dashboard/code"):
        entered = await client.post(
            "/dashboard/code", data={"code": await last_code(conn, phone)}, headers=SAME_ORIGIN
        )
        assert entered.status_code == 303, entered.text
