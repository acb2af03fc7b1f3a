"""Signatures: proposed below, approved above, and the only text a send goes out under.

The tree is make_small_tree's: 四川省 510000 > 成都市 510100 > 锦江区 510104 > 春熙路街道 510104001,
with 青羊区 510105 beside 锦江区. A hostile county (锦江区) tries every way to send under a
signature no tenant above it gave it.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from tenants.divisions import import_divisions
from tenants.scopes import ALL_SCOPES
from tests.factories import bearer, grant, make_key, make_small_tree

UNIT = "510104001"
FAKE = "国务院"


@pytest.fixture
async def keys(conn: asyncpg.Connection) -> dict[str, str]:
    await make_small_tree(conn)
    await grant(
        conn,
        {"000000": 1000, "510000": 500, "510100": 300, "510104": 100, "510104001": 10},
    )
    codes = ("000000", "510000", "510100", "510104", "510105", UNIT)
    return {code: await make_key(conn, code) for code in codes}


async def _propose(client: httpx.AsyncClient, key: str, code: str, text: str) -> httpx.Response:
    return await client.put(
        f"/v1/tenants/{code}/signature", json={"signature": text}, headers=bearer(key)
    )


async def _review(
    client: httpx.AsyncClient, key: str, proposal: int, decision: str = "approve"
) -> httpx.Response:
    return await client.post(
        f"/v1/signatures/{proposal}/review", json={"decision": decision}, headers=bearer(key)
    )


async def _send(client: httpx.AsyncClient, key: str, **extra: Any) -> httpx.Response:
    body = {"to": ["13800138000"], "body": "今晚七点开会", **extra}
    return await client.post("/v1/messages", json=body, headers=bearer(key))


async def _counts(conn: asyncpg.Connection) -> tuple[int, int, int]:
    return (
        await conn.fetchval("SELECT count(*) FROM sends"),
        await conn.fetchval("SELECT count(*) FROM quota_reservations"),
        await conn.fetchval("SELECT count(*) FROM idempotency_keys"),
    )


async def _new_unit(client: httpx.AsyncClient, key: str, code: str, **body: str) -> dict[str, Any]:
    resp = await client.post(
        "/v1/tenants/510104/children",
        json={"code": code, "name": "锦江某单位", **body},
        headers=bearer(key),
    )
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def test_a_unit_a_county_creates_cannot_send_until_a_tenant_above_the_county_approves(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    unit = await _new_unit(client, keys["510104"], "510104002", signature=FAKE)
    assert unit["signature"] is None
    await grant(conn, {"510104002": 10})
    unit_key = await make_key(conn, "510104002")
    before = await _counts(conn)

    refused = await client.post(
        "/v1/messages",
        json={"to": ["13800138000"], "body": "紧急通知"},
        headers={**bearer(unit_key), "Idempotency-Key": "first"},
    )
    assert refused.status_code == 409, refused.text
    answer = refused.json()
    assert answer["error"] == "signature_not_approved"
    assert (answer["tenant"], answer["signature"], answer["status"]) == (
        "510104002",
        f"【{FAKE}】",
        "pending",
    )
    # Proposed by the county: the city (or a tenant above it) must approve.
    assert (answer["proposed_by"], answer["awaiting"]) == ("510104", "510100")
    assert "510100" in answer["detail"]
    assert await _counts(conn) == before  # nothing stored, nothing reserved, no replay kept

    # The county cannot approve what it proposed, for its own unit.
    by_county = await _review(client, keys["510104"], answer["proposal"])
    assert by_county.status_code == 403, by_county.text
    assert by_county.json()["awaiting"] == "510100"
    assert answer["proposal"] not in [
        p["id"]
        for p in (
            await client.get("/v1/signatures/pending", headers=bearer(keys["510104"]))
        ).json()["items"]
    ]
    assert (await _send(client, unit_key)).status_code == 409

    by_city = await _review(client, keys["510100"], answer["proposal"])
    assert by_city.json()["status"] == "approved"
    assert by_city.json()["reviewed_by"] == "510100"
    sent = await _send(client, unit_key)
    assert sent.status_code == 202, sent.text
    view = await client.get(f"/v1/messages/{sent.json()['id']}", headers=bearer(unit_key))
    assert view.json()["signature"] == f"【{FAKE}】"


async def test_a_county_cannot_approve_through_a_key_it_created_for_its_unit(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    minted = await client.post(
        f"/v1/tenants/{UNIT}/keys",
        json={"scopes": sorted(ALL_SCOPES), "name": "春熙路"},
        headers=bearer(keys["510104"]),
    )
    assert minted.status_code == 201, minted.text
    proposed = await _propose(client, minted.json()["key"], UNIT, FAKE)
    assert proposed.status_code == 200, proposed.text
    pending = proposed.json()["pending"]
    assert (pending["proposed_by"], pending["awaiting"]) == (UNIT, "510100")

    # The county saw that key's secret: the proposal answers to the county, not to the unit.
    assert (await _review(client, keys["510104"], pending["id"])).status_code == 403
    queue = await client.get("/v1/signatures/pending", headers=bearer(keys["510104"]))
    assert queue.json()["items"] == []
    city_queue = await client.get("/v1/signatures/pending", headers=bearer(keys["510100"]))
    assert [p["id"] for p in city_queue.json()["items"]] == [pending["id"]]

    # Nor can the unit withdraw it with a key of its own: the city decides it first.
    assert (await _propose(client, keys[UNIT], UNIT, "春熙路街道党工委")).status_code == 409
    assert (await _review(client, keys["510100"], pending["id"], "reject")).status_code == 200
    # What the unit then proposes with its own key is the county's to decide.
    own = await _propose(client, keys[UNIT], UNIT, "春熙路街道党工委")
    assert own.json()["pending"]["awaiting"] == "510104"
    decided = await _review(client, keys["510104"], own.json()["pending"]["id"], "reject")
    assert decided.json()["status"] == "rejected"
    assert decided.json()["awaiting"] is None


async def test_a_county_proposing_for_itself_keeps_sending_under_its_approved_signature(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    patched = await client.patch(
        "/v1/tenants/510104", json={"signature": FAKE}, headers=bearer(keys["510104"])
    )
    assert patched.json()["signature"] == "【锦江区】"
    state = await client.get("/v1/tenants/510104/signature", headers=bearer(keys["510104"]))
    assert state.json()["approved"] == "【锦江区】"
    assert state.json()["pending"]["signature"] == f"【{FAKE}】"
    # Accepted while the proposal waits: under the approved signature, and it stays so.
    early = await _send(client, keys["510104"])
    assert early.status_code == 202, early.text

    proposal = state.json()["pending"]["id"]
    assert (await _review(client, keys["510104"], proposal)).status_code == 403
    # 青羊区, beside it, sees no such proposal at all.
    assert (await _review(client, keys["510105"], proposal)).status_code == 404
    seen = await client.get("/v1/tenants/510104/signature", headers=bearer(keys["510105"]))
    assert seen.status_code == 404
    assert (await _review(client, keys["510000"], proposal)).status_code == 200

    later = await _send(client, keys["510104"])
    signatures = {
        r["id"]: r["signature"] for r in await conn.fetch("SELECT id, signature FROM sends")
    }
    assert signatures[early.json()["id"]] == "锦江区"
    assert signatures[later.json()["id"]] == FAKE
    view = await client.get(f"/v1/messages/{early.json()['id']}", headers=bearer(keys["510104"]))
    assert view.json()["signature"] == "【锦江区】"


async def test_a_county_cannot_replace_what_its_city_proposed_for_it(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    by_city = await _propose(client, keys["510100"], "510104", "锦江区委组织部")
    assert by_city.json()["pending"]["awaiting"] == "510000"
    by_county = await _propose(client, keys["510104"], "510104", FAKE)
    assert by_county.status_code == 409, by_county.text
    assert by_county.json()["proposal"] == by_city.json()["pending"]["id"]
    # The city may replace its own; the province decides.
    again = await _propose(client, keys["510100"], "510104", "锦江区组织部")
    assert again.json()["pending"]["signature"] == "【锦江区组织部】"
    statuses = [p["status"] for p in again.json()["proposals"]]
    assert statuses == ["pending", "withdrawn"]  # 锦江区 was imported: approved with no proposal
    assert (await _review(client, keys["510100"], again.json()["pending"]["id"])).status_code == 403
    assert (await _review(client, keys["510000"], again.json()["pending"]["id"])).status_code == 200
    state = await client.get("/v1/tenants/510104", headers=bearer(keys["510104"]))
    assert state.json()["signature"] == "【锦江区组织部】"


async def test_the_operators_signatures_are_approved_at_once(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    root = await client.get("/v1/tenants/000000/signature", headers=bearer(keys["000000"]))
    assert root.json()["approved"] == "【组织工作短信平台】"
    unit = await _new_unit(client, keys["000000"], "510104003")
    assert unit["signature"] == "【锦江某单位】"
    state = await client.get("/v1/tenants/510104003/signature", headers=bearer(keys["000000"]))
    assert state.json()["proposals"][0]["status"] == "approved"
    assert state.json()["proposals"][0]["reviewed_by"] == "000000"


async def test_rejected_and_twice_decided(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await _new_unit(client, keys["510104"], "510104004")
    await grant(conn, {"510104004": 10})
    unit_key = await make_key(conn, "510104004")
    pending = (await client.get("/v1/signatures/pending", headers=bearer(keys["510100"]))).json()
    [proposal] = pending["items"]
    assert (proposal["tenant"], proposal["signature"]) == ("510104004", "【锦江某单位】")
    rejected = await client.post(
        f"/v1/signatures/{proposal['id']}/review",
        json={"decision": "reject", "note": "请用单位全称\n谢谢"},
        headers=bearer(keys["510100"]),
    )
    assert rejected.json()["review_note"] == "请用单位全称\n谢谢"
    assert (await _review(client, keys["510000"], proposal["id"])).status_code == 409
    refused = await _send(client, unit_key)
    assert refused.status_code == 409
    assert refused.json()["status"] == "rejected"
    assert "rejected by 510100" in refused.json()["detail"]
    assert "PUT /v1/tenants/510104004/signature" in refused.json()["detail"]


async def test_templates_and_campaigns_need_the_approved_signature_too(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    template = await client.post(
        "/v1/templates",
        json={"name": "通知", "body": "{name}同志：请参会。"},
        headers=bearer(keys["510000"]),
    )
    assert template.status_code == 201
    await _new_unit(client, keys["510104"], "510104005")
    await grant(conn, {"510104005": 10})
    unit_key = await make_key(conn, "510104005")
    from_template = await client.post(
        "/v1/messages",
        json={"to": ["13800138000"], "template": template.json()["id"], "vars": {"name": "张三"}},
        headers=bearer(unit_key),
    )
    assert from_template.status_code == 409
    assert from_template.json()["error"] == "signature_not_approved"
    campaign = await client.post(
        "/v1/campaigns",
        json={"kind": "anniversary", "field": "joined_on", "template": template.json()["id"]},
        headers=bearer(unit_key),
    )
    assert campaign.status_code == 409
    assert campaign.json()["error"] == "signature_not_approved"
    assert await conn.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_the_reviewers_queue_lists_templates_too(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    mine = await client.post(
        "/v1/templates", json={"name": "county", "body": "正文"}, headers=bearer(keys["510104"])
    )
    city_own = await client.post(
        "/v1/templates", json={"name": "city", "body": "正文"}, headers=bearer(keys["510100"])
    )
    for_city = await client.get("/v1/templates/pending", headers=bearer(keys["510100"]))
    assert [t["id"] for t in for_city.json()["items"]] == [mine.json()["id"]]
    for_county = await client.get("/v1/templates/pending", headers=bearer(keys["510104"]))
    assert for_county.json()["items"] == []
    for_province = await client.get("/v1/templates/pending", headers=bearer(keys["510000"]))
    assert [t["id"] for t in for_province.json()["items"]] == [
        mine.json()["id"],
        city_own.json()["id"],
    ]


@pytest.mark.parametrize(
    "text",
    [
        f"【{FAKE}】",
        "国务院】【锦江区",
        "国",
        "国" * 31,
        "国务\u0000院",
        "国务\u202e院",  # a right-to-left override
        "国务\u200b院",  # zero width
        "国务\u0085院",
        " 国务院",
        "国务院\n",
        "",
    ],
)
async def test_a_bad_signature_is_422_and_proposes_nothing(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str], text: str
) -> None:
    resp = await _propose(client, keys["510104"], "510104", text)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"] == "invalid"
    assert resp.json()["fields"][0]["key"] == "signature"
    patched = await client.patch(
        "/v1/tenants/510104", json={"signature": text}, headers=bearer(keys["510104"])
    )
    assert patched.status_code == 422
    assert await conn.fetchval("SELECT count(*) FROM signatures WHERE status = 'pending'") == 0


@pytest.mark.parametrize(
    "body",
    [
        {"decision": "approve", "note": "好\u0000"},
        {"decision": "maybe"},
        {"decision": "approve", "note": "x" * 501},
        {"decision": "approve", "extra": 1},
        {},
    ],
)
async def test_a_bad_review_is_422_and_decides_nothing(
    client: httpx.AsyncClient, keys: dict[str, str], body: dict[str, object]
) -> None:
    proposal = (await _propose(client, keys["510104"], "510104", "锦江组工")).json()["pending"]
    resp = await client.post(
        f"/v1/signatures/{proposal['id']}/review", json=body, headers=bearer(keys["510100"])
    )
    assert resp.status_code == 422, resp.text
    state = await client.get("/v1/tenants/510104/signature", headers=bearer(keys["510100"]))
    assert state.json()["pending"]["id"] == proposal["id"]


async def test_odd_proposal_ids_and_huge_bodies(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    for path in ("/v1/signatures/0/review", f"/v1/signatures/{2**64}/review"):
        odd = await client.post(path, json={"decision": "approve"}, headers=bearer(keys["510100"]))
        assert odd.status_code in (404, 422), odd.text
        assert "error" in odd.json()
    unknown = await _review(client, keys["510100"], 999_999)
    assert unknown.json() == {"error": "not_found", "detail": "signature proposal not found"}
    huge = await client.put(
        "/v1/tenants/510104/signature",
        content=b'{"signature":"' + "国".encode() * 1_000_000 + b'"}',
        headers={**bearer(keys["510104"]), "Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    assert huge.json()["error"] == "too_large"


async def test_imported_tenants_send_under_their_departments_approved_signature(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await import_divisions(conn, "51")
    await grant(conn, {"000000": 100, "510000": 50, "510100": 30, "510104": 10})
    county = await make_key(conn, "510104")
    state = await client.get("/v1/tenants/510104/signature", headers=bearer(county))
    assert state.json()["approved"] == "【锦江区委组织部】"
    assert state.json()["pending"] is None
    province = await client.get("/v1/tenants/510000/signature", headers=bearer(county))
    assert province.status_code == 404
    sent = await _send(client, county)
    assert sent.status_code == 202, sent.text
    view = await client.get(f"/v1/messages/{sent.json()['id']}", headers=bearer(county))
    assert view.json()["signature"] == "【锦江区委组织部】"
    operator = await make_key(conn, "000000")
    assert (await client.get("/v1/signatures/pending", headers=bearer(operator))).json() == {
        "items": []
    }
