"""The sweeper's index: queued sends in its order, so each page of its keyset walk is an index
range scan however many sends the hub has ever had.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-03
"""

from hub.db import run_script

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    -- hub.delivery.repository.OPEN_SENDS: (priority, id) > cursor, in that order, LIMIT a page.
    CREATE INDEX sends_queued ON sends (priority, id) WHERE state = 'queued' AND parked_at IS NULL;
    """)


def downgrade() -> None:
    run_script("""
    DROP INDEX sends_queued;
    """)
