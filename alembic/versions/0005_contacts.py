"""Rosters: each tenant's contacts with tags, join date and free fields.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from hub.db import run_script

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE TABLE contacts (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id  bigint NOT NULL REFERENCES tenants (id),
        phone      text NOT NULL,                        -- E.164
        name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
        tags       text[] NOT NULL DEFAULT '{}',         -- 书记, 副科级以上, 大学生村官 …
        joined_on  date,                                 -- e.g. the day they joined the Party
        fields     jsonb NOT NULL DEFAULT '{}',          -- every other column of the roster
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (tenant_id, phone)
    );
    CREATE INDEX contacts_tags ON contacts USING gin (tags);
    CREATE INDEX contacts_tenant_id ON contacts (tenant_id, id);
    """)


def downgrade() -> None:
    run_script("""
    DROP TABLE contacts;
    """)
