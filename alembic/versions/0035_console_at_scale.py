"""The console at a county's scale (issue 14: every page ≤ 300 ms with 100,000 contacts and a
year of 2,000 sends; ops/bench/console_pages.py, docs/BENCHMARKS.md).

`messages_send` carries each message's status: the sends list counts its 50 sends' messages
by status and asks "has a failed (or deduplicated) message", and both become index-only scans
(115 ms for the 290,000 messages of a page of large sends, instead of 165 ms through the heap;
the probes of "having failed" touch no heap page). No update gets dearer: `status` is already
in `messages_relying`'s predicate, so every change of it already writes every index.

On a hub with many millions of messages this rebuilds the index under a write lock on
`messages`: run it in a quiet hour, or build `messages_send_status` first by hand with
CREATE INDEX CONCURRENTLY (this migration then only swaps the names).

Revision ID: 0035
Revises: 0033
Create Date: 2026-12-16
"""

from hub.db import run_script

revision = "0035"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE INDEX IF NOT EXISTS messages_send_status ON messages (send_id, id) INCLUDE (status);
    DROP INDEX messages_send;
    ALTER INDEX messages_send_status RENAME TO messages_send;
    """)


def downgrade() -> None:
    run_script("""
    CREATE INDEX messages_send_plain ON messages (send_id, id);
    DROP INDEX messages_send;
    ALTER INDEX messages_send_plain RENAME TO messages_send;
    """)
