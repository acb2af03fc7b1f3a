"""The outbox remembers which receipts it reported: one lost while PostgreSQL or the worker was
down is reported again.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03
"""

from hub.db import run_script

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    -- When the outbox's receipt for the message was recorded by the hub (NULL: not yet, or it
    -- was lost and is reported again). Rows from before count as reported.
    ALTER TABLE outbox ADD COLUMN reported_at timestamptz;
    UPDATE outbox SET reported_at = created_at;
    CREATE INDEX outbox_unreported ON outbox (gateway, message_id) WHERE reported_at IS NULL;
    """)


def downgrade() -> None:
    run_script("""
    DROP INDEX outbox_unreported;
    ALTER TABLE outbox DROP COLUMN reported_at;
    """)
