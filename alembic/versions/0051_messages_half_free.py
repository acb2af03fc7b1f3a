"""Message partitions keep half of each page free (fillfactor 50, was 85): a message's claim,
its `sent` and its receipt each rewrite the row in its own page (HOT).

Each of those updates changes a chunk's 100 consecutive messages in one statement, so every row
of a page gets its new version at once, before the old ones can be pruned: with 15 % free, a
page took the new versions of a few of its 40-odd rows and the others moved to other pages, with
an entry in each index. With half the page free it takes all of them. In the outbox benchmark
(100,000 messages; docs/BENCHMARKS.md, issue 17 point 4): 157,000 → 256,000 of the 300,000
updates HOT, WAL 301 → 267 MB, the month's table and indexes no bigger (the versions that moved
left holes behind). Existing pages are not rewritten: the setting holds for what is written
from now on; new months get it from hub_message_partitions (hub/messages/sql/months.sql).

Revision ID: 0051
Revises: 0050
Create Date: 2026-12-05
"""

from hub.db import run_script, sql_file

revision = "0051"
down_revision = "0050"
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
    run_script(_FILLFACTOR.replace("{fillfactor}", "50"))
    run_script(sql_file(FUNCTIONS))


def downgrade() -> None:
    run_script(_FILLFACTOR.replace("{fillfactor}", "85"))
