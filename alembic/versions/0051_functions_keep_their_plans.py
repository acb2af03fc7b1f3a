"""Fewer round trips and less planning for every send: the functions it calls keep their plans,
and a reservation tries itself again after a deadlock.

A sql function that cannot be inlined (it reads a table, or holds more than one expression) has
its body parsed, analysed and planned again on every call by PostgreSQL before 18, and a
1-recipient send calls four: `quota_note_thresholds` (from `quota_reserve`), `quota_hold` (a
lease's draw) and `hub_send_messages_from` / `hub_send_messages_to` (every query by send, at
planning and at executor start). They are plpgsql now, which keeps a statement's plan for the
session; their bodies and results are unchanged (hub/quota/sql/lease.sql,
hub/messages/sql/months.sql, loaded again).

`quota_take` (hub/quota/sql/take.sql) runs `quota_reserve` or `quota_draw` and
does it again after a deadlock or a serialization failure, as the client did from a savepoint:
the two round trips of the savepoint, one of them while the chain's rows are locked, are gone.
The running version calls the same two functions as before: it can live beside this one.
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
    run_script(sql_file("hub/quota/sql/take.sql"))


def downgrade() -> None:
    """The other functions are the same in another language, with the same results."""
    run_script("DROP FUNCTION quota_take")
