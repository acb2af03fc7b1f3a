"""Billing: adjustment lines for late usage, and delivery outcomes in the daily rollup.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27
"""

from hub.db import run_script

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    -- Segments with a final delivery receipt, per tenant, day and carrier: the delivery rate.
    ALTER TYPE usage_kind ADD VALUE 'delivered';
    ALTER TYPE usage_kind ADD VALUE 'undelivered';
    ALTER TABLE usage_daily
        ADD COLUMN delivered   bigint NOT NULL DEFAULT 0 CHECK (delivered >= 0),
        ADD COLUMN undelivered bigint NOT NULL DEFAULT 0 CHECK (undelivered >= 0);

    -- Usage keeps the day it happened on. A closed month's usage that arrives after its close
    -- (late receipts) is billed by the next close as adjustment lines: `origin` is the month
    -- the segments belong to, `period` the close that bills them.
    ALTER TABLE billing_carrier_costs ADD COLUMN origin date;
    UPDATE billing_carrier_costs SET origin = period;
    ALTER TABLE billing_carrier_costs
        ALTER COLUMN origin SET NOT NULL,
        ADD CHECK (origin <= period),
        DROP CONSTRAINT billing_carrier_costs_pkey,
        ADD PRIMARY KEY (period, carrier, origin);

    ALTER TABLE billing_lines ADD COLUMN origin date;
    UPDATE billing_lines SET origin = period;
    ALTER TABLE billing_lines
        ALTER COLUMN origin SET NOT NULL,
        ADD CHECK (origin <= period),
        DROP CONSTRAINT billing_lines_pkey,
        ADD PRIMARY KEY (period, tenant_id, carrier, origin);
    CREATE INDEX billing_lines_origin ON billing_lines (origin, carrier, tenant_id);
    """)


def downgrade() -> None:
    run_script("""
    DROP INDEX billing_lines_origin;
    DELETE FROM billing_lines WHERE origin <> period;
    ALTER TABLE billing_lines DROP CONSTRAINT billing_lines_pkey,
        ADD PRIMARY KEY (period, tenant_id, carrier);
    ALTER TABLE billing_lines DROP COLUMN origin;
    DELETE FROM billing_carrier_costs WHERE origin <> period;
    ALTER TABLE billing_carrier_costs DROP CONSTRAINT billing_carrier_costs_pkey,
        ADD PRIMARY KEY (period, carrier);
    ALTER TABLE billing_carrier_costs DROP COLUMN origin;
    ALTER TABLE usage_daily DROP COLUMN undelivered, DROP COLUMN delivered;
    -- usage_kind keeps its two extra values: PostgreSQL cannot drop an enum value.
    DELETE FROM usage_entries WHERE kind IN ('delivered', 'undelivered');
    """)
