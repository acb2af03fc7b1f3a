"""Passwords after the invite: a person changes their own (the current one first; a wrong one
counts toward the lockout), and an admin resets another's (the old one stops working, their
sessions end, a new one-time link is shown once)."""

from __future__ import annotations

import re

import asyncpg
import httpx

from tenants.scopes import Role
from tests.integration.users.conftest import PASSWORD, SAME_ORIGIN, make_user, sign_in, signed_in

NEW = "锦江区的新密码2027"


def _to(response: httpx.Response, where: str) -> bool:
    return response.status_code in (302, 303) and response.headers["location"].startswith(where)


def _client(app: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://hub.test")


async def _change(
    client: httpx.AsyncClient, current: str, new: str, confirm: str = ""
) -> httpx.Response:
    return await client.post(
        "/dashboard/sessions/password",
        data={"current": current, "password": new, "confirm": confirm or new},
        headers=SAME_ORIGIN,
    )


async def test_a_person_changes_their_password_and_their_other_sessions_end(
    app: object, client: httpx.AsyncClient, conn: asyncpg.Connection, tree: None
) -> None:
    await make_user(conn, "510104", "sender", {Role.SEND})
    async with _client(app) as phone:
        assert _to(await sign_in(client, "sender"), "/dashboard/")
        assert _to(await sign_in(phone, "sender"), "/dashboard/")
        page = await client.get("/dashboard/sessions")
        assert 'id="change-password"' in page.text

        wrong = await _change(client, "not my password", NEW)
        assert wrong.status_code == 422
        assert "当前密码不正确" in wrong.text
        failures = await conn.fetchval("SELECT failed_attempts FROM users WHERE login = 'sender'")
        assert failures == 1  # counted, as a failed sign-in is
        differ = await _change(client, PASSWORD, NEW, confirm=NEW + "x")
        assert "两次输入的新密码不一致" in differ.text
        own_name = await _change(client, PASSWORD, "sender的名字12345")
        assert own_name.status_code == 422
        assert "密码不能包含登录名、姓名或手机号" in own_name.text

        changed = await _change(client, PASSWORD, NEW)
        assert _to(changed, "/dashboard/sessions?done=password"), changed.text
        assert (
            'id="password-changed"' in (await client.get("/dashboard/sessions?done=password")).text
        )
        # This browser stays signed in, the phone's session ended.
        assert (await client.get("/dashboard/t/510104")).status_code == 200
        assert _to(await phone.get("/dashboard/t/510104"), "/dashboard/login")
        assert (await sign_in(phone, "sender")).status_code != 303  # the old password
        assert _to(await sign_in(phone, "sender", NEW), "/dashboard/")
    logged = await conn.fetchval(
        "SELECT actor FROM operation_log WHERE action = 'user.password' AND object = 'user:sender'"
    )
    assert logged == "user:sender"


async def test_an_admin_resets_a_password_with_a_new_link(
    app: object, client: httpx.AsyncClient, conn: asyncpg.Connection, tree: None
) -> None:
    await make_user(conn, "510104", "admin", {Role.ADMIN, Role.SEND})
    await make_user(conn, "510104", "sender", {Role.SEND}, phone="13700137000")
    await make_user(conn, "510105", "sibling", {Role.SEND}, phone="13600136000")
    await make_user(conn, "510104", "finance", {Role.FINANCE}, phone="13500135000")
    await signed_in(client, conn, "admin")
    async with _client(app) as sender:
        assert _to(await sign_in(sender, "sender"), "/dashboard/")
        page = await client.get("/dashboard/users")
        assert page.text.count('class="reset"') == 1  # not herself, not 财务 she does not hold
        reset = await client.post("/dashboard/users/sender?action=reset", headers=SAME_ORIGIN)
        assert reset.status_code == 200, reset.text
        assert "已重置" in reset.text
        found = re.search(
            r'id="invite-link" readonly value="[^"]*(/dashboard/invite/[^"]+)"', reset.text
        )
        assert found is not None
        # The old password is gone and the sender's session with it.
        assert _to(await sender.get("/dashboard/t/510104"), "/dashboard/login")
        assert (await sign_in(sender, "sender")).status_code != 303
        accepted = await sender.post(
            found[1], data={"password": NEW, "confirm": NEW}, headers=SAME_ORIGIN
        )
        assert _to(accepted, "/dashboard/login"), accepted.text
        assert _to(await sign_in(sender, "sender", NEW), "/dashboard/")
        again = await sender.get(found[1])
        assert again.status_code == 404  # once
    # Not oneself, not a role one lacks, not outside one's subtree.
    own = await client.post("/dashboard/users/admin?action=reset", headers=SAME_ORIGIN)
    assert own.status_code == 403
    assert "不能重置自己的密码" in own.text
    finance = await client.post("/dashboard/users/finance?action=reset", headers=SAME_ORIGIN)
    assert finance.status_code == 403
    sibling = await client.post("/dashboard/users/sibling?action=reset", headers=SAME_ORIGIN)
    assert sibling.status_code == 404
    logged = await conn.fetch("SELECT actor, object FROM operation_log WHERE action = 'user.reset'")
    assert [(r["actor"], r["object"]) for r in logged] == [("user:admin", "user:sender")]


async def test_a_sender_cannot_reset_anyone(
    client: httpx.AsyncClient, conn: asyncpg.Connection, tree: None
) -> None:
    await make_user(conn, "510104", "sender", {Role.SEND})
    await make_user(conn, "510104", "other", {Role.SEND}, phone="13700137000")
    assert _to(await sign_in(client, "sender"), "/dashboard/")
    refused = await client.post("/dashboard/users/other?action=reset", headers=SAME_ORIGIN)
    assert refused.status_code == 403
    assert await conn.fetchval("SELECT password_hash IS NOT NULL FROM users WHERE login = 'other'")
