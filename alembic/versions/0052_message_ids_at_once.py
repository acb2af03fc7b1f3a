"""A COPY of many messages takes their ids at once: `hub_message_ids(n)`
(hub/messages/sql/months.sql), the month worked out once instead of for every row by
`hub_message_id()`, the column's default, which stays for every other insert.

The running version does not call it: it can live beside this one. (The per-connection scratch
table of a send's keys gained a column with this change and was named anew for it,
`send_content_keys`: a server connection behind a transaction pooler may keep the running
version's `send_keys`.) docs/BENCHMARKS.md, issue 17 point 1.

Revision ID: 0052
Revises: 0051
Create Date: 2026-12-05
"""

from hub.db import run_script, sql_file

revision = "0052"
down_revision = "0051"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(sql_file("hub/messages/sql/months.sql"))


def downgrade() -> None:
    run_script("DROP FUNCTION hub_message_ids")
