"""Scheduling: when a send may go (send_at, quiet hours), its state, and quiet hours per tenant.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from hub.db import run_script

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE TYPE send_state AS ENUM ('scheduled', 'held', 'queued', 'cancelled');

    ALTER TABLE sends
        ADD COLUMN state send_state NOT NULL DEFAULT 'queued',
        ADD COLUMN send_at timestamptz,                 -- as asked; NULL: now
        ADD COLUMN held_until timestamptz,              -- end of the quiet hours it fell in
        ADD COLUMN due_at timestamptz NOT NULL DEFAULT now(),  -- when it may go
        ADD COLUMN cancelled_at timestamptz;
    CREATE INDEX sends_due ON sends (due_at) WHERE state IN ('scheduled', 'held');

    -- A tenant's own quiet hours (Asia/Shanghai wall clock); without a row, the operator's.
    CREATE TABLE quiet_hours (
        tenant_id  bigint PRIMARY KEY REFERENCES tenants (id),
        enabled    boolean NOT NULL,
        starts     time NOT NULL,
        ends       time NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    """)


def downgrade() -> None:
    run_script("""
    DROP TABLE quiet_hours;
    DROP INDEX sends_due;
    ALTER TABLE sends DROP COLUMN state, DROP COLUMN send_at, DROP COLUMN held_until,
        DROP COLUMN due_at, DROP COLUMN cancelled_at;
    DROP TYPE send_state;
    """)
