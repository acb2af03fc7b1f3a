"""Review before sending (审核, issue 15 point 1).

`review_rules`: a tenant's rule (none, every free-text send, sends to more than N recipients),
binding its subtree too when `subtree`. A send the rules catch waits in the new `send_state`
`review` (its quota reserved, its content keys not claimed) until approved, rejected or expired
(hub/messages/review.py). The columns on `sends` record the decision; `approved_by` and
`approved_at` are read by the archive too, which may add them first (hence IF NOT EXISTS).

`ALTER TYPE … ADD VALUE` cannot be used in the transaction that adds it, so the review queue's
index keys on `review_due_at` (set while a send waits in review, cleared when it leaves).

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-03
"""

from hub.db import run_script

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    ALTER TYPE send_state ADD VALUE IF NOT EXISTS 'review';

    CREATE TABLE IF NOT EXISTS review_rules (
        tenant_id  bigint PRIMARY KEY REFERENCES tenants (id),
        rule       text NOT NULL CHECK (rule IN ('none', 'free_text', 'above')),
        above      integer CHECK (above >= 0),
        subtree    boolean NOT NULL DEFAULT false,
        updated_by text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        -- The path of the tenant whose key or person set it: a tenant below that one may not
        -- change it (a county does not loosen the rule its city set on it).
        set_by_path text NOT NULL,
        CHECK ((rule = 'above') = (above IS NOT NULL))
    );

    ALTER TABLE sends
        ADD COLUMN IF NOT EXISTS approved_by   text,
        ADD COLUMN IF NOT EXISTS approved_at   timestamptz,
        ADD COLUMN IF NOT EXISTS rejected_by   text,
        ADD COLUMN IF NOT EXISTS rejected_at   timestamptz,
        ADD COLUMN IF NOT EXISTS review_note   text,
        -- why the rules caught it: 'free_text' or 'above:<N>'; NULL: not caught
        ADD COLUMN IF NOT EXISTS review_reason text,
        -- while it waits in review: when the review expires
        ADD COLUMN IF NOT EXISTS review_due_at timestamptz,
        -- an urgent send that went at once, to be reviewed after the fact
        ADD COLUMN IF NOT EXISTS review_after  boolean NOT NULL DEFAULT false,
        -- why a cancelled send was: 'rejected', 'review expired'; NULL: its sender cancelled it
        ADD COLUMN IF NOT EXISTS cancel_reason text;
    CREATE INDEX IF NOT EXISTS sends_review ON sends (review_due_at)
        WHERE review_due_at IS NOT NULL;
    CREATE INDEX IF NOT EXISTS sends_review_after ON sends (id)
        WHERE review_after AND approved_at IS NULL AND rejected_at IS NULL;
    """)


def downgrade() -> None:
    run_script("""
    DROP INDEX IF EXISTS sends_review_after;
    DROP INDEX IF EXISTS sends_review;
    ALTER TABLE sends
        DROP COLUMN IF EXISTS cancel_reason, DROP COLUMN IF EXISTS review_after,
        DROP COLUMN IF EXISTS review_due_at, DROP COLUMN IF EXISTS review_reason,
        DROP COLUMN IF EXISTS review_note, DROP COLUMN IF EXISTS rejected_at,
        DROP COLUMN IF EXISTS rejected_by, DROP COLUMN IF EXISTS approved_at,
        DROP COLUMN IF EXISTS approved_by;
    DROP TABLE IF EXISTS review_rules;
    """)
