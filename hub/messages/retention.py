"""Retention, the messages' step (issue 15, point 4): phones and bodies of messages older than
the period are erased, whole months by dropping their partitions.

1. Each send whose messages go with a dropped partition first gets its summary
   (`sends.summary`: messages and segments by status), a batch of sends per transaction, so its
   counts (hub.messages.repository.STATUS_COUNTS, the lists, the dashboard) stay as they were.
2. Monthly partitions entirely before `policy.messages_before` whose every message is done
   (none still to go, none relying on an original whose outcome is unknown) are detached and
   dropped, and `messages_before` (the rows from before partitioning) once all of its rows are
   past the cutoff: plain DETACH (CONCURRENTLY is refused while a DEFAULT partition exists)
   and DROP in one transaction whose lock waits end after hub.messages.months.LOCK_TIMEOUT,
   tried again a few times: a send queues behind it for at most that long.
3. Messages before the cutoff in partitions that stay (the cutoff's month, `messages_before`,
   the DEFAULT partition, a month holding one not gone yet), and those of tenants with a
   shorter period before theirs, lose phone and body once they are done (a send scheduled,
   held, parked or in review keeps its phones until it has gone), a few thousand per
   transaction; so do the outbox's copies (the default gateway's store, keyed by message id:
   its rows are deleted).
4. Dry: the same plan counted, nothing changed.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime

import asyncpg

from hub.db import Database
from hub.messages import months
from hub.retention.schemas import Gone, Policy

log = logging.getLogger("hub.messages.retention")

# Sends summarized per transaction.
SUMMARY_BATCH = 500
# Messages erased (or outbox rows deleted) per transaction.
ERASE_BATCH = 5000
LEGACY = "messages_before"

# The monthly partitions of `messages` and their id ranges (messages_before from 0).
PARTITIONS = """
SELECT c.relname AS name,
       coalesce(substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \\(''?(\\d+)')::bigint, 0)
           AS lo,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \\(''?(\\d+)')::bigint AS hi
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'messages'::regclass AND c.relname <> 'messages_default'
ORDER BY lo
"""


# A message that has not gone yet: still to go (a send scheduled, held, parked or in review
# may wait long past a short period), or a copy relying on an original whose outcome is not
# known. Retention leaves it whole, and its month's partition, until it is done.
def _waiting(m: str = "") -> str:
    return f"({m}status IN ('accepted', 'sending') OR {m}relies_on IS NOT NULL)"


# Whether a partition holds a message that has not gone yet.
PARTITION_WAITING = f"SELECT EXISTS (SELECT 1 FROM {{name}} WHERE {_waiting()})"

# Whether `messages_before` holds a message created at or after $1.
LEGACY_HAS_RECENT = "SELECT EXISTS (SELECT 1 FROM messages_before WHERE created_at >= $1)"

# The next $3 sends after $2 whose messages are in [$4, $5) (a partition about to go) and have
# no summary yet.
SENDS_TO_SUMMARIZE = """
SELECT id FROM sends
WHERE message_ids_from >= $1 AND message_ids_from < $2 AND summary IS NULL AND id > $3
ORDER BY id
LIMIT $4
"""

# The summary of each of the sends $1 (their messages by status, segments by status: the parts
# that went for one that went in part, and the first sent and last done, as the archive reads
# them: hub.messages.repository.ARCHIVE_COUNTS); every send gets one.
SUMMARIZE = """
UPDATE sends s SET summary = jsonb_build_object(
    'statuses', coalesce(c.statuses, '{}'::jsonb), 'segments', coalesce(c.segments, '{}'::jsonb),
    'first_sent', c.first_sent, 'last_done', c.last_done)
FROM UNNEST($1::bigint[]) AS x(id)
LEFT JOIN (
    SELECT send_id, jsonb_object_agg(status, n) AS statuses,
           jsonb_object_agg(status, seg) AS segments,
           min(first_sent) AS first_sent, max(last_done) AS last_done
    FROM (
        SELECT m.send_id, m.status::text AS status, count(*) AS n,
               sum(coalesce(m.segments_sent, m.segments)) AS seg,
               min(m.sent_at) AS first_sent, max(m.done_at) AS last_done
        FROM messages m
        WHERE m.send_id = ANY($1::bigint[]) AND m.id >= $2 AND m.id < $3
        GROUP BY m.send_id, m.status
    ) g
    GROUP BY send_id
) c ON c.send_id = x.id
WHERE s.id = x.id AND s.summary IS NULL
"""

# How many messages a partition holds.
PARTITION_ROWS = "SELECT count(*) FROM {name}"

# Drop one partition: detached first, so the parent's lock is taken once, briefly.
DROP_PARTITION = "ALTER TABLE messages DETACH PARTITION {name}; DROP TABLE {name}"

# The next sends after $1 whose messages may still hold phones or bodies created before $2: those
# created before it (a send's messages are written with it) and not summarized (a summarized
# send's messages went with their partition); of tenant $4 only, unless NULL.
SENDS_TO_ERASE = """
SELECT id FROM sends
WHERE created_at < $2 AND summary IS NULL AND id > $1 AND ($4::bigint IS NULL OR tenant_id = $4)
ORDER BY id
LIMIT $3
"""

# Erase phone and body of up to $3 messages of send $1 created before $2 that are done; the
# partition of each.
ERASE = f"""
UPDATE messages m SET phone = NULL, body = NULL
WHERE m.id IN (
    SELECT id FROM messages
    WHERE send_id = $1 AND id >= hub_send_messages_from($1) AND id < hub_send_messages_to($1)
      AND created_at < $2 AND (phone IS NOT NULL OR body IS NOT NULL) AND NOT {_waiting()}
    LIMIT $3
)
  AND m.id >= hub_send_messages_from($1) AND m.id < hub_send_messages_to($1)
RETURNING m.tableoid::regclass::text AS partition
"""

# What ERASE would erase of the sends $1 (dry), by partition: created before $2 and at or after
# $3 (what an earlier step of the same run would have erased is not counted twice).
ERASABLE = f"""
SELECT m.tableoid::regclass::text AS partition, count(*) AS n
FROM messages m JOIN sends s ON s.id = m.send_id
WHERE s.id = ANY($1::bigint[])
  AND m.id >= s.message_ids_from AND m.id < s.message_ids_from + (1::bigint << 40)
  AND m.created_at < $2 AND m.created_at >= $3 AND (m.phone IS NOT NULL OR m.body IS NOT NULL)
  AND NOT {_waiting("m.")}
GROUP BY 1
"""

# The outbox's copies (phone and text) of messages created before $1 up to id $2 (exclusive),
# and of tenant $3 only unless NULL: up to $4 deleted. Its key is the message id, which orders
# them by month.
DELETE_OUTBOX = """
DELETE FROM outbox o WHERE o.message_id IN (
    SELECT x.message_id FROM outbox x
    WHERE x.message_id < $2 AND x.created_at < $1
      AND ($3::bigint IS NULL
           OR EXISTS (SELECT 1 FROM messages m WHERE m.id = x.message_id AND m.tenant_id = $3))
    LIMIT $4
)
"""

# What DELETE_OUTBOX would delete (dry), created at or after $4.
COUNT_OUTBOX = """
SELECT count(*) FROM outbox x
WHERE x.message_id < $2 AND x.created_at < $1 AND x.created_at >= $4
  AND ($3::bigint IS NULL
       OR EXISTS (SELECT 1 FROM messages m WHERE m.id = x.message_id AND m.tenant_id = $3))
"""


class _Partition:
    def __init__(self, name: str, lo: int, hi: int) -> None:
        self.name, self.lo, self.hi = name, lo, hi


async def _partitions(db: Database) -> list[_Partition]:
    async with db.acquire() as conn:
        rows = await conn.fetch(PARTITIONS)
    return [_Partition(r["name"], r["lo"], r["hi"]) for r in rows]


async def _to_drop(db: Database, cutoff: datetime) -> list[_Partition]:
    """The partitions whose every message was created before `cutoff` and is done (one that
    has not gone yet keeps its month: the erase step takes the others)."""
    floor = months.month_floor(cutoff)
    past = [p for p in await _partitions(db) if p.name != LEGACY and p.hi <= floor]
    async with db.acquire() as conn:
        legacy = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", LEGACY)
        if legacy and not await conn.fetchval(LEGACY_HAS_RECENT, cutoff):
            past.insert(0, _Partition(LEGACY, 0, 1 << 40))
        drop = []
        for part in past:
            if await conn.fetchval(PARTITION_WAITING.format(name=part.name)):
                log.info("%s keeps its messages: some have not gone yet", part.name)
            else:
                drop.append(part)
    return drop


async def _summarize(db: Database, part: _Partition) -> None:
    """Every send whose messages are in `part` gets its summary, a batch per transaction."""
    after = 0
    while True:
        async with db.acquire() as conn, conn.transaction():
            ids = [
                r["id"]
                for r in await conn.fetch(
                    SENDS_TO_SUMMARIZE, part.lo, part.hi, after, SUMMARY_BATCH
                )
            ]
            if not ids:
                return
            await conn.execute(SUMMARIZE, ids, part.lo, part.hi)
        after = ids[-1]


async def _drop(db: Database, part: _Partition) -> int:
    """Detach and drop `part` with briefly waited locks; how many messages it held."""

    # Counted first, outside the DDL's transaction: a retry after a lock wait does not count
    # again (its month is past: nothing is written to it any more).
    async with db.acquire() as conn:
        rows: int = await conn.fetchval(PARTITION_ROWS.format(name=part.name))

    async def work(conn: asyncpg.Connection) -> None:
        await conn.execute(DROP_PARTITION.format(name=part.name))

    await months.briefly_locking(db, work, f"dropping {part.name}")
    log.info("dropped %s (%d messages)", part.name, rows)
    return rows


async def _erase_sends(
    db: Database, cutoff: datetime, tenant_id: int | None, dry_run: bool, since: datetime
) -> Counter[str]:
    """Phones and bodies of the messages created before `cutoff` (of one tenant's sends, or
    all) that are still there; erased (or counted, from `since`) by partition."""
    erased: Counter[str] = Counter()
    after = 0
    while True:
        async with db.acquire() as conn:
            ids = [
                r["id"]
                for r in await conn.fetch(SENDS_TO_ERASE, after, cutoff, SUMMARY_BATCH, tenant_id)
            ]
            if not ids:
                return erased
            if dry_run:
                for r in await conn.fetch(ERASABLE, ids, cutoff, since):
                    erased[r["partition"]] += r["n"]
        if not dry_run:
            for send_id in ids:
                while True:
                    async with db.acquire() as conn, conn.transaction():
                        rows = await conn.fetch(ERASE, send_id, cutoff, ERASE_BATCH)
                    erased.update(r["partition"] for r in rows)
                    if len(rows) < ERASE_BATCH:
                        break
        after = ids[-1]


async def _outbox(
    db: Database, cutoff: datetime, tenant_id: int | None, dry_run: bool, since: datetime
) -> int:
    """The outbox's copies of messages created before `cutoff`: deleted (or counted, from
    `since`)."""
    below = months.month_floor(cutoff) + months.MONTH_SPAN
    async with db.acquire() as conn:
        if dry_run:
            count: int = await conn.fetchval(COUNT_OUTBOX, cutoff, below, tenant_id, since)
            return count
    deleted = 0
    while True:
        async with db.acquire() as conn, conn.transaction():
            status = await conn.execute(DELETE_OUTBOX, cutoff, below, tenant_id, ERASE_BATCH)
        n = int(status.split()[-1])
        deleted += n
        if n < ERASE_BATCH:
            return deleted


async def erase_old(db: Database, policy: Policy, dry_run: bool) -> list[Gone]:
    """The messages' retention step (see the module's text); what went, or would go."""
    gone: list[Gone] = []
    dropped = await _to_drop(db, policy.messages_before)
    for part in dropped:
        if dry_run:
            async with db.acquire() as conn:
                rows = await conn.fetchval(PARTITION_ROWS.format(name=part.name))
        else:
            await _summarize(db, part)
            rows = await _drop(db, part)
        gone.append(Gone(what=part.name, how="partition dropped", rows=rows))
    start = datetime.min.replace(tzinfo=UTC)
    erased = await _erase_sends(db, policy.messages_before, None, dry_run, start)
    if dry_run:
        # The sends of partitions that would be dropped are counted there, not here.
        erased = Counter({k: v for k, v in erased.items() if k not in {p.name for p in dropped}})
    outbox = await _outbox(db, policy.messages_before, None, dry_run, start)
    for tenant_id, cutoff in sorted(policy.tenants_before.items()):
        if cutoff > policy.messages_before:
            since = policy.messages_before
            erased += await _erase_sends(db, cutoff, tenant_id, dry_run, since)
            outbox += await _outbox(db, cutoff, tenant_id, dry_run, since)
    gone += [
        Gone(what=name, how="phones and bodies erased", rows=n)
        for name, n in sorted(erased.items())
        if n
    ]
    if outbox:
        gone.append(Gone(what="outbox", how="rows deleted", rows=outbox))
    return gone
