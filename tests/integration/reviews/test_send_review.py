"""Review before sending (审核): rules, the queue, approve, reject, expire, urgent sends reviewed
after the fact, and who may decide."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from hub import calendar
from hub.messages import review
from hub.quota import service as quota
from tenants.scopes import Scope
from tests.factories import bearer, grant_ahead, make_key, make_small_tree

NOTICE = "请各支部书记于周五下午三点到区委党校参加培训"
PHONES = ["13800138001", "13800138002", "13800138003"]
SENDER = frozenset({Scope.MESSAGES_WRITE, Scope.MESSAGES_READ})
READER = frozenset({Scope.TENANTS_READ, Scope.MESSAGES_READ, Scope.DASHBOARD_READ})
REVIEWER = frozenset({Scope.REVIEWS_WRITE, Scope.MESSAGES_READ, Scope.TENANTS_READ})


@pytest.fixture
async def keys(conn: asyncpg.Connection) -> dict[str, str]:
    await make_small_tree(conn)
    await grant_ahead(
        conn,
        {"000000": 1000, "510000": 500, "510100": 300, "510104": 100, "510105": 100, "520000": 100},
    )
    return {
        "province": await make_key(conn, "510000"),
        "city": await make_key(conn, "510100"),
        "city_reviewer": await make_key(conn, "510100", REVIEWER),
        "county": await make_key(conn, "510104"),
        "county_sender": await make_key(conn, "510104", SENDER),
        "county_reviewer": await make_key(conn, "510104", REVIEWER),
        "county_reader": await make_key(conn, "510104", READER),
        "sibling_reviewer": await make_key(conn, "510105", REVIEWER),
        "guizhou": await make_key(conn, "520000"),
    }


async def set_rule(client: httpx.AsyncClient, key: str, code: str, **rule: Any) -> httpx.Response:
    return await client.put(f"/v1/tenants/{code}/review-rule", json=rule, headers=bearer(key))


async def send(
    client: httpx.AsyncClient, key: str, to: list[str] = PHONES, **extra: Any
) -> dict[str, Any]:
    sent = await client.post(
        "/v1/messages", json={"to": to, "body": NOTICE, **extra}, headers=bearer(key)
    )
    assert sent.status_code == 202, sent.text
    body: dict[str, Any] = sent.json()
    return body


async def view(client: httpx.AsyncClient, key: str, send_id: int) -> dict[str, Any]:
    got = await client.get(f"/v1/messages/{send_id}", headers=bearer(key))
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


async def quota_of(client: httpx.AsyncClient, key: str, code: str) -> tuple[int, int]:
    period = calendar.period_text(calendar.current_period())
    got = await client.get(f"/v1/tenants/{code}/quota/{period}", headers=bearer(key))
    assert got.status_code == 200, got.text
    return got.json()["reserved"], got.json()["used"]


async def audit_clean(conn: asyncpg.Connection) -> list[str]:
    return (await quota.audit(conn, calendar.current_period()))[1]


@contextlib.asynccontextmanager
async def clock_moved(conn: asyncpg.Connection, by: timedelta) -> AsyncIterator[None]:
    """The hub's clock (Python's and this connection's hub_now()) `by` later, then back."""
    before = calendar.CLOCK.offset

    async def to(offset: timedelta) -> None:
        calendar.CLOCK.offset = offset
        await conn.execute(f"SET LOCAL hub.clock_offset = '{offset.total_seconds():.6f} seconds'")

    await to(before + by)
    try:
        yield
    finally:
        await to(before)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- rules ---------------------------------------------------------------------------------


async def test_without_a_rule_a_send_goes_and_each_rule_catches_what_it_says(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    assert (await send(client, keys["county"]))["state"] == "queued"
    assert (
        await set_rule(client, keys["county"], "510104", rule="above", above=2)
    ).status_code == 200
    assert (await send(client, keys["county"], PHONES[:2], body="两人通知"))["state"] == "queued"
    caught = await send(client, keys["county"], PHONES, body="三人通知")
    assert caught["state"] == "review"
    shown = await view(client, keys["county"], caught["id"])
    assert shown["review_reason"] == "above:2"
    expires = at(shown["created_at"]) + timedelta(hours=72)
    assert shown["review_due_at"] == calendar.rfc3339(expires)

    assert (await set_rule(client, keys["county"], "510104", rule="free_text")).status_code == 200
    previewed = await client.post(
        "/v1/messages/preview",
        json={"to": PHONES[:1], "body": "一人通知"},
        headers=bearer(keys["county"]),
    )
    assert previewed.json()["state"] == "review", previewed.text
    assert (await send(client, keys["county"], PHONES[:1], body="一人通知"))["state"] == "review"
    assert (await set_rule(client, keys["county"], "510104", rule="none")).status_code == 200
    assert (await send(client, keys["county"], PHONES[:1], body="又一人通知"))["state"] == "queued"


async def test_an_approved_template_is_not_free_text(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    made = await client.post(
        "/v1/templates",
        json={"name": "培训", "body": "请于{时间}参加培训"},
        headers=bearer(keys["county"]),
    )
    assert made.status_code == 201, made.text
    decided = await client.post(
        f"/v1/templates/{made.json()['id']}/review",
        json={"decision": "approve"},
        headers=bearer(keys["city"]),
    )
    assert decided.status_code == 200, decided.text
    await set_rule(client, keys["county"], "510104", rule="free_text")
    templated = await client.post(
        "/v1/messages",
        json={"to": PHONES, "template": made.json()["id"], "vars": {"时间": "周五"}},
        headers=bearer(keys["county"]),
    )
    assert templated.status_code == 202, templated.text
    assert templated.json()["state"] == "queued"
    # Variables that carry a text of their own (longer than a variable, or a link, in `vars` or
    # in a phone's `values`) make it free text again: an approved "{正文}" is no way around.
    for extra in (
        {"vars": {"时间": "周五" + "，另有要事" * 7}},
        {"vars": {"时间": "周五 http://evil.example"}},
        {"vars": {"时间": "周五"}, "values": {PHONES[0]: {"时间": "详见 www.evil.example"}}},
    ):
        caught = await client.post(
            "/v1/messages",
            json={"to": PHONES, "template": made.json()["id"], **extra},
            headers=bearer(keys["county"]),
        )
        assert caught.status_code == 202, caught.text
        assert caught.json()["state"] == "review", extra


async def test_a_subtree_rule_binds_every_tenant_below_and_cannot_be_loosened(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Without `subtree`, the province's rule is its own.
    await set_rule(client, keys["province"], "510000", rule="free_text")
    assert (await send(client, keys["county"]))["state"] == "queued"
    assert (await send(client, keys["province"]))["state"] == "review"
    # With it, the counties' sends are caught too, whatever their own rule says.
    await set_rule(client, keys["province"], "510000", rule="free_text", subtree=True)
    await set_rule(client, keys["county"], "510104", rule="none")
    assert (await send(client, keys["county"], body="另一条"))["state"] == "review"
    ruled = await client.get("/v1/tenants/510104/review-rule", headers=bearer(keys["county"]))
    assert ruled.json()["rule"] == "none"
    assert ruled.json()["binding"] == [
        {"tenant": "510000", "rule": "free_text", "above": None, "subtree": True}
    ]
    # The strictest applies: a county's own threshold adds to the province's.
    await set_rule(client, keys["province"], "510000", rule="above", above=5, subtree=True)
    await set_rule(client, keys["county"], "510104", rule="above", above=1)
    caught = await send(client, keys["county"], PHONES[:2], body="两人")
    assert (await view(client, keys["county"], caught["id"]))["review_reason"] == "above:1"
    # Another province is bound by none of it.
    other = await send(client, keys["guizhou"], PHONES[:1], body="贵州")
    assert other["state"] == "queued"


async def test_who_may_read_and_set_a_rule(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # A county cannot set (or see) its city's rule: 404, as any tenant outside its subtree.
    assert (await set_rule(client, keys["county"], "510100", rule="free_text")).status_code == 404
    hidden = await client.get("/v1/tenants/510104/review-rule", headers=bearer(keys["guizhou"]))
    assert hidden.status_code == 404
    assert hidden.json()["error"] == "not_found"
    # Reading is not setting.
    refused = await set_rule(client, keys["county_reader"], "510104", rule="free_text")
    assert refused.status_code == 403
    # The city sets its county's rule; the change is in the operation log.
    assert (await set_rule(client, keys["city"], "510104", rule="free_text")).status_code == 200
    logged = await conn.fetchval(
        "SELECT after->>'rule' FROM operation_log WHERE action = 'review_rule.set'"
    )
    assert logged == "free_text"
    # The county cannot loosen (or change) the rule its city set on it; the city still can.
    loosened = await set_rule(client, keys["county"], "510104", rule="none")
    assert loosened.status_code == 403, loosened.text
    assert "set by a tenant above" in loosened.json()["detail"]
    assert (await send(client, keys["county"], body="仍须审核"))["state"] == "review"
    assert (await set_rule(client, keys["city"], "510104", rule="none")).status_code == 200
    assert (await set_rule(client, keys["county"], "510104", rule="free_text")).status_code == 200
    # Bad input: a threshold without `above`, `above` without one, unknown fields, huge numbers.
    for bad in (
        {"rule": "free_text", "above": 3},
        {"rule": "above"},
        {"rule": "above", "above": 3, "extra": 1},
        {"rule": "above", "above": 10**12},
        {"rule": "sometimes"},
    ):
        answer = await set_rule(client, keys["city"], "510104", **bad)
        assert answer.status_code in (400, 422), (bad, answer.text)
        assert "error" in answer.json()


# --- a caught send ---------------------------------------------------------------------------


async def test_a_caught_send_reserves_its_quota_claims_no_key_and_is_not_enqueued(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str], redis: Any
) -> None:
    await set_rule(client, keys["county"], "510104", rule="free_text")
    caught = await send(client, keys["county"])
    assert (caught["state"], caught["segments"]) == ("review", 3)
    listed = await client.get(
        "/v1/messages", params={"state": "review"}, headers=bearer(keys["county"])
    )
    assert [s["id"] for s in listed.json()["items"]] == [caught["id"]]
    assert listed.json()["items"][0]["review_due_at"] is not None
    assert await quota_of(client, keys["county"], "510104") == (3, 0)
    claimed = await conn.fetchval(
        "SELECT count(*) FROM dedup_keys d JOIN messages m ON m.id = d.message_id"
        " WHERE m.send_id = $1",
        caught["id"],
    )
    assert claimed == 0
    assert await redis.zcard("arq:queue") == 0
    # Its reservation does not expire while it waits.
    expires = await conn.fetchval(
        "SELECT expires_at = 'infinity' FROM quota_reservations WHERE cause = $1",
        f"send:{caught['id']}",
    )
    assert expires is True
    # Short of quota: 429 as for any send, nothing left behind.
    before = await conn.fetchval("SELECT count(*) FROM sends")
    many = [f"1390000{i:04d}" for i in range(120)]
    short = await client.post(
        "/v1/messages", json={"to": many, "body": NOTICE}, headers=bearer(keys["county"])
    )
    assert short.status_code == 429, short.text
    assert await conn.fetchval("SELECT count(*) FROM sends") == before


async def test_a_send_waiting_in_review_cannot_be_followed_up(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await set_rule(client, keys["county"], "510104", rule="free_text")
    caught = await send(client, keys["county"], reply_wanted=True)
    reminded = await client.post(
        f"/v1/messages/{caught['id']}/remind", json={}, headers=bearer(keys["county"])
    )
    assert reminded.status_code == 409, reminded.text


# --- the queue and who may decide --------------------------------------------------------------


async def test_the_queue_lists_what_the_caller_may_decide_and_nothing_else(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await set_rule(client, keys["city"], "510100", rule="free_text", subtree=True)
    county = await send(client, keys["county_sender"])
    city = await send(client, keys["city"], body="市里的通知")

    async def queue(key: str, **params: Any) -> list[int]:
        got = await client.get("/v1/reviews", params=params, headers=bearer(key))
        assert got.status_code == 200, got.text
        return [item["id"] for item in got.json()["items"]]

    assert await queue(keys["city_reviewer"]) == [county["id"], city["id"]]
    assert await queue(keys["city_reviewer"], tenant="510104") == [county["id"]]
    # The county's reviewer sees its own tenant's send, never its city's.
    assert await queue(keys["county_reviewer"]) == [county["id"]]
    # A sibling county and another province see nothing; naming a tenant outside is 404.
    assert await queue(keys["sibling_reviewer"]) == []
    assert await queue(keys["guizhou"]) == []
    outside = await client.get(
        "/v1/reviews", params={"tenant": "510104"}, headers=bearer(keys["guizhou"])
    )
    assert outside.status_code == 404
    # The sender's own sends are not in its queue (it may not decide them).
    assert await queue(keys["city"]) == [county["id"]]
    # A read-only key has no queue.
    refused = await client.get("/v1/reviews", headers=bearer(keys["county_reader"]))
    assert refused.status_code == 403
    item = (await client.get("/v1/reviews", headers=bearer(keys["city_reviewer"]))).json()["items"][
        0
    ]
    assert (item["tenant"], item["recipients"], item["segments"]) == ("510104", 3, 3)
    assert item["review_reason"] == "free_text"


async def test_who_may_decide(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await set_rule(client, keys["city"], "510100", rule="free_text", subtree=True)
    county = await send(client, keys["county"])
    city = await send(client, keys["city"], body="市里的通知")

    async def decide(key: str, send_id: int, how: str = "approve") -> httpx.Response:
        note = {"note": "不妥"} if how == "reject" else {}
        return await client.post(f"/v1/reviews/{send_id}/{how}", json=note, headers=bearer(key))

    # Four eyes: the sender itself may not, whatever it holds.
    own = await decide(keys["county"], county["id"])
    assert own.status_code == 403
    assert "another reviewer" in own.json()["detail"]
    assert (await decide(keys["county"], county["id"], "reject")).status_code == 403
    # A read-only key may not; a sibling, another province and a child are told it is not there.
    assert (await decide(keys["county_reader"], county["id"])).status_code == 403
    assert (await decide(keys["sibling_reviewer"], county["id"])).status_code == 404
    assert (await decide(keys["guizhou"], county["id"])).status_code == 404
    assert (await decide(keys["county_reviewer"], city["id"])).status_code == 404
    assert (await view(client, keys["city"], city["id"]))["state"] == "review"
    # A reviewer at the send's tenant may (another key of the county).
    assert (await decide(keys["county_reviewer"], county["id"])).status_code == 200
    # Decided once: a second decision is a conflict.
    assert (await decide(keys["city_reviewer"], county["id"], "reject")).status_code == 409
    # Hostile input: unknown fields, a NUL in the note, a huge note, a bad id.
    for bad in ({"note": "a\x00b"}, {"note": "x" * 501}, {"nope": 1}):
        answer = await client.post(
            f"/v1/reviews/{city['id']}/reject", json=bad, headers=bearer(keys["city_reviewer"])
        )
        assert answer.status_code in (400, 422), answer.text
    assert (await decide(keys["city_reviewer"], 2**60)).status_code == 422


# --- approve ------------------------------------------------------------------------------------


async def test_approval_times_the_send_then(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await set_rule(client, keys["county"], "510104", rule="free_text")
    now_one = await send(client, keys["county"])
    later = calendar.now() + timedelta(hours=5)
    ahead = await send(client, keys["county"], body="五小时后", send_at=calendar.rfc3339(later))
    quiet = await send(client, keys["county"], body="安静时段")
    assert {now_one["state"], ahead["state"], quiet["state"]} == {"review"}

    async with clock_moved(conn, timedelta(hours=2)):
        approved = await client.post(
            f"/v1/reviews/{now_one['id']}/approve",
            json={"note": "同意"},
            headers=bearer(keys["county_reviewer"]),
        )
        assert approved.status_code == 200, approved.text
        shown = approved.json()
        assert shown["state"] == "queued"
        # As if sent then: due two hours after it was made (the approval's clock), not then.
        waited = at(shown["due_at"]) - at(shown["created_at"])
        assert timedelta(hours=2) <= waited < timedelta(hours=2, minutes=1)
        assert shown["approved_by"].startswith("key:")
        assert at(shown["approved_at"]) - at(shown["created_at"]) == timedelta(hours=2)
        assert (shown["review_note"], shown["review_due_at"]) == ("同意", None)

        kept = await client.post(
            f"/v1/reviews/{ahead['id']}/approve", json={}, headers=bearer(keys["county_reviewer"])
        )
        assert (kept.json()["state"], kept.json()["due_at"]) == (
            "scheduled",
            calendar.rfc3339(later),
        )

        # Quiet all day now: a normal send approved now is held, as a new one would be.
        hours = {"enabled": True, "starts": "00:00", "ends": "23:59"}
        await client.put(
            "/v1/tenants/510104/quiet-hours", json=hours, headers=bearer(keys["county"])
        )
        held = await client.post(
            f"/v1/reviews/{quiet['id']}/approve", json={}, headers=bearer(keys["county_reviewer"])
        )
        assert held.json()["state"] == "held"
        assert held.json()["held_until"] is not None
    assert await audit_clean(conn) == []


async def test_keys_are_claimed_at_approval_and_a_settled_duplicate_is_released(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await set_rule(client, keys["county"], "510104", rule="free_text")
    caught = await send(client, keys["county"])
    assert await quota_of(client, keys["county"], "510104") == (3, 0)
    # Meanwhile the city sends the same notice to the first phone, and it is delivered.
    city = await send(client, keys["city"], PHONES[:1])
    await conn.execute(
        "UPDATE messages SET status = 'delivered', done_at = hub_now() WHERE send_id = $1",
        city["id"],
    )
    approved = await client.post(
        f"/v1/reviews/{caught['id']}/approve", json={}, headers=bearer(keys["county_reviewer"])
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["statuses"] == {"accepted": 2, "deduplicated": 1}
    assert approved.json()["segments"] == 2
    # The duplicate's segment went back to the county (the city's own use is the city's).
    assert (await quota_of(client, keys["county"], "510104"))[0] == 2
    holders = await conn.fetchval(
        "SELECT count(*) FROM dedup_keys d JOIN messages m ON m.id = d.message_id"
        " WHERE m.send_id = $1",
        caught["id"],
    )
    assert holders == 2
    saved = await conn.fetchval(
        "SELECT sum(segments) FROM usage_entries WHERE kind = 'dedup'"
        " AND tenant_id = (SELECT id FROM tenants WHERE code = '510104')"
    )
    assert saved == 1
    assert await audit_clean(conn) == []


# --- reject, cancel, expire ---------------------------------------------------------------------


async def test_a_rejection_needs_a_note_and_releases_the_whole_reservation(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await set_rule(client, keys["county"], "510104", rule="free_text")
    caught = await send(client, keys["county"])
    assert await quota_of(client, keys["county"], "510104") == (3, 0)
    assert await quota_of(client, keys["province"], "510000") == (0, 0)  # strict: not charged
    bare = await client.post(
        f"/v1/reviews/{caught['id']}/reject", json={}, headers=bearer(keys["county_reviewer"])
    )
    assert bare.status_code == 422
    assert bare.json()["fields"][0]["key"] == "note"
    rejected = await client.post(
        f"/v1/reviews/{caught['id']}/reject",
        json={"note": "措辞不当，请修改后重发"},
        headers=bearer(keys["county_reviewer"]),
    )
    assert rejected.status_code == 200, rejected.text
    shown = rejected.json()
    assert (shown["state"], shown["cancel_reason"]) == ("cancelled", "rejected")
    assert shown["review_note"] == "措辞不当，请修改后重发"
    assert shown["rejected_by"].startswith("key:")
    assert shown["rejected_at"] == shown["created_at"]  # the test's one transaction time
    assert shown["statuses"] == {"cancelled": 3}
    assert await quota_of(client, keys["county"], "510104") == (0, 0)
    assert await audit_clean(conn) == []
    listed = await client.get(
        "/v1/messages", params={"state": "cancelled"}, headers=bearer(keys["county"])
    )
    [item] = listed.json()["items"]
    assert (item["cancel_reason"], item["review_note"]) == ("rejected", "措辞不当，请修改后重发")
    # The sender can no longer cancel it, nor can it be approved.
    gone = await client.delete(f"/v1/messages/{caught['id']}", headers=bearer(keys["county"]))
    assert gone.status_code == 409
    again = await client.post(
        f"/v1/reviews/{caught['id']}/approve", json={}, headers=bearer(keys["city"])
    )
    assert again.status_code == 409


async def test_the_sender_may_cancel_its_send_in_review(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await set_rule(client, keys["county"], "510104", rule="free_text")
    caught = await send(client, keys["county"])
    cancelled = await client.delete(f"/v1/messages/{caught['id']}", headers=bearer(keys["county"]))
    assert cancelled.status_code == 204, cancelled.text
    shown = await view(client, keys["county"], caught["id"])
    assert (shown["state"], shown["cancel_reason"], shown["review_due_at"]) == (
        "cancelled",
        None,
        None,
    )
    assert await quota_of(client, keys["county"], "510104") == (0, 0)
    approve = await client.post(
        f"/v1/reviews/{caught['id']}/approve", json={}, headers=bearer(keys["county_reviewer"])
    )
    assert approve.status_code == 409
    assert await audit_clean(conn) == []


async def test_a_review_expires_after_the_configured_time(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await set_rule(client, keys["county"], "510104", rule="free_text")
    caught = await send(client, keys["county"])
    async with clock_moved(conn, timedelta(hours=71)):
        assert await review.expire_due(conn) == 0
    assert (await view(client, keys["county"], caught["id"]))["state"] == "review"
    async with clock_moved(conn, timedelta(hours=72, seconds=1)):
        # Overdue: not approvable even before the cron has closed it.
        overdue = await client.post(
            f"/v1/reviews/{caught['id']}/approve", json={}, headers=bearer(keys["county_reviewer"])
        )
        assert overdue.status_code == 409
        assert await review.expire_due(conn) == 1
        assert await review.expire_due(conn) == 0
    shown = await view(client, keys["county"], caught["id"])
    assert (shown["state"], shown["cancel_reason"]) == ("cancelled", "review expired")
    assert shown["statuses"] == {"cancelled": 3}
    assert await quota_of(client, keys["county"], "510104") == (0, 0)
    assert await audit_clean(conn) == []
    late = await client.post(
        f"/v1/reviews/{caught['id']}/approve", json={}, headers=bearer(keys["county_reviewer"])
    )
    assert late.status_code == 409


async def test_review_hours_is_a_setting(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    from hub.settings import load_settings

    assert load_settings({"HUB_MESSAGES__REVIEW_HOURS": "24"}).messages.review_hours == 24
    assert load_settings({}).messages.review_hours == 72


# --- urgent --------------------------------------------------------------------------------------


async def test_an_urgent_send_goes_at_once_and_is_reviewed_after_the_fact(
    conn: asyncpg.Connection, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    await set_rule(client, keys["city"], "510104", rule="free_text")
    urgent_key = await make_key(conn, "510104", SENDER | {Scope.MESSAGES_URGENT})
    flood = await send(client, urgent_key, body="紧急：山洪预警，请立即转移", priority="urgent")
    other = await send(client, urgent_key, body="紧急：道路塌方", priority="urgent")
    assert flood["state"] == "queued"
    shown = await view(client, keys["county"], flood["id"])
    assert (shown["review_after"], shown["review_reason"]) == (True, "free_text")

    async def queue(waiting: str) -> list[int]:
        got = await client.get(
            "/v1/reviews", params={"waiting": waiting}, headers=bearer(keys["county_reviewer"])
        )
        return [item["id"] for item in got.json()["items"]]

    assert await queue("review") == []
    assert await queue("after") == [flood["id"], other["id"]]
    acked = await client.post(
        f"/v1/reviews/{flood['id']}/approve", json={}, headers=bearer(keys["county_reviewer"])
    )
    assert acked.status_code == 200, acked.text
    assert acked.json()["state"] == "queued"
    assert acked.json()["approved_by"] is not None
    objected = await client.post(
        f"/v1/reviews/{other['id']}/reject",
        json={"note": "不属于紧急情况"},
        headers=bearer(keys["county_reviewer"]),
    )
    assert objected.status_code == 200, objected.text
    # An objection is recorded; what went is not unsent.
    assert objected.json()["state"] == "queued"
    assert objected.json()["review_note"] == "不属于紧急情况"
    assert await queue("after") == []
    again = await client.post(
        f"/v1/reviews/{flood['id']}/approve", json={}, headers=bearer(keys["city_reviewer"])
    )
    assert again.status_code == 409
