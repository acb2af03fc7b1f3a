"""Suspension covers the subtree: tenant_suspended_by(), and sends parked while they wait.

tenant_suspended_by(path) names the highest suspended tenant on a path (its source is in
tenants/sql/). A send of a suspended subtree that falls due is parked (`parked_at`): nothing of
it goes, nothing of it expires, and its reservation is kept until the suspension ends.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from hub.db import run_script, sql_file

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

FUNCTIONS = ("tenants/sql/suspended_by.sql",)


def upgrade() -> None:
    for path in FUNCTIONS:
        run_script(sql_file(path))
    run_script("""
    -- Set while the send waits on a suspension above its tenant (hub/messages park_suspended).
    ALTER TABLE sends ADD COLUMN parked_at timestamptz;
    -- The sends that may still go, by when: what a suspension parks.
    CREATE INDEX sends_open ON sends (due_at) WHERE state IN ('scheduled', 'held', 'queued');
    CREATE INDEX sends_parked ON sends (id) WHERE parked_at IS NOT NULL;
    """)


def downgrade() -> None:
    run_script("""
    -- Parked sends' reservations were kept from expiring: they expire as any other again.
    UPDATE quota_reservations SET expires_at = hub_now() + interval '1 day'
    WHERE status = 'pending' AND expires_at = 'infinity';
    DROP INDEX sends_parked;
    DROP INDEX sends_open;
    ALTER TABLE sends DROP COLUMN parked_at;
    DROP FUNCTION tenant_suspended_by;
    """)
