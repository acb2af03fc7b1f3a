"""Two first fetches of a closed month at once store one copy, and both answer it: the second
rendered a different month (a late reply committed between the two readings), and still gets
the first's bytes, because it stores with ON CONFLICT DO NOTHING and reads back."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from hub.archive import service as archive
from hub.settings import Settings
from tenants import service as tenants
from tests.integration.archive.conftest import CLOSED, CLOSED_10, PHONES, close, make_month, reply
from tests.integration.delivery.conftest import eventually

pytestmark = pytest.mark.concurrency


async def test_concurrent_first_fetches_store_one_copy(fresh_db: str, settings: Settings) -> None:
    setup = await asyncpg.connect(fresh_db)
    first = await asyncpg.connect(fresh_db)
    second = await asyncpg.connect(fresh_db)
    try:
        async with setup.transaction():
            month = await make_month(setup, settings)
            await close(setup, CLOSED)
        county = await tenants.get_by_code(setup, "510104")
        assert county is not None
        one = first.transaction()
        await one.start()
        stored_first = await archive.month_files(first, settings, county, CLOSED, subtree=False)
        # A late reply commits before the second reads: its rendering differs.
        await reply(setup, month.notice, PHONES[1], "2 请假", CLOSED_10 + timedelta(days=30))
        two = second.transaction()
        await two.start()
        fetching = asyncio.create_task(
            archive.month_files(second, settings, county, CLOSED, subtree=False)
        )
        # It reads, renders, and then waits for the first's uncommitted rows.
        waiting = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1"
        pid = second.get_server_pid()
        await eventually(lambda: setup.fetchval(waiting, pid))
        assert not fetching.done()
        await one.commit()
        stored_second = await asyncio.wait_for(fetching, 30)
        await two.commit()
        for kind in ("html", "xlsx"):
            assert stored_second[kind].data == stored_first[kind].data, kind
        assert "2 请假" not in stored_first["html"].data.decode()
        rows = await setup.fetchval("SELECT count(*) FROM archive_files")
        assert rows == 2
    finally:
        for conn in (setup, first, second):
            await conn.close()
