"""A gateway's references are looked up in a narrow table of their own, not in an index on
`messages`: recording `sent` can be a HOT update, like the claim and the receipt.

`messages_reference` (one per month's partition) named the column that recording `sent` sets,
so that update wrote a new heap tuple and a new entry in each of the message's four indexes,
for every message (docs/BENCHMARKS.md, issue 17 point 4). `message_references` holds (message,
gateway, reference), one row per message with a reference, written by the statement that sets
it: a receipt finds its message there with one probe, not one per month's partition. The
message keeps its `reference` and everything else a receipt checks (when it was sent, its
status): every lookup checks the row against it.

Its rows go with their messages: the retention run deletes those of months before its cutoff's
whose message is gone (hub/retention).

**The running version cannot live beside it** (docs/OPERATIONS.md, upgrades): its workers would
record `sent` without the row, and those messages' receipts would never match. Stop the API and
the workers for it. The backfill reads every partition under a lock that holds off writes to
`messages` (reads go on), so no `sent` committed meanwhile is missed.

Revision ID: 0050
Revises: 0049
Create Date: 2026-12-05
"""

from hub.db import run_script

revision = "0050"
down_revision = "0049"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    -- Who holds a gateway's reference: the newest message sent within the gateway's receipt
    -- window is the one its receipt is for (hub.delivery).
    CREATE TABLE message_references (
        message_id bigint PRIMARY KEY,
        gateway text NOT NULL,
        reference text NOT NULL
    );
    LOCK TABLE messages IN SHARE MODE;
    INSERT INTO message_references (message_id, gateway, reference)
    SELECT id, gateway, reference FROM messages WHERE reference IS NOT NULL AND gateway IS NOT NULL;
    CREATE INDEX message_references_held ON message_references (gateway, reference);
    ANALYZE message_references;
    DROP INDEX messages_reference;
    """)


def downgrade() -> None:
    run_script("""
    CREATE INDEX messages_reference ON messages (reference) WHERE reference IS NOT NULL;
    DROP TABLE message_references;
    """)
