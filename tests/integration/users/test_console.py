"""People in the console: the second factor, who may administer whom, their sessions, the
operator's key, and forms that refuse NUL bytes and huge fields. The SMS codes go through the
hub's own send path and are read back from the operator's send, as the phone got them."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import httpx
import pytest

from hub import calendar
from hub.settings import Settings
from hub.users import service as users
from tenants.scopes import ROLE_SCOPES, Role
from tests.factories import bearer, make_key
from tests.integration.users.conftest import (
    PASSWORD,
    SAME_ORIGIN,
    last_code,
    make_user,
    sign_in,
    signed_in,
)

pytestmark = pytest.mark.usefixtures("tree")
COOKIE = "hub_dashboard"


def _to(response: httpx.Response, path: str) -> bool:
    return response.status_code in (302, 303) and response.headers["location"].startswith(path)


async def test_the_second_factor_blocks_an_admin_without_the_code(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await make_user(conn, "510000", "admin", {Role.ADMIN})
    response = await sign_in(client, "admin")
    assert _to(response, "/dashboard/code")
    # Signed in with the right password, but no page opens without the code.
    for path in ["/dashboard/", "/dashboard/t/510000", "/dashboard/users", "/dashboard/sessions"]:
        assert _to(await client.get(path), "/dashboard/code"), path
    assert (await client.get("/dashboard/code")).status_code == 200
    # The page's own words only: a link cannot put someone else's on it.
    lure = await client.get("/dashboard/code", params={"problem": "请拨打 400-000-0000 领取验证码"})
    assert "400-000-0000" not in lure.text
    # The code went out from the operator's root tenant: urgent, dedup off, its quota.
    send = await conn.fetchrow(
        "SELECT t.code, s.priority, s.dedup, s.state, s.reservation_id IS NOT NULL AS reserved "
        "FROM sends s JOIN tenants t ON t.id = s.tenant_id WHERE s.actor = $1",
        users.CODE_ACTOR,
    )
    assert send is not None
    assert dict(send.items()) == {
        "code": "000000",
        "priority": "urgent",
        "dedup": False,
        "state": "queued",
        "reserved": True,
    }
    code = await last_code(conn)
    logged = await conn.fetchrow(
        "SELECT t.code, o.object, o.detail::text FROM operation_log o"
        " JOIN tenants t ON t.id = o.tenant_id WHERE o.actor = $1 AND o.action = 'send.create'",
        users.CODE_ACTOR,
    )
    assert logged is not None
    assert logged["code"] == "000000"
    assert code not in logged["detail"]  # counts, never the code
    stored = await conn.fetchval("SELECT code_sha256 FROM user_codes")
    assert code.encode() not in stored
    # A wrong code counts; the right one opens the console.
    wrong = "000000" if code != "000000" else "111111"
    refused = await client.post("/dashboard/code", data={"code": wrong}, headers=SAME_ORIGIN)
    assert refused.status_code == 422
    assert "还可尝试 4 次" in refused.text
    assert await conn.fetchval("SELECT attempts FROM user_codes") == 1
    entered = await client.post("/dashboard/code", data={"code": code}, headers=SAME_ORIGIN)
    assert _to(entered, "/dashboard/")
    assert (await client.get("/dashboard/t/510000")).status_code == 200
    # Used up: the same code again is refused.
    assert (
        "已失效"
        in (await client.post("/dashboard/code", data={"code": code}, headers=SAME_ORIGIN)).text
    )


async def test_a_code_dies_after_its_attempts_and_its_minutes(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await make_user(conn, "510000", "approver", {Role.REVIEW})
    assert _to(await sign_in(client, "approver"), "/dashboard/code")
    code = await last_code(conn)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        await client.post("/dashboard/code", data={"code": wrong}, headers=SAME_ORIGIN)
    late = await client.post("/dashboard/code", data={"code": code}, headers=SAME_ORIGIN)
    assert late.status_code == 422
    assert "已失效" in late.text
    assert _to(await client.get("/dashboard/t/510000"), "/dashboard/code")
    # A code past its five minutes (the clock injected) is refused too.
    session_id = await conn.fetchval("SELECT id FROM dashboard_sessions")
    user = await conn.fetchval("SELECT id FROM users")
    row = await users.get(conn, user)
    assert row is not None
    later = calendar.now() + timedelta(hours=2)
    await users.send_code(conn, row, session_id, Settings(), now=later)
    fresh = await last_code(conn)
    expired = await users.check_code(
        conn, session_id, fresh, Settings().users, now=later + timedelta(minutes=5, seconds=1)
    )
    assert isinstance(expired, users.CodeRefused)
    assert await users.check_code(conn, session_id, fresh, Settings().users, now=later) is None


async def test_codes_are_rate_limited_per_user_and_per_phone(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await make_user(conn, "510000", "admin", {Role.ADMIN})
    assert _to(await sign_in(client, "admin"), "/dashboard/code")
    again = await client.post("/dashboard/code/send", headers=SAME_ORIGIN)
    assert again.status_code == 429
    assert "秒后再获取" in again.text
    # Through the service with the clock injected: a minute apart, five an hour per person…
    user = await users.get(conn, await conn.fetchval("SELECT id FROM users"))
    assert user is not None
    session_id = await conn.fetchval("SELECT id FROM dashboard_sessions")
    settings = Settings()
    start = calendar.now()
    for minute in range(1, 5):
        await users.send_code(
            conn, user, session_id, settings, now=start + timedelta(minutes=minute)
        )
    with pytest.raises(users.TooManyCodes, match="一小时内最多获取 5 次") as hourly:
        await users.send_code(conn, user, session_id, settings, now=start + timedelta(minutes=6))
    assert hourly.value.status_code == 429
    # …and per phone: a second person on the same phone is refused as well.
    other = await make_user(conn, "510104", "same.phone", {Role.ADMIN})
    with pytest.raises(users.TooManyCodes, match="此手机号一小时内"):
        await users.send_code(conn, other, session_id, settings, now=start + timedelta(minutes=7))
    # Codes are never deduplicated: five identical-looking sends all went out.
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM messages m JOIN sends s ON s.id = m.send_id "
            "WHERE s.actor = $1 AND m.status = 'accepted'",
            users.CODE_ACTOR,
        )
        == 5
    )


async def test_a_sender_cannot_reach_administration_and_the_api_agrees(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await make_user(conn, "510104", "sender", {Role.SEND})
    response = await sign_in(client, "sender")
    assert _to(response, "/dashboard/")  # no second factor for a sender
    assert (await client.get("/dashboard/t/510104")).status_code == 200
    page = await client.get("/dashboard/users")
    assert page.status_code == 403
    assert "users:write" in page.text
    invite = {"login": "x.y.z", "display_name": "某人", "phone": "13912345678", "role_send": "on"}
    assert (
        await client.post("/dashboard/users/invite", data=invite, headers=SAME_ORIGIN)
    ).status_code == 403
    assert "nav-users" not in (await client.get("/dashboard/t/510104")).text
    # The API's guard asks the same scopes: a key holding exactly the 发送 role's is refused.
    key = await make_key(conn, "510104", ROLE_SCOPES[Role.SEND])
    listed = await client.get("/v1/tenants/510104/users", headers=bearer(key))
    assert listed.status_code == 403
    assert listed.json() == {
        "error": "forbidden",
        "detail": "this key lacks the users:write scope",
        "scope": "users:write",
    }


async def test_a_county_admin_manages_only_its_own_subtree(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await make_user(conn, "510104", "county.admin", {Role.ADMIN, Role.SEND})
    await make_user(conn, "510105", "sibling.user", {Role.SEND}, phone="13700137000")
    await make_user(conn, "510100", "city.user", {Role.SEND}, phone="13600136000")
    await signed_in(client, conn, "county.admin")
    form = {"login": "new.one", "display_name": "新人", "phone": "13912345678", "role_send": "on"}
    for code in ["510105", "510100", "000000", "999999"]:  # sibling, parent, root, unknown
        refused = await client.post(
            "/dashboard/users/invite", data={**form, "tenant": code}, headers=SAME_ORIGIN
        )
        assert refused.status_code == 404, code
        assert (await client.get(f"/dashboard/users?tenant={code}")).status_code == 404
    for login in ["sibling.user", "city.user"]:
        changed = await client.post(
            f"/dashboard/users/{login}?action=disable", data={}, headers=SAME_ORIGIN
        )
        assert changed.status_code == 404, login
    assert await conn.fetchval("SELECT count(*) FROM users WHERE disabled_at IS NOT NULL") == 0
    # Never a role it does not hold…
    finance = await client.post(
        "/dashboard/users/invite", data={**form, "role_finance": "on"}, headers=SAME_ORIGIN
    )
    assert finance.status_code == 403
    assert "财务" in finance.text
    # …but its own tenant and the unit below it are its to manage.
    made = await client.post(
        "/dashboard/users/invite", data={**form, "tenant": "510104001"}, headers=SAME_ORIGIN
    )
    assert made.status_code == 201
    assert "/dashboard/invite/" in made.text
    # The same over the API, with a county key that may manage users.
    key = await make_key(conn, "510104")
    assert (await client.get("/v1/tenants/510105/users", headers=bearer(key))).status_code == 404
    patch = await client.patch("/v1/users/city.user", json={"disabled": True}, headers=bearer(key))
    assert patch.status_code == 404
    assert patch.json()["detail"] == "user not found"
    own = await client.patch("/v1/users/new.one", json={"roles": ["查看"]}, headers=bearer(key))
    assert own.status_code == 200
    assert own.json()["roles"] == ["查看"]


async def test_a_disabled_user_is_signed_out_and_roles_apply_at_once(
    app: object, client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await make_user(conn, "510104", "sender", {Role.SEND})
    assert _to(await sign_in(client, "sender"), "/dashboard/")
    key = await make_key(conn, "510000")
    # Made an admin: the open session now owes a code before anything opens.
    promoted = await client.patch(
        "/v1/users/sender", json={"roles": ["发送", "管理"]}, headers=bearer(key)
    )
    assert promoted.status_code == 200
    assert _to(await client.get("/dashboard/t/510104"), "/dashboard/code")
    await client.patch("/v1/users/sender", json={"disabled": True}, headers=bearer(key))
    assert _to(await client.get("/dashboard/t/510104"), "/dashboard/login")


async def test_sessions_are_listed_revoked_and_ended_everywhere(
    app: object, client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await make_user(conn, "510104", "sender", {Role.SEND})
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://hub.test") as phone,
        httpx.AsyncClient(transport=transport, base_url="http://hub.test") as laptop,
    ):
        await sign_in(client, "sender")
        await sign_in(phone, "sender")
        await sign_in(laptop, "sender")
        page = await client.get("/dashboard/sessions")
        assert page.status_code == 200
        assert page.text.count('<tr data-id="') == 3
        assert page.text.count('class="current"') == 1
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM dashboard_sessions ORDER BY id")]
        # Revoke the phone's session from the office browser.
        ended = await client.post(f"/dashboard/sessions/{ids[1]}/end", headers=SAME_ORIGIN)
        assert _to(ended, "/dashboard/sessions")
        assert _to(await phone.get("/dashboard/t/510104"), "/dashboard/login")
        assert (await laptop.get("/dashboard/t/510104")).status_code == 200
        # Another person's session is not ours to end.
        await make_user(conn, "510104", "other", {Role.SEND}, phone="13700137000")
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as theirs:
            await sign_in(theirs, "other")
            their_id = await conn.fetchval("SELECT max(id) FROM dashboard_sessions")
            mine = await client.post(f"/dashboard/sessions/{their_id}/end", headers=SAME_ORIGIN)
            assert mine.status_code == 404
            everywhere = await client.post("/dashboard/logout/everywhere", headers=SAME_ORIGIN)
            assert _to(everywhere, "/dashboard/login")
            assert _to(await laptop.get("/dashboard/t/510104"), "/dashboard/login")
            assert (await theirs.get("/dashboard/t/510104")).status_code == 200


async def test_only_the_operators_keys_sign_in_to_the_console(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    county = await make_key(conn, "510104")
    refused = await client.post("/dashboard/login", data={"key": county}, headers=SAME_ORIGIN)
    assert refused.status_code == 401
    assert "运营方" in refused.text
    operator = await make_key(conn, "000000")
    signed = await client.post("/dashboard/login", data={"key": operator}, headers=SAME_ORIGIN)
    assert _to(signed, "/dashboard/")
    assert (await client.get("/dashboard/t/510104")).status_code == 200


FORMS = [
    ("/dashboard/login", ["login", "password", "key"]),
    ("/dashboard/code", ["code"]),
    ("/dashboard/users/invite", ["tenant", "login", "display_name", "phone", "role_send"]),
    ("/dashboard/users/sender?action=roles", ["role_read", "role_send"]),
]


@pytest.mark.parametrize(("path", "fields"), FORMS)
async def test_nul_bytes_and_huge_fields_are_a_clear_4xx(
    client: httpx.AsyncClient, conn: asyncpg.Connection, path: str, fields: list[str]
) -> None:
    await make_user(conn, "510000", "root.admin", {Role.ADMIN, Role.SEND})
    await make_user(conn, "510000", "sender", {Role.SEND}, phone="13700137000")
    await signed_in(client, conn, "root.admin")
    for field in fields:
        for value, statuses in [
            ("a\x00b", {422}),
            ("x" * 5_000, {400, 422}),
            ("x" * 20_000, {413}),
        ]:
            response = await client.post(path, data={field: value}, headers=SAME_ORIGIN)
            assert response.status_code in statuses, (path, field, len(value), response.text[:300])
            assert "<html" in response.text.lower()


async def test_the_invite_form_refuses_nul_and_huge_passwords(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    key = await make_key(conn, "510000")
    body = {"login": "new.one", "display_name": "新人", "phone": "13912345678", "roles": ["发送"]}
    path = (await client.post("/v1/tenants/510104/users", json=body, headers=bearer(key))).json()[
        "invite_path"
    ]
    for field in ["password", "confirm"]:
        for value, statuses in [
            ("a\x00bcdefghijk", {422}),
            ("x" * 5_000, {400, 422}),
            ("x" * 20_000, {413}),
        ]:
            form = {"password": "fine passphrase", "confirm": "fine passphrase", field: value}
            response = await client.post(path, data=form, headers=SAME_ORIGIN)
            assert response.status_code in statuses, (field, len(value))
    # And the JSON API: NUL in a name, a huge name.
    for name in ["a\x00b", "名" * 51]:
        bad = await client.post(
            "/v1/tenants/510104/users",
            json={**body, "login": "x.y", "display_name": name},
            headers=bearer(key),
        )
        assert bad.status_code == 422
        assert bad.json()["error"] == "invalid"
    assert PASSWORD  # the module's password is never what these forms set
