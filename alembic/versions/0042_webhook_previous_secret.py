"""A tenant's webhook secret rotated without missed pushes (issue 16, point 6).

`webhooks.previous_secret` keeps the secret a new one replaced, until `previous_until` (a day
after the change, hub.delivery.webhooks.SECRET_OVERLAP): meanwhile each push is signed under
both, the new in `X-Hub-Signature` as before and the old in `X-Hub-Signature-Previous`, so a
receiver still holding the old secret keeps accepting pushes while it is switched. Setting the
same secret again leaves the overlap as it was.

Revision ID: 0042
Revises: 0040
Create Date: 2026-12-03
"""

from hub.db import run_script

revision = "0042"
down_revision = "0041"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    ALTER TABLE webhooks
        ADD COLUMN previous_secret text,
        ADD COLUMN previous_until  timestamptz,
        ADD CONSTRAINT webhooks_previous_both
            CHECK ((previous_secret IS NULL) = (previous_until IS NULL));
    """)


def downgrade() -> None:
    run_script("""
    ALTER TABLE webhooks
        DROP CONSTRAINT webhooks_previous_both,
        DROP COLUMN previous_until,
        DROP COLUMN previous_secret;
    """)
