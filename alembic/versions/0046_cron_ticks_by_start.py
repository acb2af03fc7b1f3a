"""Cron ticks go with the purge by when they started, by the hub's clock, not by their tick.

A tick is arq's wall-clock instant (hub.crons); a hub whose clock was started elsewhere (a
drill with HUB_CLOCK__START, the tests) found every tick of this week months old and purged the
rows that keep a tick from running twice. The purge's index follows the column it reads.

Revision ID: 0046
Revises: 0045
Create Date: 2026-12-04
"""

from hub.db import run_script

revision = "0046"
down_revision = "0045"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE INDEX IF NOT EXISTS cron_ticks_started ON cron_ticks (started_at);
    DROP INDEX IF EXISTS cron_ticks_tick;
    """)


def downgrade() -> None:
    run_script("""
    CREATE INDEX IF NOT EXISTS cron_ticks_tick ON cron_ticks (tick);
    DROP INDEX IF EXISTS cron_ticks_started;
    """)
