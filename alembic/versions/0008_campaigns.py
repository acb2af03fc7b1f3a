"""Campaigns: anniversary greetings sent each day at a set time, once per contact per year.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from hub.db import run_script

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE TABLE campaigns (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id   bigint NOT NULL REFERENCES tenants (id),
        kind        text NOT NULL CHECK (kind = 'anniversary'),
        field       text NOT NULL CHECK (field = 'joined_on'),
        template_id bigint NOT NULL REFERENCES templates (id),
        send_time   time NOT NULL,                      -- Asia/Shanghai wall clock
        to_tags     text[] NOT NULL DEFAULT '{}',       -- empty: the whole roster
        active      boolean NOT NULL DEFAULT true,
        created_by  text NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now()
    );

    -- One greeting per contact per year: the primary key is the guarantee, whatever reruns.
    CREATE TABLE campaign_deliveries (
        campaign_id bigint NOT NULL REFERENCES campaigns (id),
        contact_id  bigint NOT NULL,
        year        smallint NOT NULL,
        send_id     bigint NOT NULL REFERENCES sends (id),
        created_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (campaign_id, contact_id, year)
    );
    """)


def downgrade() -> None:
    run_script("""
    DROP TABLE campaign_deliveries;
    DROP TABLE campaigns;
    """)
