"""Follow-up (issue 14.3): replies linked to the send that asked for them, sends listed and
filtered, reminders to those who have not replied and resends to the failed, on the real
database. Delivery is set on the rows (status, sent_at on the hub's clock), as a worker would."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from hub.delivery import inbound
from hub.delivery.gateway import Inbound
from hub.settings import Settings
from tenants.scopes import Scope
from tests.factories import bearer, grant, make_key, make_small_tree

PHONES = ["13800138000", "18612345678", "13311112222", "13900001111"]


@pytest.fixture
async def keys(conn: asyncpg.Connection) -> dict[str, str]:
    await make_small_tree(conn)
    await grant(
        conn,
        {"000000": 10_000, "510000": 5_000, "510100": 3_000, "510104": 1_000, "510105": 1_000},
    )
    return {
        "county": await make_key(conn, "510104"),
        "sibling": await make_key(conn, "510105"),
        "city": await make_key(conn, "510100"),
    }


async def send(
    client: httpx.AsyncClient, key: str, body: str, to: list[str] = PHONES, **more: Any
) -> int:
    resp = await client.post(
        "/v1/messages", json={"to": to, "body": body, **more}, headers=bearer(key)
    )
    assert resp.status_code == 202, resp.text
    return int(resp.json()["id"])


async def went(
    conn: asyncpg.Connection, send_id: int, status: str = "delivered", ago: str = "1 minute"
) -> None:
    """The send's messages went `ago` (on the hub's clock) and ended as `status`."""
    await conn.execute(
        "UPDATE messages SET status = $2::message_status, sent_at = hub_now() - $3::text::interval,"
        " error = CASE WHEN $2 = 'failed' THEN 'isv.MOBILE_NUMBER_ILLEGAL' END"
        " WHERE send_id = $1",
        send_id,
        status,
        ago,
    )


async def reply(
    conn: asyncpg.Connection, settings: Settings, code: str, phone: str, text: str = "1"
) -> int:
    extension = await conn.fetchval("SELECT sms_extension FROM tenants WHERE code = $1", code)
    address = settings.delivery.service_number + extension
    (stored,) = await inbound.store(
        conn, settings.delivery, "outbox", [Inbound(phone, address, text)]
    )
    return stored


async def linked(conn: asyncpg.Connection, inbound_id: int) -> int | None:
    value: int | None = await conn.fetchval("SELECT send_id FROM inbound WHERE id = $1", inbound_id)
    return value


# --- linking replies -----------------------------------------------------------------------


async def test_a_reply_goes_to_the_newest_send_that_asked_for_one(
    conn: asyncpg.Connection, client: httpx.AsyncClient, settings: Settings, keys: dict[str, str]
) -> None:
    older = await send(client, keys["county"], "周五开会，回复1确认", reply_wanted=True)
    newer = await send(client, keys["county"], "周六开会，回复1确认", reply_wanted=True)
    silent = await send(client, keys["county"], "周日休息", dedup="off")  # asks nothing
    for s in (older, newer, silent):
        await went(conn, s)
    assert await linked(conn, await reply(conn, settings, "510104", PHONES[0])) == newer
    # A phone only the older send reached answers the older one.
    only_older = await send(client, keys["county"], "只发给一人", to=["13700000001"])
    await went(conn, only_older)
    asked = await send(client, keys["county"], "请回复", to=["13700000002"], reply_wanted=True)
    await went(conn, asked)
    assert await linked(conn, await reply(conn, settings, "510104", "13700000001")) is None
    assert await linked(conn, await reply(conn, settings, "510104", "+86 137-0000-0002")) == asked


async def test_no_link_to_another_tenants_send_or_outside_the_window(
    conn: asyncpg.Connection, client: httpx.AsyncClient, settings: Settings, keys: dict[str, str]
) -> None:
    county = await send(client, keys["county"], "回复1确认参会", reply_wanted=True)
    await went(conn, county)
    # The same phone answering the sibling county's address is not an answer to 510104's send.
    assert await linked(conn, await reply(conn, settings, "510105", PHONES[0])) is None
    stale = await send(client, keys["sibling"], "回复2确认", to=PHONES[1:2], reply_wanted=True)
    await went(conn, stale, ago="8 days")  # the window is 7 days
    assert await linked(conn, await reply(conn, settings, "510105", PHONES[1])) is None
    # A send not gone yet (no sent_at) is not answered either.
    waiting = await send(client, keys["sibling"], "还没发", to=PHONES[2:3], reply_wanted=True)
    assert waiting
    assert await linked(conn, await reply(conn, settings, "510105", PHONES[2])) is None


async def test_a_batch_of_replies_is_linked_at_once_and_the_api_names_the_send(
    conn: asyncpg.Connection, client: httpx.AsyncClient, settings: Settings, keys: dict[str, str]
) -> None:
    asked = await send(client, keys["county"], "回复1确认参会", reply_wanted=True)
    await went(conn, asked)
    extension = await conn.fetchval("SELECT sms_extension FROM tenants WHERE code = '510104'")
    address = settings.delivery.service_number + extension
    batch = [Inbound(p, address, "1", reference=f"mo-{n}") for n, p in enumerate(PHONES[:3])]
    stored = await inbound.store(conn, settings.delivery, "outbox", batch)
    assert [await linked(conn, i) for i in stored] == [asked] * 3
    page = (await client.get("/v1/inbound", headers=bearer(keys["county"]))).json()
    assert {r["send_id"] for r in page["items"]} == {asked}


# --- who has replied; replies of a send ------------------------------------------------------


async def test_recipients_replied_and_the_sends_replies(
    conn: asyncpg.Connection, client: httpx.AsyncClient, settings: Settings, keys: dict[str, str]
) -> None:
    asked = await send(client, keys["county"], "回复1确认参会", reply_wanted=True)
    await went(conn, asked)
    await reply(conn, settings, "510104", PHONES[1], "1")
    await reply(conn, settings, "510104", PHONES[3], "请假")

    async def phones(replied: str) -> list[str]:
        resp = await client.get(
            f"/v1/messages/{asked}/recipients",
            params={"replied": replied},
            headers=bearer(keys["county"]),
        )
        assert resp.status_code == 200, resp.text
        return [m["phone"] for m in resp.json()["items"]]

    assert await phones("true") == ["+86" + PHONES[1], "+86" + PHONES[3]]
    assert await phones("false") == ["+86" + PHONES[0], "+86" + PHONES[2]]
    resp = await client.get(f"/v1/messages/{asked}/replies", headers=bearer(keys["county"]))
    assert [(r["phone"], r["text"], r["send_id"]) for r in resp.json()["items"]] == [
        ("+86" + PHONES[1], "1", asked),
        ("+86" + PHONES[3], "请假", asked),
    ]
    # The city above sees them too; the sibling county gets the same 404 as for no send.
    city = await client.get(f"/v1/messages/{asked}/replies", headers=bearer(keys["city"]))
    assert len(city.json()["items"]) == 2
    bad = await client.get(f"/v1/messages/{asked}/recipients", params={"replied": "maybe"})
    assert bad.status_code == 401  # no key
    bad = await client.get(
        f"/v1/messages/{asked}/recipients",
        params={"replied": "maybe"},
        headers=bearer(keys["county"]),
    )
    assert bad.status_code in (400, 422)
    assert bad.json()["error"] in ("invalid", "malformed")


async def test_a_familys_replies_come_in_order_a_page_at_a_time(
    conn: asyncpg.Connection, client: httpx.AsyncClient, settings: Settings, keys: dict[str, str]
) -> None:
    """Replies to a send and to its reminder, interleaved, read two at a time: one list in the
    order they came (messages.repository.REPLIES_OF merges each send's own)."""
    asked = await send(client, keys["county"], "回复1确认参会", reply_wanted=True)
    await went(conn, asked)
    await reply(conn, settings, "510104", PHONES[0])
    remind = (
        await client.post(f"/v1/messages/{asked}/remind", json={}, headers=bearer(keys["county"]))
    ).json()["id"]
    await went(conn, remind)
    came = []  # to the reminder, the first send (PHONES[0] was not reminded), the reminder …
    for phone, text in ((PHONES[1], "1"), (PHONES[0], "收到"), (PHONES[2], "1"), (PHONES[3], "2")):
        came.append(await reply(conn, settings, "510104", phone, text))
    assert [await linked(conn, i) for i in came] == [remind, asked, remind, remind]
    read: list[int] = []
    after = 0
    while True:
        page = await client.get(
            f"/v1/messages/{remind}/replies",
            params={"after": after, "limit": 2},
            headers=bearer(keys["county"]),
        )
        assert page.status_code == 200, page.text
        read += [r["id"] for r in page.json()["items"]]
        if page.json()["next_after"] is None:
            break
        after = page.json()["next_after"]
    first = await conn.fetchval("SELECT min(id) FROM inbound WHERE send_id = $1", asked)
    assert read == sorted(read) == [first, *sorted(came)]


async def test_reading_replies_needs_the_replies_scope(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    asked = await send(client, keys["county"], "回复1确认参会", reply_wanted=True)
    writer = await make_key(conn, "510104", frozenset({Scope.MESSAGES_WRITE}))
    resp = await client.get(f"/v1/messages/{asked}/replies", headers=bearer(writer))
    assert resp.status_code == 403
    assert resp.json()["error"] == "forbidden"


# --- the list ----------------------------------------------------------------------------------


async def test_list_filters_and_pages(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    first = await send(client, keys["county"], "关于100%完成_任务的通知", to=PHONES[:1])
    second = await send(client, keys["county"], "学习材料", to=PHONES[1:2], reply_wanted=True)
    third = await send(client, keys["county"], "周五开会", to=PHONES[2:4])
    await went(conn, third, "failed")
    unit_key = await make_key(conn, "510104001")
    await grant(conn, {"510104001": 100})
    unit = await send(client, unit_key, "街道通知", to=PHONES[:1])
    other = await send(client, keys["sibling"], "青羊区通知", to=PHONES[:1])
    await conn.execute(
        "UPDATE sends SET created_at = hub_now() - interval '3 days' WHERE id = $1", first
    )
    county = bearer(keys["county"])

    async def ids(**params: Any) -> list[int]:
        resp = await client.get("/v1/messages", params=params, headers=county)
        assert resp.status_code == 200, resp.text
        return [s["id"] for s in resp.json()["items"]]

    assert await ids() == [third, second, first]
    assert await ids(subtree="true") == [unit, third, second, first]
    assert other not in await ids(subtree="true")
    assert await ids(text="100%完成_") == [first]
    assert await ids(text="%") == [first]  # literally, not LIKE's "anything"
    assert await ids(text="_") == [first]
    assert await ids(has_status="failed") == [third]
    assert await ids(has_status=["undelivered", "failed"]) == [third]
    assert await ids(reply_wanted="true") == [second]
    today = (
        await conn.fetchval("SELECT (hub_now() AT TIME ZONE 'Asia/Shanghai')::date")
    ).isoformat()
    assert await ids(**{"from": today}) == [third, second]
    assert await ids(to=today, dated="due") == [third, second, first]
    assert await ids(state="queued") == [third, second, first]
    sender = await conn.fetchval("SELECT actor FROM sends WHERE id = $1", unit)
    assert await ids(subtree="true", sender=sender) == [unit]
    # Keyset pages, newest first.
    page = (await client.get("/v1/messages", params={"limit": 2}, headers=county)).json()
    assert [s["id"] for s in page["items"]] == [third, second]
    assert page["items"][0]["statuses"] == {"failed": 2}
    rest = await ids(limit=2, before=page["next_before"])
    assert rest == [first]


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2027-13-01"},
        {"from": "2027-03-10", "to": "2027-03-01"},
        {"state": "lost"},
        {"has_status": "gone"},
        {"text": "x" * 101},
        {"text": "a\x00b"},
        {"text": ""},
        {"sender": "nobody"},
        {"limit": 0},
        {"before": 2**64},
        {"dated": "sent"},
    ],
)
async def test_bad_filters_are_422_with_the_error_shape(
    client: httpx.AsyncClient, keys: dict[str, str], params: dict[str, str]
) -> None:
    resp = await client.get("/v1/messages", params=params, headers=bearer(keys["county"]))
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "invalid"
    assert body["detail"]


# --- remind and resend -----------------------------------------------------------------------


async def test_remind_goes_only_to_those_who_have_not_replied_and_is_linked(
    conn: asyncpg.Connection, client: httpx.AsyncClient, settings: Settings, keys: dict[str, str]
) -> None:
    asked = await send(client, keys["county"], "回复1确认参会", reply_wanted=True)
    await went(conn, asked)
    await reply(conn, settings, "510104", PHONES[0])
    resp = await client.post(
        f"/v1/messages/{asked}/remind", json={}, headers=bearer(keys["county"])
    )
    assert resp.status_code == 202, resp.text
    remind = resp.json()["id"]
    assert resp.json()["counts"]["accepted"] == 3
    row = await conn.fetchrow(
        "SELECT follows, follow_kind, body, reply_wanted, tenant_id FROM sends WHERE id = $1",
        remind,
    )
    assert row is not None
    assert (row["follows"], row["follow_kind"], row["reply_wanted"]) == (asked, "remind", True)
    assert row["body"] == "提醒：回复1确认参会"
    phones = [
        r["phone"]
        for r in await conn.fetch(
            "SELECT phone FROM messages WHERE send_id = $1 ORDER BY id", remind
        )
    ]
    assert phones == ["+86" + p for p in PHONES[1:]]
    # A reply to the reminder counts for the first send; a second reminder skips that phone and
    # still names the first send.
    await went(conn, remind)
    assert await linked(conn, await reply(conn, settings, "510104", PHONES[1])) == remind
    replied = await client.get(
        f"/v1/messages/{asked}/recipients",
        params={"replied": "true"},
        headers=bearer(keys["county"]),
    )
    assert [m["phone"] for m in replied.json()["items"]] == ["+86" + p for p in PHONES[:2]]
    again = await client.post(
        f"/v1/messages/{remind}/remind",
        json={"body": "再次提醒：请回复1确认"},
        headers=bearer(keys["county"]),
    )
    assert again.status_code == 202, again.text
    assert again.json()["counts"]["accepted"] == 2
    assert (
        await conn.fetchval("SELECT follows FROM sends WHERE id = $1", again.json()["id"]) == asked
    )
    view = (
        await client.get(f"/v1/messages/{again.json()['id']}", headers=bearer(keys["county"]))
    ).json()
    assert (view["follows"], view["follow_kind"]) == (asked, "remind")
    listed = (await client.get("/v1/messages", headers=bearer(keys["county"]))).json()
    assert [s["follows"] for s in listed["items"]] == [asked, asked, None]


async def test_remind_refuses_a_send_that_asked_nothing_and_when_all_replied(
    conn: asyncpg.Connection, client: httpx.AsyncClient, settings: Settings, keys: dict[str, str]
) -> None:
    plain = await send(client, keys["county"], "通知")
    resp = await client.post(
        f"/v1/messages/{plain}/remind", json={}, headers=bearer(keys["county"])
    )
    assert resp.status_code == 409
    asked = await send(client, keys["county"], "回复1", to=PHONES[:1], reply_wanted=True)
    await went(conn, asked)
    await reply(conn, settings, "510104", PHONES[0])
    resp = await client.post(
        f"/v1/messages/{asked}/remind", json={}, headers=bearer(keys["county"])
    )
    assert resp.status_code == 409
    assert resp.json()["error"] == "conflict"


async def test_resend_goes_only_to_the_failed(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    first = await send(client, keys["county"], "明早八点集合")
    await went(conn, first)
    await conn.execute(
        "UPDATE messages SET status = 'failed' WHERE send_id = $1 AND phone = $2",
        first,
        "+86" + PHONES[0],
    )
    await conn.execute(
        "UPDATE messages SET status = 'undelivered' WHERE send_id = $1 AND phone = $2",
        first,
        "+86" + PHONES[2],
    )
    resp = await client.post(
        f"/v1/messages/{first}/resend", json={}, headers=bearer(keys["county"])
    )
    assert resp.status_code == 202, resp.text
    # The failed copies gave their content keys back (Dedup in time): the same text goes again.
    assert resp.json()["counts"] == {
        "accepted": 2,
        "deduplicated": 0,
        "opted_out": 0,
        "rejected": 0,
        "repeated": 0,
    }
    resent = resp.json()["id"]
    row = await conn.fetchrow("SELECT follows, follow_kind, body FROM sends WHERE id = $1", resent)
    assert row is not None
    assert tuple(row) == (first, "resend", "明早八点集合")
    phones = {
        r["phone"]
        for r in await conn.fetch("SELECT phone FROM messages WHERE send_id = $1", resent)
    }
    assert phones == {"+86" + PHONES[0], "+86" + PHONES[2]}
    # Nothing failed in the resend yet: nothing to resend.
    again = await client.post(
        f"/v1/messages/{resent}/resend", json={}, headers=bearer(keys["county"])
    )
    assert again.status_code == 409


async def test_follow_ups_pay_quota_and_keep_dedup_and_idempotency(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    first = await send(client, keys["county"], "明早八点集合")
    await went(conn, first, "failed")
    # Another tier sent the same text to one of the phones meanwhile: the resend does not
    # reach that phone twice.
    city = await send(client, keys["city"], "明早八点集合", to=PHONES[:1])
    assert city
    key = {"Idempotency-Key": "resend-1", **bearer(keys["county"])}
    resp = await client.post(f"/v1/messages/{first}/resend", json={}, headers=key)
    assert resp.status_code == 202, resp.text
    counts = resp.json()["counts"]
    assert (counts["accepted"], counts["deduplicated"]) == (3, 1)
    again = await client.post(f"/v1/messages/{first}/resend", json={}, headers=key)
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == resp.json()["id"]
    assert await conn.fetchval("SELECT count(*) FROM sends WHERE follows = $1", first) == 1
    other = await client.post(f"/v1/messages/{first}/resend", json={"body": "另一个"}, headers=key)
    assert other.status_code == 422
    # Quota: 8 held (the first send's 4, the resend's 3 and the copy relying on the city's);
    # with 2 left, another resend to the 4 is refused whole.
    await grant(conn, {"510104": 8 + 2})
    resp = await client.post(
        f"/v1/messages/{first}/resend", json={}, headers=bearer(keys["county"])
    )
    assert resp.status_code == 429, resp.text
    assert resp.json()["error"] == "quota_exhausted"


async def test_a_sibling_county_gets_404_on_every_route(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    asked = await send(client, keys["county"], "回复1确认参会", reply_wanted=True)
    await went(conn, asked, "failed")
    hostile = bearer(keys["sibling"])
    for method, path in (
        ("GET", f"/v1/messages/{asked}/replies"),
        ("GET", f"/v1/messages/{asked}/recipients?replied=false"),
        ("POST", f"/v1/messages/{asked}/remind"),
        ("POST", f"/v1/messages/{asked}/resend"),
    ):
        resp = await client.request(
            method, path, headers=hostile, json={} if method == "POST" else None
        )
        assert resp.status_code == 404, (path, resp.text)
        assert resp.json()["error"] == "not_found"
    listed = (await client.get("/v1/messages", params={"subtree": "true"}, headers=hostile)).json()
    assert listed["items"] == []
    assert await conn.fetchval("SELECT count(*) FROM sends WHERE follows IS NOT NULL") == 0


async def test_a_suspended_county_may_not_remind(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    asked = await send(client, keys["county"], "回复1确认参会", reply_wanted=True)
    await went(conn, asked)
    await conn.execute("UPDATE tenants SET status = 'suspended' WHERE code = '510104'")
    resp = await client.post(
        f"/v1/messages/{asked}/remind", json={}, headers=bearer(keys["county"])
    )
    assert resp.status_code == 403
    assert resp.json()["error"] == "suspended"
