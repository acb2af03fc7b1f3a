"""Billing: closed periods, the hub's cost per carrier, and each tenant's allocated lines.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27
"""

from hub.db import run_script

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    -- A closed month: never written again. Usage that arrives for it later (late receipts) is
    -- folded into the first day after the last closed month, as an adjustment there.
    CREATE TABLE billing_periods (
        period    date PRIMARY KEY CHECK (extract(day FROM period) = 1),
        closed_at timestamptz NOT NULL DEFAULT now(),
        closed_by text NOT NULL
    );

    -- What each carrier cost the hub for the month: the tiers on the hub-wide volume, in fen.
    CREATE TABLE billing_carrier_costs (
        period      date NOT NULL REFERENCES billing_periods (period),
        carrier     text NOT NULL,
        segments    bigint NOT NULL,
        cost_micros bigint NOT NULL CHECK (cost_micros % 10000 = 0),
        rate_card   bigint REFERENCES rate_cards (id),
        PRIMARY KEY (period, carrier)
    );

    -- Each tenant's share, pro rata by segments, rounded to the fen by largest remainder so the
    -- lines of a carrier add up to its cost exactly.
    CREATE TABLE billing_lines (
        period            date NOT NULL REFERENCES billing_periods (period),
        tenant_id         bigint NOT NULL REFERENCES tenants (id),
        carrier           text NOT NULL,
        segments          bigint NOT NULL,
        cost_micros       bigint NOT NULL CHECK (cost_micros % 10000 = 0),
        list_price_micros bigint NOT NULL,
        dedup_segments    bigint NOT NULL,
        PRIMARY KEY (period, tenant_id, carrier)
    );
    """)


def downgrade() -> None:
    run_script("""
    DROP TABLE billing_lines;
    DROP TABLE billing_carrier_costs;
    DROP TABLE billing_periods;
    """)
