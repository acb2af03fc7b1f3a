"""Retention (issue 15, point 4): a tenant's own, shorter period for its messages' phones and
bodies (PUT /v1/tenants/{code}/retention; hub.retention). A row holds the days the tenant chose
and whether they hold for its whole subtree; no row: the operator's period
(HUB_RETENTION__MESSAGES_DAYS). The run (hub.retention.service.run) reads them once per run.

Revision ID: 0039
Revises: 0035
Create Date: 2026-12-03
"""

from hub.db import run_script

revision = "0039"
down_revision = "0038"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE TABLE IF NOT EXISTS retention_periods (
        tenant_id     bigint PRIMARY KEY REFERENCES tenants (id),
        messages_days integer NOT NULL CHECK (messages_days BETWEEN 1 AND 3650),
        -- True: the tenants below keep theirs no longer either (unless they chose shorter).
        subtree       boolean NOT NULL DEFAULT false,
        updated_by    text NOT NULL CHECK (length(updated_by) BETWEEN 1 AND 90),
        updated_at    timestamptz NOT NULL DEFAULT hub_now()
    );
    """)


def downgrade() -> None:
    run_script("DROP TABLE retention_periods;")
