"""Worker heartbeats: which arq workers are alive, as PostgreSQL sees them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from hub.db import run_script

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE TABLE worker_heartbeats (
        worker     text PRIMARY KEY,          -- host:pid
        started_at timestamptz NOT NULL,
        seen_at    timestamptz NOT NULL
    );
    """)


def downgrade() -> None:
    run_script("""
    DROP TABLE worker_heartbeats;
    """)
