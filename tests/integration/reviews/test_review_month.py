"""A send approved in a later month than it was made in is charged to the month it goes in,
as a send made then would be; the month it was reserved in gets its segments back."""

from __future__ import annotations

from datetime import date, timedelta

import asyncpg
import httpx
import msgspec
import pytest

from hub import calendar
from hub.calendar import period_text
from hub.quota import service as quota
from hub.settings import Settings
from tests.factories import bearer, grant, make_key, make_small_tree
from tests.integration.reviews.test_send_review import REVIEWER, clock_moved

LIMITS = {"000000": 1000, "510000": 500, "510100": 300, "510104": 100}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Reviews that wait a month."""
    messages = msgspec.structs.replace(settings.messages, review_hours=24 * 30)
    return msgspec.structs.replace(settings, messages=messages)


async def test_approved_next_month_it_is_charged_to_next_month(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await make_small_tree(conn)
    this = calendar.current_period()
    following = calendar.next_period(this)
    await grant(conn, LIMITS, this)
    await grant(conn, LIMITS, following)
    county = await make_key(conn, "510104")
    reviewer = await make_key(conn, "510100", REVIEWER)
    await client.put(
        "/v1/tenants/510104/review-rule", json={"rule": "free_text"}, headers=bearer(county)
    )
    sent = await client.post(
        "/v1/messages",
        json={"to": ["13800138001", "13800138002"], "body": "下月初开会"},
        headers=bearer(county),
    )
    assert sent.json()["state"] == "review", sent.text

    async def reserved(month: date) -> tuple[int, int]:
        got = await client.get(
            f"/v1/tenants/510104/quota/{period_text(month)}", headers=bearer(county)
        )
        return got.json()["reserved"], got.json()["used"]

    assert await reserved(this) == (2, 0)
    into_next = calendar.day_start(following) + timedelta(hours=10) - calendar.now()
    async with clock_moved(conn, into_next):
        approved = await client.post(
            f"/v1/reviews/{sent.json()['id']}/approve", json={}, headers=bearer(reviewer)
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["state"] == "queued"
        assert await reserved(this) == (0, 0)
        assert await reserved(following) == (2, 0)
        for month in (this, following):
            assert (await quota.audit(conn, month))[1] == []
