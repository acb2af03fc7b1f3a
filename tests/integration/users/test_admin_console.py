"""Administration in the console (issue 14, point 6): units created, suspended and resumed
from the page through the API's own path; a key's secret shown once and never again, its
scopes never beyond the creator's; the webhook set and deleted, its secret never shown; a
发送 person reaches no administration page, and the API refuses the same scopes on a key."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from tenants.scopes import ROLE_SCOPES, Role
from tests.factories import bearer, make_key
from tests.integration.users.conftest import SAME_ORIGIN, make_user, signed_in

pytestmark = pytest.mark.usefixtures("tree")


async def _actions(conn: asyncpg.Connection, prefix: str) -> list[tuple[str, str, str]]:
    rows = await conn.fetch(
        "SELECT action, actor, coalesce(object, '') AS object FROM operation_log "
        "WHERE action LIKE $1 || '%' ORDER BY id",
        prefix,
    )
    return [(r["action"], r["actor"], r["object"]) for r in rows]


async def test_units_are_created_suspended_and_resumed_from_the_page(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await make_user(conn, "510104", "admin", {Role.ADMIN})
    await signed_in(client, conn, "admin")
    page = await client.get("/dashboard/admin/units")
    assert page.status_code == 200
    assert 'data-code="510104001"' in page.text
    made = await client.post(
        "/dashboard/admin/units",
        data={"parent": "510104", "code": "510104002", "name": "督院街街道"},
        headers=SAME_ORIGIN,
    )
    assert made.status_code == 303, made.text
    assert 'data-code="510104002"' in (await client.get("/dashboard/admin/units")).text
    outside = await client.post(
        "/dashboard/admin/units",
        data={"parent": "510104", "code": "510105001", "name": "别处"},
        headers=SAME_ORIGIN,
    )
    assert outside.status_code == 422
    assert "510105001" in outside.text
    paused = await client.post(
        "/dashboard/admin/units/510104002/status", data={"status": "suspended"}, headers=SAME_ORIGIN
    )
    assert paused.status_code == 303
    status = "SELECT status::text FROM tenants WHERE code = '510104002'"
    assert await conn.fetchval(status) == "suspended"
    # Its own status is not the county's to change; a sibling's unit is not there at all.
    own = await client.post(
        "/dashboard/admin/units/510104/status", data={"status": "suspended"}, headers=SAME_ORIGIN
    )
    assert own.status_code == 403
    sibling = await client.post(
        "/dashboard/admin/units/510105/status", data={"status": "suspended"}, headers=SAME_ORIGIN
    )
    assert sibling.status_code == 404
    assert (await client.get("/dashboard/admin/units?tenant=510105")).status_code == 404
    resumed = await client.post(
        "/dashboard/admin/units/510104002/status", data={"status": "active"}, headers=SAME_ORIGIN
    )
    assert resumed.status_code == 303
    assert await conn.fetchval(status) == "active"
    assert await _actions(conn, "tenant.") == [
        ("tenant.create", "user:admin", "tenant:510104002"),
        ("tenant.suspend", "user:admin", "tenant:510104002"),
        ("tenant.resume", "user:admin", "tenant:510104002"),
    ]


async def test_a_key_secret_is_shown_once_and_scopes_stay_within_the_creators(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await make_user(conn, "510104", "admin", {Role.ADMIN})
    await signed_in(client, conn, "admin")
    made = await client.post(
        "/dashboard/admin/keys",
        data={"tenant": "510104001", "name": "街道系统", "scope": "tenants:read"},
        headers=SAME_ORIGIN,
    )
    assert made.status_code == 201, made.text
    start = made.text.index('id="new-key" readonly value="') + len('id="new-key" readonly value="')
    key = made.text[start : made.text.index('"', start)]
    assert key.startswith("hub_")
    # The key works on the API; its secret is nowhere to be seen again.
    assert (await client.get("/v1/tenants/510104001", headers=bearer(key))).status_code == 200
    secret = key.rsplit("_", 1)[1]
    listed = await client.get("/dashboard/admin/keys?tenant=510104001")
    assert listed.status_code == 200
    assert "街道系统" in listed.text
    assert secret not in listed.text
    logged = await conn.fetchval(
        "SELECT string_agg(coalesce(after::text, ''), ' ') FROM operation_log"
    )
    assert secret not in logged
    # Two scopes in one form; one the admin does not hold is refused.
    both = await client.post(
        "/dashboard/admin/keys",
        data={"tenant": "510104", "scope": ["tenants:read", "quota:read"]},
        headers=SAME_ORIGIN,
    )
    assert both.status_code == 201
    beyond = await client.post(
        "/dashboard/admin/keys",
        data={"tenant": "510104", "scope": "billing:write"},
        headers=SAME_ORIGIN,
    )
    assert beyond.status_code == 403
    assert "billing:write" in beyond.text
    prefix = key.split("_")[1]
    revoked = await client.post(
        f"/dashboard/admin/keys/{prefix}/revoke?tenant=510104001", headers=SAME_ORIGIN
    )
    assert revoked.status_code == 303
    assert (await client.get("/v1/tenants/510104001", headers=bearer(key))).status_code == 401
    assert (await client.get("/dashboard/admin/keys?tenant=510105")).status_code == 404
    assert [a for a, _, _ in await _actions(conn, "key.")] == [
        "key.create",
        "key.create",
        "key.revoke",
    ]


async def test_the_webhook_is_set_and_deleted_its_secret_never_shown(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await make_user(conn, "510104", "admin", {Role.ADMIN, Role.SEND})
    await signed_in(client, conn, "admin")
    secret = "s3cret-s3cret-s3cret"
    saved = await client.post(
        "/dashboard/admin/webhook",
        data={"tenant": "510104", "url": "https://example.com/hook", "secret": secret},
        headers=SAME_ORIGIN,
    )
    assert saved.status_code == 303, saved.text
    page = await client.get("/dashboard/admin/webhook")
    assert "https://example.com/hook" in page.text
    assert secret not in page.text
    refused = await client.post(
        "/dashboard/admin/webhook",
        data={"tenant": "510104", "url": "http://127.0.0.1/hook", "secret": secret},
        headers=SAME_ORIGIN,
    )
    assert refused.status_code == 422
    assert secret not in refused.text
    gone = await client.post(
        "/dashboard/admin/webhook?action=delete", data={"tenant": "510104"}, headers=SAME_ORIGIN
    )
    assert gone.status_code == 303
    assert 'id="webhook-none"' in (await client.get("/dashboard/admin/webhook")).text
    assert [a for a, _, _ in await _actions(conn, "webhook.")] == ["webhook.set", "webhook.delete"]


async def test_a_sender_reaches_no_administration_and_the_api_agrees(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await make_user(conn, "510104", "sender", {Role.SEND})
    await signed_in(client, conn, "sender")
    assert "nav-admin" not in (await client.get("/dashboard/t/510104")).text
    for path in ("/dashboard/admin/units", "/dashboard/admin/keys"):
        assert (await client.get(path)).status_code == 403, path
    forms = {
        "/dashboard/admin/units": {"parent": "510104", "code": "510104009", "name": "x"},
        "/dashboard/admin/units/510104001/status": {"status": "suspended"},
        "/dashboard/admin/keys": {"tenant": "510104", "scope": "tenants:read"},
        "/dashboard/admin/keys/abcdefgh/revoke": {},
    }
    for path, form in forms.items():
        assert (await client.post(path, data=form, headers=SAME_ORIGIN)).status_code == 403, path
    key = await make_key(conn, "510104", ROLE_SCOPES[Role.SEND])
    api = [
        ("POST", "/v1/tenants/510104/children", {"code": "510104009", "name": "x"}),
        ("PATCH", "/v1/tenants/510104001", {"status": "suspended"}),
        ("POST", "/v1/tenants/510104/keys", {"scopes": ["tenants:read"]}),
        ("GET", "/v1/tenants/510104/keys", None),
    ]
    for method, path, body in api:
        answer = await client.request(method, path, json=body, headers=bearer(key))
        assert answer.status_code == 403, (method, path)
    assert await conn.fetchval("SELECT count(*) FROM tenants WHERE code = '510104009'") == 0
