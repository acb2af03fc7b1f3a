"""Two console uploads of one unit at once: the second is refused while the first holds the
unit's lock (not queued on it, holding a pooled connection), so the cap of held uploads holds
under concurrency too."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import pytest

from hub.contacts import service as contacts
from hub.errors import TooManyRequests
from tenants import service as tenants
from tenants.service import authenticate
from tests.factories import make_key, make_small_tree

pytestmark = pytest.mark.concurrency


async def test_a_unit_holds_no_more_uploads_than_its_cap_under_concurrency(fresh_db: str) -> None:
    setup = await asyncpg.connect(fresh_db)
    first = await asyncpg.connect(fresh_db)
    second = await asyncpg.connect(fresh_db)
    try:
        await make_small_tree(setup)
        who = await authenticate(setup, await make_key(setup, "510104"))
        assert who is not None
        tenant = await tenants.own(setup, who)
        people = [
            msgspec.structs.replace(who, key_id=None, key_prefix=None, user_id=n, login=f"u{n}")
            for n in range(contacts.UPLOADS_HELD + 1)
        ]
        for person in people[: contacts.UPLOADS_HELD - 1]:  # one place is left
            await contacts.hold_upload(setup, person, tenant, "a.csv", b"x")
        one = first.transaction()
        await one.start()
        await contacts.hold_upload(first, people[-2], tenant, "b.csv", b"x")  # takes it
        two = second.transaction()
        await two.start()
        with pytest.raises(TooManyRequests, match="正在保存"):  # not waited for: refused at once
            await asyncio.wait_for(
                contacts.hold_upload(second, people[-1], tenant, "c.csv", b"x"), 30
            )
        await two.rollback()
        await one.commit()
        with pytest.raises(TooManyRequests, match="等待确认"):  # and now the cap is reached
            async with second.transaction():
                await contacts.hold_upload(second, people[-1], tenant, "c.csv", b"x")
        held = await setup.fetchval("SELECT count(*) FROM roster_uploads")
        assert held == contacts.UPLOADS_HELD
    finally:
        for conn in (setup, first, second):
            await conn.close()
