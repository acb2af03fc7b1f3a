"""Retention, the messages' step (hub.messages.retention.erase_old): a year of generated
months, then whole months dropped, phones and bodies erased before the cutoff and kept after,
the sends' counts, usage and the quota audit unchanged; the dry run changes nothing."""

from __future__ import annotations

import asyncpg

from hub import calendar
from hub.billing import service as billing
from hub.db import SingleConnectionDatabase
from hub.messages import months
from hub.messages import service as messages
from hub.messages.retention import erase_old
from hub.quota import service as quota
from hub.retention.schemas import Gone, Policy
from hub.settings import Settings
from tests.factories import make_small_tree
from tests.integration.messages.months import month_start, send_at

PHONES = [f"+86139{n:08d}" for n in range(5)]
STATUSES = ("delivered", "undelivered", "failed")
MONTHS = 12
# A closed month's statement lines, as they are stored.
STATEMENT = "SELECT * FROM billing_lines WHERE period = $1 ORDER BY tenant_id, carrier, origin"


class Year:
    def __init__(self, a: int, b: int, sends: dict[tuple[int, int], int]) -> None:
        self.a, self.b, self.sends = a, b, sends


async def _a_year(conn: asyncpg.Connection) -> Year:
    """A send of each of two counties (510104, 510105) on the 10th of each of twelve months,
    from the clock's month on, with usage recorded for their days."""
    await make_small_tree(conn)
    await months.make_ahead(SingleConnectionDatabase(conn), month_start(0), MONTHS - 1)
    a = await conn.fetchval("SELECT id FROM tenants WHERE code = '510104'")
    b = await conn.fetchval("SELECT id FROM tenants WHERE code = '510105'")
    sends = {}
    for k in range(MONTHS):
        day = month_start(k).replace(day=10, hour=9)
        for tenant in (a, b):
            sends[tenant, k] = await send_at(conn, tenant, day, PHONES, STATUSES)
            await billing.record_usage(
                conn, "billable", {(tenant, "中国移动", day.date()): 2 * len(PHONES)}
            )
    await billing.roll_up(conn)
    return Year(a, b, sends)


def _policy(year_cut: int, b: int | None = None, b_cut: int = 0) -> Policy:
    """Cutoffs on the 20th of months `year_cut` (everyone) and `b_cut` (tenant b's own)."""
    cut = month_start(year_cut).replace(day=20)
    return Policy(
        now=month_start(MONTHS).replace(day=15),
        messages_before=cut,
        tenants_before={b: month_start(b_cut).replace(day=20)} if b is not None else {},
    )


async def _state(conn: asyncpg.Connection, year: Year) -> dict[str, object]:
    """What must not change by a dry run, and what each send's views show."""
    parts = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'messages'::regclass ORDER BY 1"
    )
    return {
        "partitions": [r[0] for r in parts],
        "phones": await conn.fetchval("SELECT count(phone) + count(body) FROM messages"),
        "outbox": await conn.fetchval("SELECT count(*) FROM outbox"),
        "summaries": await conn.fetchval("SELECT count(summary) FROM sends"),
    }


async def _views(conn: asyncpg.Connection, year: Year) -> dict[str, object]:
    """Each county's sends as the console lists them (counts by status) and as its archive
    records them (counts, cost, first sent and last done), and a month's usage."""
    a = await messages.recent_sends(conn, year.a, 50)
    b = await messages.recent_sends(conn, year.b, 50)
    city = await conn.fetchval("SELECT path FROM tenants WHERE code = '510100'")
    usage = [
        await billing.usage(conn, city, calendar.period_of(month_start(k)), subtree=True)
        for k in range(MONTHS)
    ]
    path = await conn.fetchval("SELECT path FROM tenants WHERE id = $1", year.a)
    archive = await messages.archive_sends(
        conn, Settings(), path, month_start(0), month_start(MONTHS), subtree=False
    )
    assert len(archive) == MONTHS
    return {
        "a": [(s.id, s.statuses) for s in a],
        "b": [(s.id, s.statuses) for s in b],
        "u": usage,
        "archive": archive,
    }


async def _phones_of(conn: asyncpg.Connection, send_id: int) -> tuple[int, int]:
    """(messages, messages still holding a phone or body) of a send."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, count(*) FILTER (WHERE phone IS NOT NULL OR body IS NOT NULL) AS"
        " kept FROM messages WHERE send_id = $1",
        send_id,
    )
    assert row is not None
    return row["n"], row["kept"]


async def test_a_year_past_its_period_drops_old_months_and_erases_the_cutoff_month(
    conn: asyncpg.Connection,
) -> None:
    year = await _a_year(conn)
    policy = _policy(6)
    # The first month's statement, closed: its lines must not change.
    first = calendar.period_of(month_start(0))
    await billing.close_period(
        conn, first, "test", grace_days=3, default_list_price=60_000, now=month_start(2)
    )
    lines = [dict(r) for r in await conn.fetch(STATEMENT, first)]
    assert lines
    views = await _views(conn, year)
    before = await _state(conn, year)

    dry = await erase_old(SingleConnectionDatabase(conn), policy, dry_run=True)

    assert await _state(conn, year) == before  # nothing changed
    gone = await erase_old(SingleConnectionDatabase(conn), policy, dry_run=False)

    assert gone == dry  # the dry run told what went
    after = await _state(conn, year)
    old = {months.partition_name(months.month_index(month_start(k))) for k in range(6)}
    kept = {months.partition_name(months.month_index(month_start(k))) for k in range(6, MONTHS)}
    assert old <= {g.what for g in gone if g.how == "partition dropped"}
    assert not old & set(after["partitions"])  # type: ignore[call-overload]
    assert kept <= set(after["partitions"])  # type: ignore[call-overload]
    assert "messages_before" not in after["partitions"]  # type: ignore[operator]  # it was empty
    for g in gone:
        if g.what in old:
            assert g == Gone(what=g.what, how="partition dropped", rows=2 * len(PHONES))
    # The cutoff's month (sent on the 10th, cut on the 20th): erased; later months kept.
    for tenant in (year.a, year.b):
        assert await _phones_of(conn, year.sends[tenant, 6]) == (len(PHONES), 0)
        for k in range(7, MONTHS):
            assert await _phones_of(conn, year.sends[tenant, k]) == (len(PHONES), len(PHONES))
    cutoff_month = months.partition_name(months.month_index(month_start(6)))
    assert Gone(what=cutoff_month, how="phones and bodies erased", rows=2 * len(PHONES)) in gone
    # The outbox's copies before the cutoff went; the later ones stay.
    assert Gone(what="outbox", how="rows deleted", rows=7 * 2 * len(PHONES)) in gone
    assert after["outbox"] == (MONTHS - 7) * 2 * len(PHONES)
    # Every send shows the same counts, from its summary once its messages are gone; usage and
    # the quota ledger never read them.
    assert await _views(conn, year) == views
    assert [dict(r) for r in await conn.fetch(STATEMENT, first)] == lines
    assert views["a"][-1][1] == {"delivered": 2, "failed": 1, "undelivered": 2}  # type: ignore[index]
    for k in range(MONTHS):
        _, problems = await quota.audit(conn, calendar.period_of(month_start(k)))
        assert problems == []
    # A second run finds nothing more to do.
    assert await erase_old(SingleConnectionDatabase(conn), policy, dry_run=False) == []


async def test_a_tenant_with_a_shorter_period_loses_more_and_others_keep_theirs(
    conn: asyncpg.Connection,
) -> None:
    year = await _a_year(conn)
    policy = _policy(6, year.b, 9)

    dry = await erase_old(SingleConnectionDatabase(conn), policy, dry_run=True)
    gone = await erase_old(SingleConnectionDatabase(conn), policy, dry_run=False)

    assert gone == dry
    for k in range(6, MONTHS):
        a_kept = 0 if k == 6 else len(PHONES)
        b_kept = 0 if k <= 9 else len(PHONES)
        assert await _phones_of(conn, year.sends[year.a, k]) == (len(PHONES), a_kept), k
        assert await _phones_of(conn, year.sends[year.b, k]) == (len(PHONES), b_kept), k
    b_months = {months.partition_name(months.month_index(month_start(k))) for k in (7, 8, 9)}
    erased = {g.what: g.rows for g in gone if g.how == "phones and bodies erased"}
    assert {m: erased[m] for m in b_months} == dict.fromkeys(b_months, len(PHONES))
    outbox = await conn.fetchval(
        "SELECT count(*) FROM outbox o JOIN messages m ON m.id = o.message_id"
        " WHERE m.tenant_id = $1",
        year.b,
    )
    assert outbox == 2 * len(PHONES)  # months 10 and 11


async def test_a_message_not_gone_yet_keeps_its_phone_and_its_month(
    conn: asyncpg.Connection,
) -> None:
    """A send parked, scheduled or in review long past a short period has not gone: its phones
    and its month's partition stay until it is done; the rest of its month is erased."""
    year = await _a_year(conn)
    waiting = {}
    for k in (0, 6):  # a month that would be dropped, and the cutoff's month
        waiting[k] = await conn.fetchval(
            "UPDATE messages SET status = 'accepted', done_at = NULL"
            " WHERE id = (SELECT min(id) FROM messages WHERE send_id = $1) RETURNING id",
            year.sends[year.a, k],
        )
    relying = await conn.fetchval(
        "UPDATE messages SET status = 'deduplicated', duplicate_of = $2, duplicate_tenant_id = $3,"
        " done_at = NULL WHERE id = (SELECT max(id) FROM messages WHERE send_id = $1) RETURNING id",
        year.sends[year.b, 6],
        waiting[6],
        year.a,
    )

    gone = await erase_old(SingleConnectionDatabase(conn), _policy(6), dry_run=False)

    kept_month = months.partition_name(months.month_index(month_start(0)))
    assert kept_month not in {g.what for g in gone if g.how == "partition dropped"}
    assert Gone(what=kept_month, how="phones and bodies erased", rows=2 * len(PHONES) - 1) in gone
    for message_id in (*waiting.values(), relying):
        assert await conn.fetchval("SELECT phone FROM messages WHERE id = $1", message_id)
    for k in (0, 6):  # the others of those sends, done, lost theirs
        assert await _phones_of(conn, year.sends[year.a, k]) == (len(PHONES), 1)
    assert await _phones_of(conn, year.sends[year.b, 6]) == (len(PHONES), 1)
    assert await _phones_of(conn, year.sends[year.b, 0]) == (len(PHONES), 0)
