"""A pooled account's 80 %/100 % alerts count what its descendants' leases drew, not the blocks
they leased (issue 17, point 3's leases).

`quota_alert_held(account, used + reserved)` is what an account holds for its alerts: less what
the active leases held on it hold undrawn. `quota_note_thresholds(accounts)` notes the
thresholds reached by that measure, for quota_reserve and quota_hold alike; a lease's block
notes none on its ancestors, and returning a lease notes what its draws made them reach
(hub/quota/sql/lease.sql and reserve.sql, loaded again here). The leases held on an account are
found by a GIN index over the active leases' `accounts`.

Going down keeps the functions (0044's schema runs them unchanged); 0043's downgrade makes
quota_alert_held count no lease (there are none then), and 0003's drops both.

Revision ID: 0045
Revises: 0044
Create Date: 2026-12-04
"""

from hub.db import run_script, sql_file

revision = "0045"
down_revision = "0044"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script(sql_file("hub/quota/sql/lease.sql"))
    run_script(sql_file("hub/quota/sql/reserve.sql"))
    run_script("""
    CREATE INDEX IF NOT EXISTS quota_leases_held_on ON quota_leases USING gin (accounts)
        WHERE status = 'active';
    """)


def downgrade() -> None:
    run_script("DROP INDEX IF EXISTS quota_leases_held_on")
