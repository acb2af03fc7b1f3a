"""A request that outruns HUB_DB__STATEMENT_TIMEOUT answers 503 `busy` with Retry-After, over
HTTP, and leaves nothing half-written: its transaction is undone. Here the send's statement is
held up by a lock another transaction keeps on `sends` (as a million-recipient send while the hub
delivers another million made one run past the timeout)."""

from __future__ import annotations

import asyncpg
import msgspec
from arq.connections import ArqRedis

from hub.errors import RETRY_AFTER_SLOW
from hub.settings import Settings
from tests.factories import bearer
from tests.integration.delivery.conftest import audit_clean, live_client


async def test_a_send_past_the_statement_timeout_answers_busy_and_writes_nothing(
    live_db: asyncpg.Connection, live_settings: Settings, redis: ArqRedis, county_key: str
) -> None:
    db = msgspec.structs.replace(live_settings.db, statement_timeout=0.5)
    settings = msgspec.structs.replace(live_settings, db=db)
    assert settings.db.dsn
    blocker = await asyncpg.connect(settings.db.dsn)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE sends IN ACCESS EXCLUSIVE MODE")
            async for client in live_client(settings, redis):
                resp = await client.post(
                    "/v1/messages",
                    json={"to": ["13800138000", "13800138001"], "body": "超时即撤回"},
                    headers=bearer(county_key),
                )
    finally:
        await blocker.close()
    assert resp.status_code == 503, resp.text
    assert resp.headers["Retry-After"] == str(RETRY_AFTER_SLOW)
    assert resp.json()["error"] == "busy"
    # Undone whole: no send, no message, no content key, nothing reserved.
    for table in ("sends", "messages", "dedup_keys", "quota_reservations"):
        assert await live_db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    assert await audit_clean(live_db) == []
    # Once the lock is gone the same send goes through.
    async for client in live_client(settings, redis):
        again = await client.post(
            "/v1/messages",
            json={"to": ["13800138000", "13800138001"], "body": "超时即撤回"},
            headers=bearer(county_key),
        )
    assert again.status_code == 202, again.text
    assert again.json()["counts"]["accepted"] == 2
