"""Templates, signatures and the review queue in the console (issue 14, point 5): a county
proposes, a city's 审核 person decides with a note the county then reads; a 发送 person may
not decide (403, and the API agrees for the same scopes on a key), a sibling county sees
nothing (404); every change is in the operation log. Keys keep their older review scope
during the transition."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar

from tenants.scopes import ROLE_SCOPES, Role, Scope
from tests.factories import bearer, make_key
from tests.integration.users.conftest import SAME_ORIGIN, make_user, signed_in

pytestmark = pytest.mark.usefixtures("tree")
BODY = "{name}同志：今天是您入党{years}周年纪念日。"


def _browser(app: Litestar) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://hub.test")


async def _entries(conn: asyncpg.Connection, action: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT o.actor, t.code AS tenant, o.object, o.after::text AS after, "
        "o.detail::text AS detail FROM operation_log o JOIN tenants t ON t.id = o.tenant_id "
        "WHERE o.action = $1 ORDER BY o.id",
        action,
    )
    return [dict(r.items()) for r in rows]


async def _propose(client: httpx.AsyncClient, name: str = "周年") -> int:
    made = await client.post(
        "/dashboard/templates", data={"name": name, "body": BODY}, headers=SAME_ORIGIN
    )
    assert made.status_code == 303, made.text
    return int(made.headers["location"].rsplit("=", 1)[1])


async def test_a_reviewer_approves_and_rejects_with_a_note_the_proposer_reads(
    client: httpx.AsyncClient, conn: asyncpg.Connection, app: Litestar
) -> None:
    await make_user(conn, "510104", "county", {Role.SEND}, phone="13700137001")
    await make_user(conn, "510100", "reviewer", {Role.REVIEW}, phone="13700137002")
    await make_user(conn, "510100", "citysender", {Role.SEND}, phone="13700137003")
    await signed_in(client, conn, "county", "+8613700137001")
    first = await _propose(client)
    second = await _propose(client, "通知")
    page = await client.get("/dashboard/templates")
    assert page.status_code == 200
    assert page.text.count('data-status="pending"') == 2
    assert "nav-reviews" not in page.text  # a 发送 person reviews nothing
    # The county's own template is not the county's to decide, nor a 发送 person's anywhere.
    refused = await client.post(
        f"/dashboard/reviews/templates/{first}",
        data={"decision": "approve"},
        headers=SAME_ORIGIN,
    )
    assert refused.status_code == 403
    assert (await client.get("/dashboard/reviews")).status_code == 403

    async with _browser(app) as city:
        await signed_in(city, conn, "citysender", "+8613700137003")
        assert (await city.get("/dashboard/reviews")).status_code == 403
        sender_try = await city.post(
            f"/dashboard/reviews/templates/{first}",
            data={"decision": "approve"},
            headers=SAME_ORIGIN,
        )
        assert sender_try.status_code == 403
    async with _browser(app) as reviewer:
        await signed_in(reviewer, conn, "reviewer", "+8613700137002")
        queue = await reviewer.get("/dashboard/reviews")
        assert queue.status_code == 200
        assert f'<tr data-id="{first}">' in queue.text
        assert f'<tr data-id="{second}">' in queue.text
        approved = await reviewer.post(
            f"/dashboard/reviews/templates/{first}",
            data={"decision": "approve", "note": ""},
            headers=SAME_ORIGIN,
        )
        assert approved.status_code == 303, approved.text
        rejected = await reviewer.post(
            f"/dashboard/reviews/templates/{second}",
            data={"decision": "reject", "note": "请写明活动地点"},
            headers=SAME_ORIGIN,
        )
        assert rejected.status_code == 303
        again = await reviewer.post(
            f"/dashboard/reviews/templates/{second}",
            data={"decision": "approve"},
            headers=SAME_ORIGIN,
        )
        assert again.status_code == 409
        assert "already rejected" in again.text
        # Nothing left to decide; a form from elsewhere is refused.
        assert f'<tr data-id="{first}">' not in (await reviewer.get("/dashboard/reviews")).text
        foreign = await reviewer.post(
            f"/dashboard/reviews/templates/{first}",
            data={"decision": "approve"},
            headers={"Origin": "http://evil.test"},
        )
        assert foreign.status_code == 403

    mine = (await client.get("/dashboard/templates")).text
    assert 'data-status="approved"' in mine
    assert 'data-status="rejected"' in mine
    assert "请写明活动地点" in mine
    assert await _entries(conn, "template.create") == [
        {
            "actor": "user:county",
            "tenant": "510104",
            "object": f"template:{n}",
            "after": f'{{"body": "{BODY}", "name": "{name}", "status": "pending"}}',
            "detail": None,
        }
        for n, name in ((first, "周年"), (second, "通知"))
    ]
    assert [
        (e["actor"], e["tenant"], e["object"]) for e in await _entries(conn, "template.approve")
    ] == [("user:reviewer", "510104", f"template:{first}")]
    [reject] = await _entries(conn, "template.reject")
    assert "请写明活动地点" in reject["detail"]


async def test_signatures_from_the_page_to_the_queue_and_back(
    client: httpx.AsyncClient, conn: asyncpg.Connection, app: Litestar
) -> None:
    await make_user(conn, "510104", "countyadmin", {Role.ADMIN}, phone="13700137001")
    await make_user(conn, "510100", "reviewer", {Role.REVIEW}, phone="13700137002")
    await signed_in(client, conn, "countyadmin", "+8613700137001")
    proposed = await client.post(
        "/dashboard/signatures",
        data={"tenant": "510104", "signature": "锦江区委组织部办公室"},
        headers=SAME_ORIGIN,
    )
    assert proposed.status_code == 303, proposed.text
    page = await client.get("/dashboard/signatures?tenant=510104")
    assert "【锦江区委组织部办公室】" in page.text
    assert 'id="pending-signature"' in page.text
    # 管理 holds tenants:write, the signature route's older scope: a person still needs
    # reviews:write (only keys keep the older scope).
    assert (await client.get("/dashboard/reviews")).status_code == 403
    proposal = await conn.fetchval("SELECT max(id) FROM signatures WHERE status = 'pending'")
    async with _browser(app) as reviewer:
        await signed_in(reviewer, conn, "reviewer", "+8613700137002")
        queue = await reviewer.get("/dashboard/reviews")
        assert "【锦江区委组织部办公室】" in queue.text
        rejected = await reviewer.post(
            f"/dashboard/reviews/signatures/{proposal}",
            data={"decision": "reject", "note": "请用单位全称"},
            headers=SAME_ORIGIN,
        )
        assert rejected.status_code == 303, rejected.text
        bad = await reviewer.post(
            f"/dashboard/reviews/signatures/{proposal}",
            data={"decision": "maybe"},
            headers=SAME_ORIGIN,
        )
        assert bad.status_code == 422
    state = (await client.get("/dashboard/signatures?tenant=510104")).text
    assert "请用单位全称" in state
    assert 'data-status="rejected"' in state
    [entry] = await _entries(conn, "signature.reject")
    assert (entry["actor"], entry["tenant"], entry["object"]) == (
        "user:reviewer",
        "510104",
        f"signature:{proposal}",
    )
    assert [e["actor"] for e in await _entries(conn, "signature.propose")][-1] == "user:countyadmin"


async def test_a_sibling_county_finds_nothing(
    client: httpx.AsyncClient, conn: asyncpg.Connection, app: Litestar
) -> None:
    await make_user(conn, "510104", "county", {Role.SEND}, phone="13700137001")
    await make_user(
        conn, "510105", "sibling", {Role.REVIEW, Role.ADMIN, Role.SEND}, phone="13700137002"
    )
    await signed_in(client, conn, "county", "+8613700137001")
    template = await _propose(client)
    proposal = await conn.fetchval(
        "SELECT s.id FROM signatures s JOIN tenants t ON t.id = s.tenant_id "
        "WHERE t.code = '510104' ORDER BY s.id DESC LIMIT 1"
    )
    async with _browser(app) as sibling:
        await signed_in(sibling, conn, "sibling", "+8613700137002")
        queue = await sibling.get("/dashboard/reviews")
        assert queue.status_code == 200
        assert f'<tr data-id="{template}">' not in queue.text
        for path in (
            f"/dashboard/reviews/templates/{template}",
            f"/dashboard/reviews/signatures/{proposal}",
        ):
            tried = await sibling.post(path, data={"decision": "approve"}, headers=SAME_ORIGIN)
            assert tried.status_code == 404, path
        assert (await sibling.get("/dashboard/signatures?tenant=510104")).status_code == 404
        posted = await sibling.post(
            "/dashboard/signatures",
            data={"tenant": "510104", "signature": "冒名"},
            headers=SAME_ORIGIN,
        )
        assert posted.status_code == 404
    assert (
        await conn.fetchval("SELECT status::text FROM templates WHERE id = $1", template)
        == "pending"
    )
    # The API: the same sibling's key is 404 too.
    key = await make_key(conn, "510105", ROLE_SCOPES[Role.REVIEW])
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub.test")  # type: ignore[arg-type]
    async with api:
        answer = await api.post(
            f"/v1/templates/{template}/review", json={"decision": "approve"}, headers=bearer(key)
        )
        assert answer.status_code == 404


async def test_the_api_takes_reviews_write_and_keys_keep_their_older_scope(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    county = await make_key(conn, "510104", frozenset({Scope.MESSAGES_WRITE, Scope.MESSAGES_READ}))
    templates = []
    for name in ("一", "二", "三"):
        made = await client.post(
            "/v1/templates", json={"name": name, "body": BODY}, headers=bearer(county)
        )
        assert made.status_code == 201
        templates.append(made.json()["id"])
    reviewer = await make_key(conn, "510100", ROLE_SCOPES[Role.REVIEW])
    older = await make_key(conn, "510100", frozenset({Scope.MESSAGES_WRITE}))
    reader = await make_key(conn, "510100", ROLE_SCOPES[Role.READ])
    admin = await make_key(conn, "510100", ROLE_SCOPES[Role.ADMIN])
    decide = {"decision": "approve"}
    for key, template, status in (
        (reader, templates[0], 403),
        (admin, templates[0], 403),  # tenants:write decides signatures (older scope), not templates
        (reviewer, templates[0], 200),
        (older, templates[1], 200),
    ):
        answer = await client.post(
            f"/v1/templates/{template}/review", json=decide, headers=bearer(key)
        )
        assert answer.status_code == status, answer.text
    refused = await client.post(
        f"/v1/templates/{templates[2]}/review", json=decide, headers=bearer(reader)
    )
    assert "reviews:write (or messages:write)" in refused.json()["detail"]
    # Signatures: reviews:write, or a key's tenants:write.
    proposer = await make_key(conn, "510104", frozenset({Scope.TENANTS_WRITE}))
    for n, (key, status) in enumerate(((reader, 403), (admin, 200), (reviewer, 200))):
        answer = await client.put(
            "/v1/tenants/510104/signature",
            json={"signature": f"锦江区委组织部{n}"},
            headers=bearer(proposer),
        )
        assert answer.status_code == 200, answer.text
        proposal = answer.json()["pending"]["id"]
        decided = await client.post(
            f"/v1/signatures/{proposal}/review", json=decide, headers=bearer(key)
        )
        assert decided.status_code == status, decided.text


async def test_nul_bytes_and_huge_fields_are_a_clear_page_and_change_nothing(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await make_user(conn, "510104", "county", {Role.SEND}, phone="13700137001")
    await signed_in(client, conn, "county", "+8613700137001")
    for data in (
        {"name": "周年\x00", "body": BODY},
        {"name": "周年", "body": "长" * 5_000},
        {"name": "周年", "body": "伪造【签名】"},
    ):
        answer = await client.post("/dashboard/templates", data=data, headers=SAME_ORIGIN)
        assert answer.status_code in (400, 413, 422), (data["name"], answer.status_code)
        assert "<html" in answer.text
    assert await conn.fetchval("SELECT count(*) FROM templates") == 0
