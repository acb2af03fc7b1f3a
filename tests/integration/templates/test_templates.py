"""Templates: written below, approved above, sent with their variables filled in."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from hub.templates.service import variables
from tests.factories import bearer, grant, make_key, make_small_tree

GREETING = "{name}同志：今天是您入党{years}周年纪念日，{name}同志，祝您生日快乐。"


def test_variables_are_found_once_each_in_order() -> None:
    assert variables(GREETING) == ["name", "years"]
    assert variables("无变量 {} { x}") == []
    assert variables("{支部}书记") == ["支部"]


@pytest.fixture
async def keys(conn: asyncpg.Connection) -> dict[str, str]:
    await make_small_tree(conn)
    await grant(conn, {"000000": 1000, "510000": 500, "510100": 300, "510104": 100})
    return {code: await make_key(conn, code) for code in ("000000", "510100", "510104")}


async def _create(client: httpx.AsyncClient, key: str, body: str = GREETING) -> dict[str, object]:
    resp = await client.post(
        "/v1/templates", json={"name": "周年", "body": body}, headers=bearer(key)
    )
    assert resp.status_code == 201, resp.text
    result: dict[str, object] = resp.json()
    return result


async def test_pending_until_an_ancestor_approves_then_sendable(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    template = await _create(client, keys["510104"])
    assert (template["status"], template["variables"]) == ("pending", ["name", "years"])
    send = {
        "to": ["13800138000"],
        "template": template["id"],
        "vars": {"name": "张三", "years": "20"},
    }
    early = await client.post("/v1/messages", json=send, headers=bearer(keys["510104"]))
    assert early.status_code == 409
    assert early.json()["status"] == "pending"

    own = await client.post(
        f"/v1/templates/{template['id']}/review",
        json={"decision": "approve"},
        headers=bearer(keys["510104"]),
    )
    assert own.status_code == 403
    pending = await client.get(
        "/v1/templates",
        params={"subtree": "true", "status": "pending"},
        headers=bearer(keys["510100"]),
    )
    assert [t["id"] for t in pending.json()["items"]] == [template["id"]]
    approved = await client.post(
        f"/v1/templates/{template['id']}/review",
        json={"decision": "approve", "note": "同意"},
        headers=bearer(keys["510100"]),
    )
    assert approved.json()["status"] == "approved"
    assert approved.json()["reviewed_by"] == "510100"
    twice = await client.post(
        f"/v1/templates/{template['id']}/review",
        json={"decision": "reject"},
        headers=bearer(keys["510100"]),
    )
    assert twice.status_code == 409

    sent = await client.post("/v1/messages", json=send, headers=bearer(keys["510104"]))
    assert sent.status_code == 202, sent.text
    view = (
        await client.get(f"/v1/messages/{sent.json()['id']}", headers=bearer(keys["510104"]))
    ).json()
    assert view["body"] == "张三同志：今天是您入党20周年纪念日，张三同志，祝您生日快乐。"


async def test_missing_variable_is_422_naming_it(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    template = await _create(client, keys["000000"])  # the root's are approved at once
    assert template["status"] == "approved"
    resp = await client.post(
        "/v1/messages",
        json={"to": ["13800138000"], "template": template["id"], "vars": {"name": "张三"}},
        headers=bearer(keys["510104"]),  # a county may send its ancestors' templates
    )
    assert resp.status_code == 422
    assert [f["key"] for f in resp.json()["fields"]] == ["vars.years"]


async def test_body_and_template_are_exclusive_and_siblings_templates_unusable(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    sibling = await make_key(conn, "510105")
    theirs = await _create(client, sibling, "兄弟单位的模板")
    both = await client.post(
        "/v1/messages",
        json={"to": ["13800138000"], "body": "x", "template": theirs["id"]},
        headers=bearer(keys["510104"]),
    )
    assert both.status_code == 422
    other = await client.post(
        "/v1/messages",
        json={"to": ["13800138000"], "template": theirs["id"]},
        headers=bearer(keys["510104"]),
    )
    assert other.status_code == 404
    hidden = await client.get(f"/v1/templates/{theirs['id']}", headers=bearer(keys["510104"]))
    assert hidden.status_code == 404


async def test_names_are_unique_per_tenant(client: httpx.AsyncClient, keys: dict[str, str]) -> None:
    await _create(client, keys["510104"])
    again = await client.post(
        "/v1/templates", json={"name": "周年", "body": "x"}, headers=bearer(keys["510104"])
    )
    assert again.status_code == 409
