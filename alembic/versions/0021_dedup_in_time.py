"""Dedup in time: content keys know when their copy is due; relying copies; bounded tables.

Revision ID: 0021
Revises: 0019
Create Date: 2026-12-03
"""

from hub.db import run_script

revision = "0021"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    -- When the key's holder is due: the window runs from there (expires_at = due_at + window),
    -- and a copy due earlier than a holder that has not gone out takes the key from it.
    ALTER TABLE dedup_keys ADD COLUMN due_at timestamptz;
    UPDATE dedup_keys d SET due_at = s.due_at
    FROM messages m JOIN sends s ON s.id = m.send_id
    WHERE m.id = d.message_id;
    UPDATE dedup_keys SET due_at = expires_at - interval '24 hours' WHERE due_at IS NULL;
    ALTER TABLE dedup_keys ALTER COLUMN due_at SET NOT NULL;
    -- A holder that fails, expires or is cancelled hands its key on (found by its message).
    CREATE INDEX dedup_keys_message ON dedup_keys (message_id);
    -- The purge cron finds what is past its window.
    CREATE INDEX dedup_keys_expires ON dedup_keys (expires_at);
    CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
    CREATE INDEX unmatched_receipts_received ON unmatched_receipts (received_at);
    -- Their ages are read against the hub's clock.
    ALTER TABLE unmatched_receipts ALTER COLUMN received_at SET DEFAULT hub_now();

    -- A `deduplicated` message with no done_at still relies on its original (its segments stay
    -- reserved until the original is sent, or it goes out itself); done_at set: settled. Those
    -- deduplicated before this migration were settled when they were marked.
    UPDATE messages SET done_at = updated_at WHERE status = 'deduplicated' AND done_at IS NULL;
    CREATE INDEX messages_relying ON messages (duplicate_of)
        WHERE status = 'deduplicated' AND done_at IS NULL;
    """)


def downgrade() -> None:
    run_script("""
    DROP INDEX messages_relying;
    ALTER TABLE unmatched_receipts ALTER COLUMN received_at SET DEFAULT now();
    DROP INDEX unmatched_receipts_received;
    DROP INDEX idempotency_keys_expires;
    DROP INDEX dedup_keys_expires;
    DROP INDEX dedup_keys_message;
    ALTER TABLE dedup_keys DROP COLUMN due_at;
    """)
