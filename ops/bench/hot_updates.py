"""What HOT updates save the worker: its three updates of a message row, with and without
indexes on the columns they change (issue 17, point 4).

    .venv/bin/python -m ops.bench.hot_updates --dsn postgresql://… [--rows 100000]

A scratch table with `messages`' columns and its five indexes takes `--rows` rows by INSERT
(as the API's COPY fills pages), then the worker's three updates of each row, 100 rows per
statement: the claim (`sending`, its gateway), `sent` with a reference, the receipt
(`delivered`, done). "before 0047" has the indexes as they were before migration 0047
(`messages_send` INCLUDE status, `messages_reference` on (gateway, reference),
`messages_relying`'s predicate on status and done_at); "0047" has none on a column the claim or
the receipt changes (its `messages_relying` on `duplicate_of` stands for the migration's index on
the generated `relies_on`, NULL for every row here). Each at fillfactor 100 and 85 (0047's).
Printed: the serving backend's CPU (user + system, /proc) per 1,000 rows, and how many updates
were HOT. The table (`bench_hot_updates`, in the database --dsn names) is dropped
after. PostgreSQL must run on this host, in this PID namespace: its backend's CPU is read from
/proc.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import asyncpg

TABLE = "bench_hot_updates"

COLUMNS = """
    id bigint PRIMARY KEY, send_id bigint, tenant_id bigint, phone text, carrier text,
    segments smallint, status text, duplicate_of bigint, gateway text, reference text,
    attempts smallint NOT NULL DEFAULT 0, lease_until timestamptz, submitted_at timestamptz,
    sent_at timestamptz, done_at timestamptz, updated_at timestamptz, error text, body text
"""

INDEXES = {
    "before 0047": [
        f"CREATE INDEX ON {TABLE} (send_id, id) INCLUDE (status)",
        f"CREATE INDEX ON {TABLE} (gateway, reference) WHERE reference IS NOT NULL",
        f"CREATE INDEX ON {TABLE} (duplicate_of) WHERE status = 'deduplicated' AND done_at IS NULL",
        f"CREATE INDEX ON {TABLE} (phone, id)",
    ],
    "0047": [
        f"CREATE INDEX ON {TABLE} (send_id, id)",
        f"CREATE INDEX ON {TABLE} (reference) WHERE reference IS NOT NULL",
        f"CREATE INDEX ON {TABLE} (duplicate_of) WHERE duplicate_of IS NOT NULL",
        f"CREATE INDEX ON {TABLE} (phone, id)",
    ],
}

UPDATES = [
    f"UPDATE {TABLE} SET status = 'sending', gateway = 'outbox', attempts = attempts + 1,"
    " lease_until = now(), submitted_at = now(), updated_at = now() WHERE id = ANY($1::bigint[])",
    f"UPDATE {TABLE} SET status = 'sent', reference = 'outbox-' || id, sent_at = now(),"
    " lease_until = NULL, updated_at = now() WHERE id = ANY($1::bigint[])",
    f"UPDATE {TABLE} SET status = 'delivered', done_at = now(), updated_at = now()"
    " WHERE id = ANY($1::bigint[])",
]


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _one(conn: asyncpg.Connection, pid: int, rows: int, fillfactor: int, kind: str) -> str:
    await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    await conn.execute(f"CREATE TABLE {TABLE} ({COLUMNS}) WITH (fillfactor = {fillfactor})")
    await conn.execute(
        f"INSERT INTO {TABLE} (id, send_id, tenant_id, phone, carrier, segments, status)"
        " SELECT g, g / 10000, 7, '+86138' || lpad(g::text, 8, '0'), '中国移动', 1, 'accepted'"
        " FROM generate_series(1, $1::bigint) g",
        rows,
    )
    for index in INDEXES[kind]:
        await conn.execute(index)
    await conn.execute(f"VACUUM ANALYZE {TABLE}")
    cpu, started = _cpu_seconds(pid), time.perf_counter()
    for first in range(1, rows + 1, 100):
        ids = list(range(first, min(first + 100, rows + 1)))
        for update in UPDATES:
            await conn.execute(update, ids)
    cpu, wall = _cpu_seconds(pid) - cpu, time.perf_counter() - started
    await conn.execute("SELECT pg_stat_force_next_flush()")  # this backend's counts, now
    hot = await conn.fetchval(
        "SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = $1", TABLE
    )
    return (
        f"fillfactor {fillfactor:3} {kind:9} backend CPU {cpu * 1e6 / rows:5.0f} ms per 1,000"
        f" rows (3 updates each), wall {wall:5.1f} s, HOT {hot:,} of {3 * rows:,}"
    )


async def main(dsn: str, rows: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        for fillfactor in (100, 85):
            for kind in INDEXES:
                print(await _one(conn, pid, rows, fillfactor, kind), flush=True)
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="a database to make the scratch table in")
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(main(args.dsn, args.rows))
