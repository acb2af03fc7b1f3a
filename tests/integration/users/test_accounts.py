"""Passwords, the lockout's back-off, invites: the users service on a real database, the clock
injected (never the wall clock)."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import httpx
import pytest

from hub import calendar
from hub.errors import Forbidden, Invalid
from hub.users import service as users
from hub.users.repository import UserRow
from tenants.scopes import Role
from tests.factories import bearer, make_key
from tests.integration.users.conftest import PASSWORD, RULES, SAME_ORIGIN, make_user

pytestmark = pytest.mark.usefixtures("tree")


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short1!", "至少 10"),
        ("x" * 129, "至多 128"),
        ("my-wang.wei-2027", "登录名"),  # the login, whatever its case
        ("WANG.WEI的名字abc", "姓名"),  # the display name
        ("call 13800138000", "手机号"),  # the phone
        ("abababababab", "过于简单"),
    ],
)
async def test_password_rules(conn: asyncpg.Connection, password: str, why: str) -> None:
    with pytest.raises(Invalid) as refused:
        await make_user(conn, "510104", "Wang.Wei", {Role.SEND}, password=password)
    assert why in refused.value.detail
    assert refused.value.extra["fields"][0]["key"] == "password"


async def test_the_password_is_stored_as_argon2id_only(conn: asyncpg.Connection) -> None:
    await make_user(conn, "510104", "li.na", {Role.SEND})
    stored = await conn.fetchval("SELECT password_hash FROM users WHERE login = 'li.na'")
    assert stored.startswith("$argon2id$v=19$")
    assert PASSWORD not in stored
    # Logins are one whatever their case.
    with pytest.raises(Exception, match="已被使用"):
        await make_user(conn, "510105", "LI.NA", {Role.SEND})


# One instant for the whole test: the sign-ins' clock is injected, never waited for.
T0 = calendar.now()


async def _try(conn: asyncpg.Connection, password: str, minutes: float) -> UserRow | Exception:
    """A sign-in at T0 plus `minutes`."""
    now = T0 + timedelta(minutes=minutes)
    return await users.sign_in(conn, "zhang", password, RULES, now=now)


async def test_lockout_backs_off_and_a_success_resets_it(conn: asyncpg.Connection) -> None:
    await make_user(conn, "510104", "zhang", {Role.SEND})
    for _ in range(RULES.lock_after - 1):
        assert isinstance(await _try(conn, "wrong password!", 0), users.SignInRefused)
    # The fifth failure locks for a minute: the right password is not even tried meanwhile.
    fifth = await _try(conn, "wrong password!", 0)
    assert isinstance(fifth, users.Locked)
    assert fifth.status_code == 429
    assert isinstance(await _try(conn, PASSWORD, 0.5), users.Locked)
    # After the minute, one more failure locks for two, then four.
    assert isinstance(await _try(conn, "wrong password!", 1.1), users.Locked)
    until = await conn.fetchval("SELECT locked_until FROM users WHERE login = 'zhang'")
    assert until - T0 == timedelta(minutes=1.1 + 2)
    assert isinstance(await _try(conn, PASSWORD, 3.0), users.Locked)
    assert isinstance(await _try(conn, "wrong password!", 3.2), users.Locked)
    until = await conn.fetchval("SELECT locked_until FROM users WHERE login = 'zhang'")
    assert until - T0 == timedelta(minutes=3.2 + 4)
    # Past it, the right password signs in and the count starts again.
    signed = await _try(conn, PASSWORD, 7.3)
    assert isinstance(signed, UserRow)
    row = await conn.fetchrow(
        "SELECT failed_attempts, locked_until FROM users WHERE id = $1", signed.id
    )
    assert row is not None
    assert dict(row.items()) == {"failed_attempts": 0, "locked_until": None}


async def test_back_off_is_capped() -> None:
    assert users.lock_for(RULES.lock_after - 1, RULES) is None
    assert users.lock_for(RULES.lock_after, RULES) == timedelta(seconds=60)
    assert users.lock_for(10_000, RULES) == timedelta(seconds=RULES.lock_max_seconds)


async def test_unknown_and_disabled_accounts(conn: asyncpg.Connection) -> None:
    assert isinstance(await users.sign_in(conn, "nobody", PASSWORD, RULES), users.SignInRefused)
    user = await make_user(conn, "510104", "gone", {Role.SEND})
    await conn.execute("UPDATE users SET disabled_at = hub_now() WHERE id = $1", user.id)
    # Disabled: said only to whoever knows the password.
    assert isinstance(
        await users.sign_in(conn, "gone", "wrong password", RULES), users.SignInRefused
    )
    assert isinstance(await users.sign_in(conn, "gone", PASSWORD, RULES), Forbidden)


async def _invite(client: httpx.AsyncClient, key: str, code: str, **body: object) -> httpx.Response:
    data = {"login": "new.sender", "display_name": "新发送员", "phone": "139 1234 5678"}
    return await client.post(
        f"/v1/tenants/{code}/users", json={**data, "roles": ["发送"], **body}, headers=bearer(key)
    )


async def test_an_invite_works_once(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    key = await make_key(conn, "510000")
    made = await _invite(client, key, "510104")
    assert made.status_code == 201, made.text
    answer = made.json()
    assert answer["user"]["phone"] == "139****5678"
    assert answer["user"]["active"] is False
    assert answer["user"]["created_by"].startswith("key:")
    path = answer["invite_path"]
    assert answer["invite_url"] == f"http://hub.test{path}"
    token = path.rsplit("/", 1)[1]
    stored = await conn.fetchval("SELECT token_sha256 FROM user_invites")
    assert token.encode() not in stored
    page = await client.get(path)
    assert page.status_code == 200
    assert "new.sender" in page.text
    mismatch = {"password": "a long passphrase", "confirm": "another one"}
    assert (await client.post(path, data=mismatch, headers=SAME_ORIGIN)).status_code == 422
    form = {"password": "a long passphrase", "confirm": "a long passphrase"}
    done = await client.post(path, data=form, headers=SAME_ORIGIN)
    assert done.status_code == 303
    assert (await client.get(path)).status_code == 404
    assert (await client.post(path, data=form, headers=SAME_ORIGIN)).status_code == 404
    signed = await users.sign_in(conn, "NEW.SENDER", "a long passphrase", RULES)
    assert isinstance(signed, UserRow)


async def test_an_expired_invite_is_refused(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    key = await make_key(conn, "510000")
    path = (await _invite(client, key, "510104")).json()["invite_path"]
    await conn.execute(
        "UPDATE user_invites SET created_at = hub_now() - interval '49 hours', "
        "expires_at = hub_now() - interval '1 hour'"
    )
    assert (await client.get(path)).status_code == 404
    form = {"password": "a long passphrase", "confirm": "a long passphrase"}
    assert (await client.post(path, data=form, headers=SAME_ORIGIN)).status_code == 404
    assert await conn.fetchval("SELECT password_hash FROM users") is None


async def test_invites_check_their_input(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    key = await make_key(conn, "510000")
    assert (await _invite(client, key, "510104", phone="010 1234 5678")).status_code == 422
    assert (await _invite(client, key, "510104", roles=["老板"])).status_code == 422
    assert (await _invite(client, key, "510104", login="a")).status_code == 422
    assert (await _invite(client, key, "510104")).status_code == 201
    taken = await _invite(client, key, "510105", login="NEW.sender")
    assert taken.status_code == 409
    assert taken.json()["error"] == "conflict"
