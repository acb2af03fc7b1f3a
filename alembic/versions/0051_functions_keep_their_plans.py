"""The functions every send and every delivery chunk calls keep their plans: plpgsql, not sql.

A sql function that cannot be inlined (it reads a table, or holds more than one expression) has
its body parsed, analysed and planned again on every call by PostgreSQL before 18, and a
1-recipient send calls four: `quota_note_thresholds` (from `quota_reserve`), `quota_hold` (a
lease's draw) and `hub_send_messages_from` / `hub_send_messages_to` (every query by send, at
planning and at executor start). plpgsql keeps a statement's plan for the session. The bodies
and results are unchanged (hub/quota/sql/lease.sql, hub/messages/sql/months.sql, loaded again);
docs/BENCHMARKS.md, issue 17 point 5.

Revision ID: 0051
Revises: 0050
Create Date: 2026-12-05
"""

from hub.db import run_script, sql_file

revision = "0051"
down_revision = "0050"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(sql_file("hub/quota/sql/lease.sql"))
    run_script(sql_file("hub/messages/sql/months.sql"))


def downgrade() -> None:
    """The same functions in another language, with the same results: nothing to undo."""
