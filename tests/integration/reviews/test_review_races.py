"""Concurrent decisions on one send in review: approve, reject and its sender's cancel race,
exactly one wins, the others are told 409, and the quota ledger stays whole.

Real parallel requests through the app on a pool of connections against a committed database;
the race is made certain, not hoped for: a test connection holds the send's row while the
requests start, so every one of them is waiting on it when it is let go."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from arq.connections import ArqRedis

from hub import calendar
from hub.app import create_app
from hub.db import PoolDatabase
from hub.quota import service as quota
from hub.settings import Settings
from tenants.scopes import Scope
from tests.factories import bearer, grant, make_key, make_small_tree

REVIEWER = frozenset({Scope.REVIEWS_WRITE, Scope.MESSAGES_READ})
PHONES = ["13800138001", "13800138002", "13800138003"]


@pytest.fixture
async def client(
    fresh_db: str, redis: ArqRedis, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    pool = await asyncpg.create_pool(fresh_db, min_size=4, max_size=8)
    app = create_app(settings, db=PoolDatabase(pool), redis=redis)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI typing differs
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as c:
            yield c
    finally:
        await pool.close()


async def _waiting_on_locks(conn: asyncpg.Connection, n: int) -> None:
    for _ in range(500):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        )
        if waiting >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{n} requests never waited on the send's row")


async def test_approve_reject_and_cancel_of_one_send_exactly_one_wins(
    fresh_db: str, client: httpx.AsyncClient
) -> None:
    conn = await asyncpg.connect(fresh_db)
    try:
        await make_small_tree(conn)
        await grant(conn, {"000000": 1000, "510000": 500, "510100": 300, "510104": 100})
        sender = await make_key(conn, "510104")
        reviewers = [await make_key(conn, "510100", REVIEWER) for _ in range(2)]
        ruled = await client.put(
            "/v1/tenants/510104/review-rule", json={"rule": "free_text"}, headers=bearer(sender)
        )
        assert ruled.status_code == 200, ruled.text
        outcomes: list[str] = []
        for round_ in range(4):
            sent = await client.post(
                "/v1/messages",
                json={"to": PHONES, "body": f"第{round_}号通知"},
                headers=bearer(sender),
            )
            assert sent.json()["state"] == "review", sent.text
            send_id = sent.json()["id"]
            holder = conn.transaction()
            await holder.start()
            await conn.execute("SELECT 1 FROM sends WHERE id = $1 FOR UPDATE", send_id)
            racing = asyncio.gather(
                client.post(
                    f"/v1/reviews/{send_id}/approve", json={}, headers=bearer(reviewers[0])
                ),
                client.post(
                    f"/v1/reviews/{send_id}/reject",
                    json={"note": "不妥"},
                    headers=bearer(reviewers[1]),
                ),
                client.delete(f"/v1/messages/{send_id}", headers=bearer(sender)),
            )
            watcher = await asyncpg.connect(fresh_db)
            try:
                await _waiting_on_locks(watcher, 3)
            finally:
                await watcher.close()
            await holder.rollback()
            approve, reject, cancel = await racing
            codes = [approve.status_code, reject.status_code, cancel.status_code]
            assert sorted(codes) in ([200, 409, 409], [204, 409, 409]), [
                r.text for r in (approve, reject, cancel)
            ]
            row = await conn.fetchrow(
                "SELECT state::text AS state, cancel_reason FROM sends WHERE id = $1", send_id
            )
            assert row is not None
            state, reason = row["state"], row["cancel_reason"]
            reserved = await conn.fetchval(
                "SELECT amount - used_part - released_part FROM quota_reservations"
                " WHERE cause = $1 AND status = 'pending'",
                f"send:{send_id}",
            )
            if approve.status_code == 200:
                assert (state, reserved) == ("queued", 3)
                outcomes.append("approved")
            else:
                winner = "rejected" if reject.status_code == 200 else None
                assert (state, reason, reserved) == ("cancelled", winner, None)
                outcomes.append(winner or "cancelled")
        assert (await quota.audit(conn, calendar.current_period()))[1] == []
        assert len(outcomes) == 4
    finally:
        await conn.close()
