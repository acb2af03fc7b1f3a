"""A send caught by a review rule goes nowhere until approved (the worker finds nothing of it,
Redis holds no job), then goes through the queue, the worker and the outbox like any send; a
duplicate another tenant delivered meanwhile is not sent again, and its segment is released."""

from __future__ import annotations

import asyncpg
import httpx
from arq.connections import ArqRedis

from tenants.scopes import Scope
from tests.factories import bearer, make_key
from tests.integration.delivery.conftest import RunWorker, audit_clean, statuses

PHONES = ["13800138000", "18612345678", "13311112222"]
NOTICE = "明早八点在区委党校开会"


async def test_an_approved_send_goes_and_skips_what_was_delivered_meanwhile(
    client: httpx.AsyncClient,
    live_db: asyncpg.Connection,
    redis: ArqRedis,
    county_key: str,
    run_worker: RunWorker,
) -> None:
    ruled = await client.put(
        "/v1/tenants/510104/review-rule", json={"rule": "free_text"}, headers=bearer(county_key)
    )
    assert ruled.status_code == 200, ruled.text
    caught = await client.post(
        "/v1/messages", json={"to": PHONES, "body": NOTICE}, headers=bearer(county_key)
    )
    assert caught.json()["state"] == "review", caught.text
    send_id = caught.json()["id"]
    assert await redis.zcard("arq:queue") == 0
    # Meanwhile the city sends the same notice to the first phone; the worker delivers it and
    # finds nothing of the county's send to deliver.
    city = await make_key(live_db, "510100")
    first = await client.post(
        "/v1/messages", json={"to": PHONES[:1], "body": NOTICE}, headers=bearer(city)
    )
    assert first.json()["state"] == "queued", first.text
    await run_worker()
    assert await statuses(live_db, first.json()["id"]) == {"delivered": 1}
    assert await statuses(live_db, send_id) == {"accepted": 3}

    reviewer = await make_key(live_db, "510100", frozenset({Scope.REVIEWS_WRITE}))
    approved = await client.post(
        f"/v1/reviews/{send_id}/approve", json={}, headers=bearer(reviewer)
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "queued"
    assert await redis.zcard("arq:queue") >= 1
    worker = await run_worker()
    assert worker.jobs_failed == 0
    assert await statuses(live_db, send_id) == {"delivered": 2, "deduplicated": 1}
    sent = await live_db.fetchval("SELECT count(*) FROM outbox WHERE phone = $1", f"+86{PHONES[0]}")
    assert sent == 1  # the phone got the notice once
    reservation = await live_db.fetchrow(
        "SELECT status::text AS status, amount, used_part, released_part FROM quota_reservations"
        " WHERE cause = $1",
        f"send:{send_id}",
    )
    assert reservation is not None
    assert dict(reservation) == {
        "status": "posted",
        "amount": 3,
        "used_part": 2,
        "released_part": 1,
    }
    assert await audit_clean(live_db) == []
