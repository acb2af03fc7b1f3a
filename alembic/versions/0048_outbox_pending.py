"""The outbox's unreported receipts are a queue of their own: a narrow row per message, deleted
once the hub recorded the receipt, instead of `reported_at` set on the wide `outbox` row.

Setting `reported_at` rewrote the whole row (phone, sender, text) and, as the column was in
`outbox_unreported`'s predicate, put a new entry in each of its indexes: a tenth of PostgreSQL's
CPU in the outbox benchmark (docs/BENCHMARKS.md, issue 17 point 4). A pending row is written in
the statement that hands the message over and deleted by the report.

Revision ID: 0048
Revises: 0047
Create Date: 2026-12-04
"""

from hub.db import run_script

revision = "0048"
down_revision = "0047"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    -- A message the outbox took whose receipt the hub has not recorded yet (lost while
    -- PostgreSQL or the worker was down, when it stays: reported again).
    CREATE TABLE outbox_pending (
        message_id bigint PRIMARY KEY,
        gateway text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT hub_now()
    );
    INSERT INTO outbox_pending (message_id, gateway, created_at)
    SELECT message_id, gateway, created_at FROM outbox WHERE reported_at IS NULL;
    DROP INDEX outbox_unreported;
    ALTER TABLE outbox DROP COLUMN reported_at;
    """)


def downgrade() -> None:
    run_script("""
    ALTER TABLE outbox ADD COLUMN reported_at timestamptz;
    UPDATE outbox o SET reported_at = o.created_at
    WHERE NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.message_id = o.message_id);
    CREATE INDEX outbox_unreported ON outbox (gateway, message_id) WHERE reported_at IS NULL;
    DROP TABLE outbox_pending;
    """)
