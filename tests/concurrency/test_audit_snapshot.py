"""`hub audit quota` while work is in flight: a settlement committed halfway through the audit's
reads is not a mismatch. The audit's connection is made to wait between two of its reads (a lock
another session holds) while that session settles a reservation and commits."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from hub import calendar
from hub.quota import service as quota
from tenants.service import get_by_code
from tests.factories import grant, make_small_tree

pytestmark = pytest.mark.concurrency


async def _until_waiting(conn: asyncpg.Connection, pid: int) -> None:
    """Until session `pid` waits for a lock (another session's lock wait offers nothing to
    await)."""
    while True:
        if await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)", pid
        ):
            return
        await asyncio.sleep(0.01)


async def test_an_audit_reads_one_moment_while_a_settlement_commits(fresh_db: str) -> None:
    period = calendar.current_period()
    setup = await asyncpg.connect(fresh_db)
    auditor = await asyncpg.connect(fresh_db)
    try:
        await make_small_tree(setup)
        await grant(setup, {"000000": 1000, "510000": 500, "510100": 300, "510104": 100}, period)
        county = await get_by_code(setup, "510104")
        assert county is not None
        held = await quota.reserve(setup, county, 10, "send:1", "t", ttl_seconds=3600)
        assert await quota.audit(setup, period) == (4, [])

        # The settling session holds the reservations' table, so the audit's read of it waits
        # after the audit has read the accounts.
        settling = setup.transaction()
        await settling.start()
        await setup.execute("LOCK TABLE quota_reservations IN ACCESS EXCLUSIVE MODE")
        auditing = asyncio.create_task(quota.audit(auditor, period))
        await _until_waiting(setup, auditor.get_server_pid())
        await quota.settle_parts(setup, {held.id: (6, 0)}, "t")
        await settling.commit()

        checked, problems = await auditing
        assert (checked, problems) == (4, [])
        assert await quota.audit(auditor, period) == (4, [])  # and after it, the settled state
    finally:
        await auditor.close()
        await setup.close()
