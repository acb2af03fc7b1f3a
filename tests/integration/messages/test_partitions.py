"""Messages partitioned by month (migration 0038): ids carry their month, partitions are made
ahead, and the API's and the worker's queries over messages scan one partition (EXPLAIN)."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import pytest

from hub.db import SingleConnectionDatabase
from hub.delivery import repository as delivery_sql
from hub.messages import months
from hub.messages import repository as messages_sql
from tests.factories import make_small_tree
from tests.integration.messages.months import month_start, send_at

PHONES = [f"+86138{n:08d}" for n in range(6)]
# A scan of one partition in a plan: "Seq Scan on messages_2027_03 m_1", "Index Scan using … on
# messages_default messages_2". (An UPDATE lists every partition as a target ("Update on …");
# only its scans read one.)
PARTITION_SCAN = re.compile(r"Scan (?:using \S+ )?on (messages_(?:\d{4}_\d{2}|before|default))\b")


async def _tenant(conn: asyncpg.Connection) -> int:
    await make_small_tree(conn)
    tenant_id: int = await conn.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    return tenant_id


async def _four_months(conn: asyncpg.Connection) -> list[int]:
    """Partitions for this month and the next three, and a send in each; the sends."""
    await months.make_ahead(SingleConnectionDatabase(conn), month_start(0), 3)
    tenant_id = await _tenant(conn)
    return [
        await send_at(conn, tenant_id, month_start(k).replace(day=10), PHONES, ("accepted", "sent"))
        for k in range(4)
    ]


async def test_a_message_id_carries_its_month_and_lands_in_its_partition(
    conn: asyncpg.Connection,
) -> None:
    sends = await _four_months(conn)
    rows = await conn.fetch(
        "SELECT send_id, id, tableoid::regclass::text AS part FROM messages"
        " WHERE send_id = ANY($1::bigint[]) ORDER BY id",
        sends,
    )
    assert len(rows) == 4 * len(PHONES)
    for k, send_id in enumerate(sends):
        index = months.month_index(month_start(k))
        mine = [r for r in rows if r["send_id"] == send_id]
        assert {r["part"] for r in mine} == {months.partition_name(index)}
        assert {r["id"] >> 40 for r in mine} == {index}
    # Later months, larger ids; all of them JSON-safe.
    assert [r["send_id"] for r in rows] == sorted(r["send_id"] for r in rows)
    assert max(r["id"] for r in rows) < 2**53


async def test_a_month_without_its_partition_waits_in_default_and_moves_when_it_is_made(
    conn: asyncpg.Connection,
) -> None:
    tenant_id = await _tenant(conn)
    later = month_start(7)
    name = months.partition_name(months.month_index(later))
    assert await conn.fetchval("SELECT to_regclass($1)", name) is None
    send_id = await send_at(conn, tenant_id, later, PHONES)
    parts = "SELECT DISTINCT tableoid::regclass::text FROM messages WHERE send_id = $1"
    assert [r[0] for r in await conn.fetch(parts, send_id)] == ["messages_default"]

    made = await months.make_ahead(SingleConnectionDatabase(conn), later, 0)

    assert made == [name]
    assert [r[0] for r in await conn.fetch(parts, send_id)] == [name]
    assert await conn.fetchval("SELECT count(*) FROM messages WHERE send_id = $1", send_id) == 6
    # Made once: a second run makes nothing.
    assert await months.make_ahead(SingleConnectionDatabase(conn), later, 0) == []


class _Undo(Exception):
    """Raised to roll back the savepoint an EXPLAIN ANALYZE of a write ran in."""


def _literal(value: Any) -> str:
    """An SQL literal of a test argument (numbers, plain strings, lists of them, None)."""
    if value is None:
        return "NULL"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return _literal("{" + ",".join(f'"{v}"' for v in value) + "}")
    return "'" + str(value).replace("'", "''") + "'"


async def _scanned(
    conn: asyncpg.Connection, query: str, args: tuple[Any, ...], generic: bool
) -> list[str]:
    """The partitions of `messages` a query's plan executes a scan of (EXPLAIN ANALYZE: pruned
    ones are gone from the plan, or shown "never executed"). `generic`: planned once for any
    parameters, as asyncpg's prepared statements may be."""
    lines: list[str] = []
    try:
        async with conn.transaction():
            if generic:
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                await conn.execute(f"PREPARE under_test AS {query}")
                # EXECUTE takes no protocol parameters: its arguments are written out.
                values = ", ".join(_literal(a) for a in args)
                explain, params = f"EXECUTE under_test({values})", ()
            else:
                explain, params = query, args
            plan = await conn.fetch(
                f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {explain}", *params
            )
            lines = [r[0] for r in plan]
            if generic:
                await conn.execute("DEALLOCATE under_test")
            raise _Undo
    except _Undo:
        pass
    return [
        match.group(1)
        for line in lines
        if "never executed" not in line and (match := PARTITION_SCAN.search(line))
    ]


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
async def test_the_api_and_worker_queries_scan_one_partition(
    conn: asyncpg.Connection, generic: bool
) -> None:
    sends = await _four_months(conn)
    target = sends[2]
    part = months.partition_name(months.month_index(month_start(2)))
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM messages WHERE send_id = $1", target)]
    accepted = [
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM messages WHERE send_id = $1 AND status = 'accepted' ORDER BY id",
            target,
        )
    ]
    path = await conn.fetchval("SELECT path FROM tenants WHERE code = '510104'")
    n = len(ids)
    bounds = delivery_sql.bounds(ids)
    queries: dict[str, tuple[str, tuple[Any, ...]]] = {
        # The API: a send's counts, its message list page, its results file.
        "send's counts": (messages_sql.STATUS_COUNTS, (target,)),
        "send's message page": (
            messages_sql.MESSAGES_PAGE,
            (target, 0, 50, None, path, None, None),
        ),
        "results file": (messages_sql.RESULTS, (target, 0, None, 1000)),
        "cancel": (messages_sql.CANCEL_MESSAGES, (target,)),
        "approve: what goes": (messages_sql.TO_GO, (target,)),
        "archive counts": (messages_sql.ARCHIVE_COUNTS, ([target],)),
        # The worker: batches, claim, outcomes by ids, the sweeper's checks by send.
        "batches": (delivery_sql.BATCHES, (target, 500, 0.0)),
        "claim": (
            delivery_sql.CLAIM,
            (target, "中国移动", accepted[0], accepted[-1], "outbox", 30.0, 100, True),
        ),
        "record sent (ids)": (
            delivery_sql.RECORD_SENT,
            (ids, [f"r{i}" for i in ids], [0] * n, [""] * n, [0] * n, *bounds),
        ),
        "record final (ids)": (
            delivery_sql.RECORD_FINAL,
            (ids, "failed", [""] * n, [0] * n, *bounds),
        ),
        "record retry (ids)": (
            delivery_sql.RECORD_RETRY,
            (ids, [month_start(2)] * n, [""] * n, [0] * n, *bounds),
        ),
        "mark submitted (ids)": (delivery_sql.MARK_SUBMITTED, (ids, [0] * n, *bounds)),
        "close unknown (ids)": (
            delivery_sql.CLOSE_UNKNOWN,
            (ids, [0] * n, [""] * n, [0] * n, *bounds),
        ),
        "early receipts (ids)": (delivery_sql.TAKE_UNMATCHED, ("outbox", ids, *bounds)),
        "still sending (ids array)": (delivery_sql.ANY_STILL_SENDING, (ids, *bounds)),
        "texts forgotten (ids)": (delivery_sql.FORGET_TEXTS, (ids, *bounds)),
        "outbox reported (ids)": (delivery_sql.OUTBOX_REPORTED, (ids, *bounds)),
        "outbox reference (ids)": (delivery_sql.OUTBOX_KNOWN_REFERENCE, (ids, *bounds)),
        "open messages": (delivery_sql.OPEN_MESSAGES, (target,)),
        "expired leases": (delivery_sql.EXPIRED_LEASES, (target, ["outbox"])),
        "by id": ("SELECT id, status FROM messages WHERE id = $1", (ids[0],)),
    }
    # The outbox's queued receipts for them: its report's join then reads the messages (with
    # none queued, it reads no partition at all whichever way it is planned).
    await conn.execute(
        "INSERT INTO outbox_pending (message_id, gateway) SELECT unnest($1::bigint[]), 'outbox'",
        ids,
    )
    for name, (query, args) in queries.items():
        scanned = await _scanned(conn, query, args, generic)
        assert set(scanned) == {part}, (name, scanned)


async def test_receipt_match_probes_each_partition_by_index(conn: asyncpg.Connection) -> None:
    """A receipt names the gateway's reference, not the message: the month it was written in is
    unknown (a send may wait for months: scheduled, parked, in review), so the match looks the
    reference up in `message_references` (one index, whatever the months), then the message by
    its id, and reads no table in full."""
    await _four_months(conn)
    async with conn.transaction():
        # Whether each partition has the index to probe, whatever its statistics say (a month
        # just made, never analyzed, is as cheap to read whole): only a partition without it
        # still shows a sequential scan.
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN (COSTS OFF) " + delivery_sql.APPLY_RECEIPTS,
                "outbox",
                ["ref-x"],
                ["delivered"],
                [""],
                72 * 3600.0,
            )
        )
    assert "Seq Scan on messages_" not in plan, plan
    assert "message_references_held" in plan, plan


async def test_statements_over_message_ids_call_no_function_per_row(
    conn: asyncpg.Connection,
) -> None:
    """The worker's writes over a chunk's ids prune on plain bounds ($n::bigint), not on SQL
    functions of the id array: planned generically (as asyncpg's prepared statements are after
    a few runs), such a function is not folded and runs once per row (hub_least_id did, ≈ 3.5
    times per delivered message: a third of PostgreSQL's time in the outbox benchmark)."""
    sends = await _four_months(conn)
    ids = [
        r["id"] for r in await conn.fetch("SELECT id FROM messages WHERE send_id = $1", sends[2])
    ]
    n, bounds = len(ids), delivery_sql.bounds(ids)
    statements: list[tuple[str, tuple[Any, ...]]] = [
        (delivery_sql.MARK_SUBMITTED, (ids, [0] * n, *bounds)),
        (
            delivery_sql.RECORD_SENT,
            (ids, [f"r{i}" for i in ids], [0] * n, [""] * n, [0] * n, *bounds),
        ),
        (delivery_sql.RECORD_FINAL, (ids, "failed", [""] * n, [0] * n, *bounds)),
        (delivery_sql.CLOSE_UNKNOWN, (ids, [0] * n, [""] * n, [0] * n, *bounds)),
        (delivery_sql.TAKE_UNMATCHED, ("outbox", ids, *bounds)),
        (delivery_sql.ANY_STILL_SENDING, (ids, *bounds)),
        (delivery_sql.FORGET_TEXTS, (ids, *bounds)),
        (delivery_sql.OUTBOX_REPORTED, (ids, *bounds)),
        (delivery_sql.OUTBOX_KNOWN_REFERENCE, (ids, *bounds)),
    ]
    await conn.execute("SET LOCAL track_functions = 'all'")
    await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    calls = "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions"
    for query, args in statements:
        before = await conn.fetchval(calls)
        await conn.fetch(query, *args)
        assert await conn.fetchval(calls) - before <= 1, query
