"""quota_note_thresholds looks up an account's leases only once its used + reserved reaches a
threshold (hub/quota/sql/lease.sql, loaded again): below it, what the account holds for its
alerts is below it too. Every reservation runs it, for each account of its chain.

Revision ID: 0049
Revises: 0048
Create Date: 2026-12-04
"""

from hub.db import run_script, sql_file

revision = "0049"
down_revision = "0048"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(sql_file("hub/quota/sql/lease.sql"))


def downgrade() -> None:
    """The function is the same but for the order it checks in: nothing to undo."""
