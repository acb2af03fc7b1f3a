"""Sends waiting for review in the console's queue (issue 15, point 1): a city's 审核 person sees
the county's caught send with its text, sender, tenant, recipients, segments, cost and expiry,
approves or rejects it with a note through the same service as /v1/reviews; the form keeps the
console's same-origin rule; a 发送 person has no queue; the county's send page shows the send
as waiting for review, then as rejected with the note."""

from __future__ import annotations

import re

import asyncpg
import httpx
import pytest
from litestar import Litestar

from hub import calendar
from hub.quota import service as quota
from tenants.scopes import Role
from tests.factories import bearer, make_key
from tests.integration.users.conftest import SAME_ORIGIN, make_user, signed_in

pytestmark = pytest.mark.usefixtures("tree")
NOTICE = "请各支部于本周五前报送学习记录"


def _browser(app: Litestar) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://hub.test")


async def test_a_reviewer_decides_caught_sends_in_the_console(
    client: httpx.AsyncClient, conn: asyncpg.Connection, app: Litestar
) -> None:
    county = await make_key(conn, "510104")
    ruled = await client.put(
        "/v1/tenants/510104/review-rule", json={"rule": "free_text"}, headers=bearer(county)
    )
    assert ruled.status_code == 200
    sends = []
    for n in range(2):
        sent = await client.post(
            "/v1/messages",
            json={"to": ["13800138001", "13800138002"], "body": f"{NOTICE}（{n}）"},
            headers=bearer(county),
        )
        assert sent.json()["state"] == "review", sent.text
        sends.append(sent.json()["id"])
    first, second = sends
    await make_user(conn, "510104", "county", {Role.SEND}, phone="13700137001")
    await make_user(conn, "510100", "reviewer", {Role.REVIEW}, phone="13700137002")

    async with _browser(app) as sender:
        await signed_in(sender, conn, "county", "+8613700137001")
        assert (await sender.get("/dashboard/reviews")).status_code == 403
        refused = await sender.post(
            f"/dashboard/reviews/sends/{first}", data={"decision": "approve"}, headers=SAME_ORIGIN
        )
        assert refused.status_code == 403
        page = await sender.get(f"/dashboard/sends/{first}")
        assert page.status_code == 200
        assert 'id="in-review"' in page.text

    async with _browser(app) as reviewer:
        await signed_in(reviewer, conn, "reviewer", "+8613700137002")
        queue = await reviewer.get("/dashboard/reviews")
        assert queue.status_code == 200
        listed = queue.text.split('id="pending-sends"')[1].split("</table>")[0]
        assert f'<tr data-id="{first}">' in listed
        assert f"{NOTICE}（0）" in listed
        assert "510104" in listed
        assert f"key:{county.split('_')[1]}" in listed  # the sender
        assert "0.12" in listed  # two segments at list price
        foreign = await reviewer.post(
            f"/dashboard/reviews/sends/{first}",
            data={"decision": "approve"},
            headers={"Origin": "http://evil.test"},
        )
        assert foreign.status_code == 403
        noteless = await reviewer.post(
            f"/dashboard/reviews/sends/{second}", data={"decision": "reject"}, headers=SAME_ORIGIN
        )
        assert noteless.status_code == 422
        assert 'id="reviews-error"' in noteless.text
        approved = await reviewer.post(
            f"/dashboard/reviews/sends/{first}", data={"decision": "approve"}, headers=SAME_ORIGIN
        )
        assert approved.status_code == 303, approved.text
        rejected = await reviewer.post(
            f"/dashboard/reviews/sends/{second}",
            data={"decision": "reject", "note": "请注明报送方式"},
            headers=SAME_ORIGIN,
        )
        assert rejected.status_code == 303, rejected.text
        again = await reviewer.post(
            f"/dashboard/reviews/sends/{second}", data={"decision": "approve"}, headers=SAME_ORIGIN
        )
        assert again.status_code == 409
        after = (await reviewer.get("/dashboard/reviews")).text
        assert f'<tr data-id="{first}">' not in after.split('id="pending-sends"')[1]

    state = {
        r["id"]: (r["state"], r["approved_by"], r["rejected_by"], r["review_note"])
        for r in await conn.fetch(
            "SELECT id, state::text AS state, approved_by, rejected_by, review_note FROM sends"
            " WHERE id = ANY($1::bigint[])",
            sends,
        )
    }
    assert state == {
        first: ("queued", "user:reviewer", None, None),
        second: ("cancelled", None, "user:reviewer", "请注明报送方式"),
    }
    async with _browser(app) as sender:
        await signed_in(sender, conn, "county", "+8613700137001")
        page = await sender.get(f"/dashboard/sends/{second}")
        assert 'id="review-rejected"' in page.text
        assert "请注明报送方式" in page.text
    assert (await quota.audit(conn, calendar.current_period()))[1] == []


async def test_compose_says_a_send_will_wait_for_review_and_the_send_page_shows_it(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    admin = await make_key(conn, "510100")
    ruled = await client.put(
        "/v1/tenants/510104/review-rule",
        json={"rule": "above", "above": 1},
        headers=bearer(admin),
    )
    assert ruled.status_code == 200, ruled.text
    await make_user(conn, "510104", "sender", {Role.SEND}, phone="13700137001")
    await signed_in(client, conn, "sender", "+8613700137001")
    page = (await client.get("/dashboard/compose")).text
    token = re.search(r'name="token" value="([^"]+)"', page)
    assert token is not None
    form = {
        "token": token[1],
        "to": "13800138001\n13800138002",
        "body": NOTICE,
        "priority": "normal",
    }
    preview = await client.post("/dashboard/compose/preview", data=form, headers=SAME_ORIGIN)
    assert 'id="preview-review"' in preview.text
    one = await client.post(
        "/dashboard/compose/preview", data={**form, "to": "13800138001"}, headers=SAME_ORIGIN
    )
    assert 'id="preview-review"' not in one.text
    sent = await client.post("/dashboard/compose/send", data=form, headers=SAME_ORIGIN)
    assert sent.status_code == 303, sent.text
    shown = (await client.get(sent.headers["location"])).text
    assert 'id="in-review"' in shown
    assert "收件人数超过审核门槛" in shown
