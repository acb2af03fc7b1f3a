"""quota_take (hub/quota/sql/take.sql) tries a reservation again itself when PostgreSQL makes it
a deadlock's victim: no savepoint round trips from the client, and nothing of the failed try is
left. A real deadlock between two real connections."""

from __future__ import annotations

import asyncio

import asyncpg

from hub.quota import service as quota
from hub.quota.schemas import Reservation
from tenants.service import get_by_code
from tests.factories import grant, make_small_tree
from tests.integration.delivery.conftest import eventually

CHAIN = ["000000", "510000", "510100", "510104"]


async def _account(conn: asyncpg.Connection, code: str) -> int:
    account: int = await conn.fetchval(
        "SELECT a.id FROM quota_accounts a JOIN tenants t ON t.id = a.tenant_id WHERE t.code = $1",
        code,
    )
    return account


async def test_a_reservation_that_loses_a_deadlock_is_done_again(fresh_db: str) -> None:
    setup = await asyncpg.connect(fresh_db)
    try:
        await make_small_tree(setup)
        # Pooled ancestors: a reservation locks the whole chain, root first.
        await grant(setup, dict.fromkeys(CHAIN, 1000), policy="pooled")
        root, county = await _account(setup, "000000"), await _account(setup, "510104")
        tenant = await get_by_code(setup, "510104")
        assert tenant is not None
    finally:
        await setup.close()

    sender, other = await asyncpg.connect(fresh_db), await asyncpg.connect(fresh_db)
    try:
        # PostgreSQL looks for a deadlock once, deadlock_timeout after a backend began to wait:
        # the sender looks when both wait (2 s after it began, the other's wait begins within
        # a poll of that) and finds it, so its try is the victim; the other would look in 60 s.
        await sender.execute("SET deadlock_timeout = '2s'")
        await other.execute("SET deadlock_timeout = '60s'")
        async with other.transaction():
            # The other takes the county's row, out of the root-first order...
            await other.execute("SELECT 1 FROM quota_accounts WHERE id = $1 FOR UPDATE", county)

            async def send() -> Reservation:
                async with sender.transaction():
                    return await quota.reserve(sender, tenant, 5, "send:1", "test", ttl_seconds=60)

            sending = asyncio.create_task(send())
            # ...the sender locks the root, the province, the city and waits for the county...
            waiting = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1"
            pid = sender.get_server_pid()
            await eventually(lambda: other.fetchval(waiting, pid), every=0.01)
            # ...and the other then waits for the root: a deadlock, which the sender loses.
            await other.execute("SELECT 1 FROM quota_accounts WHERE id = $1 FOR UPDATE", root)
            assert not sending.done()  # tried again: waiting for the root now
        reservation = await sending
    finally:
        await sender.close()
        await other.close()

    check = await asyncpg.connect(fresh_db)
    try:
        assert reservation.amount == 5
        reservations = await check.fetch("SELECT id, amount FROM quota_reservations")
        assert [(r["id"], r["amount"]) for r in reservations] == [(reservation.id, 5)]
        reserved = await check.fetch(
            "SELECT t.code, a.reserved FROM quota_accounts a JOIN tenants t ON t.id = a.tenant_id"
            " WHERE t.code = ANY($1::text[])",
            CHAIN,
        )
        assert {r["code"]: r["reserved"] for r in reserved} == dict.fromkeys(CHAIN, 5)
        entries = await check.fetchval("SELECT count(*) FROM quota_entries WHERE kind = 'reserve'")
        assert entries == len(CHAIN)  # one per account: nothing of the failed try
    finally:
        await check.close()
