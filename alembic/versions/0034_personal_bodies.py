"""Per-recipient text: a message of a personal send (a body with {姓名} or another roster
placeholder, hub.messages.personal) keeps its own body, filled in from the recipient's roster
entry; NULL for every other message, which sends its send's body.

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-03
"""

from hub.db import run_script

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default, no check: adding it rewrites and scans nothing of a large table.
    run_script("ALTER TABLE messages ADD COLUMN body text")


def downgrade() -> None:
    run_script("ALTER TABLE messages DROP COLUMN body")
