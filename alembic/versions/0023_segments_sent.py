"""At most once: a multi-part message that went only in part keeps how many parts went.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03
"""

from hub.db import run_script

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    -- A multi-part message whose first parts the gateway took and a later part it refused (or
    -- never answered) is `sent`, never sent again, and billed for the parts that may have gone:
    -- this many of its `segments` (NULL: all of them). Receipts, delivery counts and billing on
    -- delivery use it. Nullable and checked NOT VALID: adding it rewrites and scans nothing.
    ALTER TABLE messages ADD COLUMN segments_sent smallint;
    ALTER TABLE messages ADD CONSTRAINT messages_segments_sent
        CHECK (segments_sent >= 1 AND segments_sent < segments) NOT VALID;
    """)


def downgrade() -> None:
    run_script("""
    ALTER TABLE messages DROP COLUMN segments_sent;
    """)
