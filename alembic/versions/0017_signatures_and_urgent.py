"""Urgent sends need their own scope.

The new scope `messages:urgent` goes to the operator's keys that can send (so the operator can
grant it down, a key granting only what it holds); no other key has it until it is granted.

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-03
"""

from hub.db import run_script

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    UPDATE api_keys k SET scopes = k.scopes || '{messages:urgent}'::text[]
    FROM tenants t
    WHERE t.id = k.tenant_id AND t.parent_id IS NULL
      AND 'messages:write' = ANY (k.scopes) AND NOT 'messages:urgent' = ANY (k.scopes);
    """)


def downgrade() -> None:
    run_script("""
    UPDATE api_keys SET scopes = array_remove(scopes, 'messages:urgent')
    WHERE 'messages:urgent' = ANY (scopes);
    """)
