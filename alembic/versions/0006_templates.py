"""Message templates with {variables}, approved or rejected by an ancestor.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from hub.db import run_script

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE TYPE template_status AS ENUM ('pending', 'approved', 'rejected');

    CREATE TABLE templates (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id   bigint NOT NULL REFERENCES tenants (id),
        name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
        body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 500),
        variables   text[] NOT NULL,
        status      template_status NOT NULL DEFAULT 'pending',
        reviewed_by bigint REFERENCES tenants (id),
        reviewed_at timestamptz,
        review_note text,
        created_at  timestamptz NOT NULL DEFAULT now(),
        UNIQUE (tenant_id, name),
        CHECK ((status = 'pending') = (reviewed_at IS NULL))
    );
    """)


def downgrade() -> None:
    run_script("""
    DROP TABLE templates;
    DROP TYPE template_status;
    """)
