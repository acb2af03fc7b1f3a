"""Anniversary greetings: the right people, the right text, the right minute, once a year."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import httpx
import pytest

from hub.calendar import BUSINESS_TZ, period_of
from hub.campaigns import jobs as campaigns
from hub.db import SingleConnectionDatabase
from hub.settings import Settings
from tests.factories import bearer, grant, make_key, make_small_tree

ROSTER = (
    "姓名,手机,标签,入党日期\n"
    "张三,13800138000,书记,2001-02-28\n"
    "李四,18612345678,,2020-02-29\n"  # a leap-day joiner
    "王五,13311112222,书记,1990-03-01\n"
    "赵六,19212345678,书记,2027-02-28\n"  # joined today: no anniversary yet
)
GREETING = "{name}同志：今天是您入党{years}周年纪念日。"


def shanghai(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BUSINESS_TZ)


@pytest.fixture
async def campaign(conn: asyncpg.Connection, client: httpx.AsyncClient) -> tuple[str, int]:
    await make_small_tree(conn)
    await grant(
        conn,
        {"000000": 1000, "510000": 500, "510100": 300, "510104": 100},
        period_of(shanghai(2027, 2, 28, 9, 0)),
    )
    county = await make_key(conn, "510104")
    city = await make_key(conn, "510100")
    imported = await client.post(
        "/v1/contacts/import", content=ROSTER.encode(), headers=bearer(county)
    )
    assert imported.json()["created"] == 4
    template = (
        await client.post(
            "/v1/templates", json={"name": "入党纪念日", "body": GREETING}, headers=bearer(county)
        )
    ).json()
    early = await client.post(
        "/v1/campaigns",
        json={"kind": "anniversary", "field": "joined_on", "template": template["id"]},
        headers=bearer(county),
    )
    assert early.status_code == 409  # the template is not approved yet
    await client.post(
        f"/v1/templates/{template['id']}/review", json={"decision": "approve"}, headers=bearer(city)
    )
    made = await client.post(
        "/v1/campaigns",
        json={
            "kind": "anniversary",
            "field": "joined_on",
            "template": template["id"],
            "send_time": "09:00",
        },
        headers=bearer(county),
    )
    assert made.status_code == 201, made.text
    return county, made.json()["id"]


async def _texts(conn: asyncpg.Connection) -> list[str]:
    """The greetings' own texts, as they go (a greeting's send carries the template)."""
    return [r["body"] for r in await conn.fetch("SELECT body FROM messages ORDER BY id")]


async def test_greets_on_the_day_at_the_minute_once(
    conn: asyncpg.Connection, campaign: tuple[str, int], settings: Settings
) -> None:
    assert (
        await campaigns.run_due(
            SingleConnectionDatabase(conn), settings, shanghai(2027, 2, 28, 8, 59)
        )
        == 0
    )
    assert (
        await campaigns.run_due(
            SingleConnectionDatabase(conn), settings, shanghai(2027, 2, 28, 9, 0)
        )
        == 2
    )
    assert sorted(await _texts(conn)) == sorted(
        [
            "张三同志：今天是您入党26周年纪念日。",
            "李四同志：今天是您入党7周年纪念日。",  # 29 February → 28 February in 2027
        ]
    )
    assert (
        await campaigns.run_due(
            SingleConnectionDatabase(conn), settings, shanghai(2027, 2, 28, 9, 1)
        )
        == 0
    )
    assert await conn.fetchval("SELECT count(*) FROM campaign_deliveries") == 2
    # The day's greetings are one send, each phone with its own text.
    sends = [f"send:{r['id']}" for r in await conn.fetch("SELECT id FROM sends ORDER BY id")]
    assert len(sends) == 1
    # The log has the campaign made by its key, and the greetings sent by the campaign.
    logged = await conn.fetch("SELECT actor, action, object FROM operation_log ORDER BY id")
    assert [(r["actor"], r["action"], r["object"]) for r in logged[-2:]] == [
        (logged[-2]["actor"], "campaign.create", f"campaign:{campaign[1]}"),
        (f"system:campaign:{campaign[1]}", "send.create", sends[0]),
    ]
    assert logged[-2]["actor"] == f"key:{campaign[0].split('_')[1]}"


async def test_greetings_the_quota_cannot_take_together_go_one_by_one(
    conn: asyncpg.Connection, campaign: tuple[str, int], settings: Settings
) -> None:
    # Room for one greeting, not for the day's two in one send: one goes, one waits.
    await grant(conn, {"510104": 1}, period_of(shanghai(2027, 2, 28, 9, 0)))
    db = SingleConnectionDatabase(conn)
    assert await campaigns.run_due(db, settings, shanghai(2027, 2, 28, 9, 0)) == 1
    assert await _texts(conn) == ["张三同志：今天是您入党26周年纪念日。"]
    # The next run, with room again, greets the other one, and nobody twice.
    await grant(conn, {"510104": 100}, period_of(shanghai(2027, 2, 28, 9, 0)))
    assert await campaigns.run_due(db, settings, shanghai(2027, 2, 28, 9, 1)) == 1
    assert sorted(await _texts(conn)) == sorted(
        ["张三同志：今天是您入党26周年纪念日。", "李四同志：今天是您入党7周年纪念日。"]
    )
    assert await campaigns.run_due(db, settings, shanghai(2027, 2, 28, 9, 2)) == 0


async def test_leap_years_greet_leap_day_joiners_on_their_day(
    conn: asyncpg.Connection, campaign: tuple[str, int], settings: Settings
) -> None:
    await grant(
        conn,
        {"000000": 1000, "510000": 500, "510100": 300, "510104": 100},
        period_of(shanghai(2028, 2, 28, 9, 0)),
    )
    # 张三, and 赵六 a year on; not 李四, whose own day 2028 has.
    assert (
        await campaigns.run_due(
            SingleConnectionDatabase(conn), settings, shanghai(2028, 2, 28, 9, 0)
        )
        == 2
    )
    assert (
        await campaigns.run_due(
            SingleConnectionDatabase(conn), settings, shanghai(2028, 2, 29, 9, 0)
        )
        == 1
    )  # 李四


async def test_tags_limit_who_is_greeted_and_stopping_stops(
    conn: asyncpg.Connection,
    client: httpx.AsyncClient,
    campaign: tuple[str, int],
    settings: Settings,
) -> None:
    county, campaign_id = campaign
    stopped = await client.delete(f"/v1/campaigns/{campaign_id}", headers=bearer(county))
    assert stopped.status_code == 204
    template = await conn.fetchval("SELECT template_id FROM campaigns WHERE id = $1", campaign_id)
    secretaries = await client.post(
        "/v1/campaigns",
        json={
            "kind": "anniversary",
            "field": "joined_on",
            "template": template,
            "to_tags": ["书记"],
        },
        headers=bearer(county),
    )
    assert secretaries.status_code == 201
    listing = (await client.get("/v1/campaigns", headers=bearer(county))).json()["items"]
    assert [(c["id"], c["active"]) for c in listing] == [
        (campaign_id, False),
        (secretaries.json()["id"], True),
    ]
    assert (
        await campaigns.run_due(
            SingleConnectionDatabase(conn), settings, shanghai(2027, 2, 28, 10, 0)
        )
        == 1
    )  # 张三


async def test_a_contact_the_send_rejects_is_not_counted_greeted_and_is_tried_again(
    conn: asyncpg.Connection, campaign: tuple[str, int], settings: Settings
) -> None:
    # A third one celebrating today whose name would forge a signature: rejected on its own.
    await conn.execute(
        "INSERT INTO contacts (tenant_id, phone, name, joined_on)"
        " SELECT id, '+8613900139000', '【假】', '2001-02-28' FROM tenants WHERE code = '510104'"
    )
    db = SingleConnectionDatabase(conn)
    assert await campaigns.run_due(db, settings, shanghai(2027, 2, 28, 9, 0)) == 2
    assert await conn.fetchval("SELECT count(*) FROM campaign_deliveries") == 2
    assert await campaigns.run_due(db, settings, shanghai(2027, 2, 28, 9, 1)) == 0
    assert await conn.fetchval("SELECT count(*) FROM campaign_deliveries") == 2
    # Each run's send to it alone was undone: the two greetings' one send stays.
    assert await conn.fetchval("SELECT count(*) FROM sends WHERE actor LIKE 'campaign:%'") == 1
