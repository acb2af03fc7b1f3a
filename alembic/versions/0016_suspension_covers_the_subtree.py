"""Suspension covers the subtree: tenant_suspended_by().

tenant_suspended_by(path) names the highest suspended tenant on a path (its source is in
tenants/sql/).

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


def downgrade() -> None:
    run_script("DROP FUNCTION tenant_suspended_by")
