"""Request-rate limits: the operator's per-tenant overrides of the settings' defaults.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02
"""

from hub.db import run_script

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    -- A tenant's own request-rate limits (hub/limits), in units a second and units held at
    -- most. A null column keeps the setting's default (HUB_LIMITS__*). Read whole by every API
    -- process every HUB_LIMITS__REFRESH_SECONDS: few rows, never on a request's path.
    CREATE TABLE rate_limits (
        tenant_id    bigint PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
        key_rate     double precision CHECK (key_rate > 0),
        key_burst    double precision CHECK (key_burst >= 1),
        tenant_rate  double precision CHECK (tenant_rate > 0),
        tenant_burst double precision CHECK (tenant_burst >= 1),
        updated_by   text NOT NULL,
        updated_at   timestamptz NOT NULL DEFAULT hub_now()
    );
    """)


def downgrade() -> None:
    run_script("DROP TABLE rate_limits")
