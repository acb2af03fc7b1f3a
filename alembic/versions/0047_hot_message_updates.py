"""A message's delivery updates become HOT: no index names a column they change.

A claim (`sending`, its gateway) and a receipt (`delivered`) changed `status`, `gateway` and
`done_at`, and each of those was in an index (`messages_send` INCLUDE status,
`messages_reference` on (gateway, reference), `messages_relying`'s predicate), so every update
wrote a new index entry in each of the five indexes and a new heap tuple wherever it fit
(docs/BENCHMARKS.md, issue 17 point 4: 300,000 updates of 100,000 messages, none HOT).

- `relies_on`: the original a copy still relies on (deduplicated, not done), else NULL; a stored
  generated column, so "relying" has one definition, and `messages_relying` indexes it. An
  original's updates leave it NULL.
- `messages_send` is (send_id, id): a send's status counts read the heap.
- `messages_reference` is (reference): receipts filter the gateway on the row. Recording
  `sent` sets the reference, so that update is not HOT; the claim and the receipt are.
- Partitions keep 15 % of each page free for the new versions (fillfactor 85); new months get
  it from hub_message_partitions (hub/messages/sql/months.sql, loaded again).

Adding the column rewrites every partition under an exclusive lock: minutes for a year of a
province's messages; run it in a quiet hour.

Revision ID: 0047
Revises: 0046
Create Date: 2026-12-04
"""

from hub.db import run_script, sql_file

revision = "0047"
down_revision = "0046"
branch_labels = None
depends_on = None

FUNCTIONS = "hub/messages/sql/months.sql"

_FILLFACTOR = """
DO $$
DECLARE p regclass;
BEGIN
    FOR p IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'messages'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %s SET (fillfactor = {fillfactor})', p);
    END LOOP;
END
$$;
"""


def upgrade() -> None:
    # In this order: the three indexes go before the rewrite (which would rebuild them), and the
    # fillfactor is set before it (which writes the pages with the room left).
    run_script("""
    DROP INDEX IF EXISTS messages_relying;
    DROP INDEX IF EXISTS messages_send;
    DROP INDEX IF EXISTS messages_reference;
    """)
    run_script(_FILLFACTOR.replace("{fillfactor}", "85"))
    run_script("""
    ALTER TABLE messages ADD COLUMN IF NOT EXISTS relies_on bigint GENERATED ALWAYS AS
        (CASE WHEN status = 'deduplicated' AND done_at IS NULL THEN duplicate_of END) STORED;
    CREATE INDEX messages_relying ON messages (relies_on) WHERE relies_on IS NOT NULL;
    CREATE INDEX messages_send ON messages (send_id, id);
    CREATE INDEX messages_reference ON messages (reference) WHERE reference IS NOT NULL;
    ANALYZE messages;
    """)
    run_script(sql_file(FUNCTIONS))


def downgrade() -> None:
    run_script("""
    DROP INDEX IF EXISTS messages_reference;
    CREATE INDEX messages_reference ON messages (gateway, reference) WHERE reference IS NOT NULL;
    DROP INDEX IF EXISTS messages_send;
    CREATE INDEX messages_send ON messages (send_id, id) INCLUDE (status);
    DROP INDEX IF EXISTS messages_relying;
    CREATE INDEX messages_relying ON messages (duplicate_of)
        WHERE status = 'deduplicated' AND done_at IS NULL;
    ALTER TABLE messages DROP COLUMN IF EXISTS relies_on;
    """)
    run_script(_FILLFACTOR.replace("{fillfactor}", "100"))
    run_script(sql_file(FUNCTIONS))
