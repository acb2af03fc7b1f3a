"""Billing: usage facts — billable and deduplicated segments per tenant, day and carrier.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27
"""

from hub.db import run_script

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE TYPE usage_kind AS ENUM ('billable', 'dedup');

    -- Appended as segments become billable (gateway-accepted, or delivered where the gateway
    -- bills on delivery) and as sends are deduplicated: plain inserts, so delivery gains no hot
    -- row. A job folds them into usage_daily; reads add what it has not folded yet.
    CREATE TABLE usage_entries (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id  bigint NOT NULL,
        day        date NOT NULL,              -- Asia/Shanghai
        carrier    text NOT NULL,
        kind       usage_kind NOT NULL,
        segments   bigint NOT NULL CHECK (segments > 0),
        created_at timestamptz NOT NULL DEFAULT now()
    );

    -- The rollup billing reads: one row per tenant, day and carrier.
    CREATE TABLE usage_daily (
        tenant_id bigint NOT NULL REFERENCES tenants (id),
        day       date NOT NULL,
        carrier   text NOT NULL,
        billable  bigint NOT NULL DEFAULT 0 CHECK (billable >= 0),
        dedup     bigint NOT NULL DEFAULT 0 CHECK (dedup >= 0),
        PRIMARY KEY (tenant_id, day, carrier)
    );
    CREATE INDEX usage_daily_day ON usage_daily (day);
    """)


def downgrade() -> None:
    run_script("""
    DROP TABLE usage_daily;
    DROP TABLE usage_entries;
    DROP TYPE usage_kind;
    """)
