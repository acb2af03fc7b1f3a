"""Messages partitioned by month (issue 15, point 3), ready for retention (point 4).

`messages` becomes a table partitioned by RANGE on `id`, and a message's id carries its month
(hub/messages/sql/months.sql: `hub_message_id()`, `(month index << 40) + nextval`): a query by
message id prunes to one partition with no change to its SQL, and a query by send adds its
send's month range (`hub_send_messages_from/to`). Partitions are `messages_YYYY_MM`; the rows
that exist keep their ids (all below 2^40) in `messages_before`, which is the old table itself,
attached for [MINVALUE, 2^40): nothing is copied. `messages_default` catches
a message of a month whose partition is not made yet; the worker's daily cron and `hub migrate`
make this month's and the next two (hub.messages.months). `phone` and `body` are nullable:
retention erases them. `sends.summary` keeps a send's counts once retention dropped its
messages.

The old table's NOT VALID check (`messages_segments_sent`) is validated here (one scan under a
SHARE UPDATE EXCLUSIVE lock, writes go on), as attaching needs every check proven.

Revision ID: 0038
Revises: 0035
Create Date: 2026-12-03
"""

from hub.db import run_script, sql_file

revision = "0038"
down_revision = "0037"
branch_labels = None
depends_on = None

FUNCTIONS = "hub/messages/sql/months.sql"


def upgrade() -> None:
    run_script("""
    -- Where a send's messages are: the first id of its month (its messages are written in its
    -- transaction), 0 for those from before (messages_before). Set apart from created_at, which
    -- tests and tools move.
    ALTER TABLE sends ADD COLUMN IF NOT EXISTS message_ids_from bigint NOT NULL DEFAULT 0;
    -- A send's messages counted by status, kept by retention before it drops them
    -- (hub.messages.retention): {"statuses": {status: messages}, "segments": {status: segments},
    -- "first_sent", "last_done"}. The send's counts and its archive read it once set
    -- (hub.messages.repository.STATUS_COUNTS, ARCHIVE_COUNTS).
    ALTER TABLE sends ADD COLUMN IF NOT EXISTS summary jsonb;
    """)
    run_script(sql_file(FUNCTIONS))
    run_script("""
    ALTER TABLE sends ALTER COLUMN message_ids_from SET DEFAULT hub_month_floor(hub_now());
    ALTER TABLE messages VALIDATE CONSTRAINT messages_segments_sent;
    LOCK TABLE messages IN ACCESS EXCLUSIVE MODE;
    ALTER TABLE messages RENAME TO messages_before;
    ALTER INDEX messages_pkey RENAME TO messages_before_pkey;
    ALTER INDEX messages_reference RENAME TO messages_before_reference;
    ALTER INDEX messages_relying RENAME TO messages_before_relying;
    ALTER INDEX messages_send RENAME TO messages_before_send;
    ALTER TABLE messages_before ALTER COLUMN phone DROP NOT NULL;

    -- The identity's sequence goes with it; a plain sequence takes over where it stopped.
    DO $$
    DECLARE
        last bigint := (SELECT coalesce(max(id), 0) FROM messages_before);
    BEGIN
        ALTER TABLE messages_before ALTER COLUMN id DROP IDENTITY;
        EXECUTE format('CREATE SEQUENCE messages_id_seq AS bigint START %s', last + 1);
    END $$;

    CREATE TABLE messages (
        id bigint NOT NULL DEFAULT hub_message_id(),
        send_id bigint NOT NULL,
        tenant_id bigint NOT NULL,
        phone text,  -- NULL once retention erased it
        carrier text NOT NULL,
        status message_status NOT NULL,
        segments smallint NOT NULL,
        duplicate_of bigint,
        duplicate_tenant_id bigint,
        created_at timestamptz NOT NULL DEFAULT hub_now(),
        updated_at timestamptz NOT NULL DEFAULT hub_now(),
        gateway text,
        reference text,
        attempts smallint NOT NULL DEFAULT 0,
        lease_until timestamptz,
        submitted_at timestamptz,
        retry_at timestamptz,
        sent_at timestamptz,
        done_at timestamptz,
        error text,
        segments_sent smallint,
        body text,  -- NULL once retention erased it
        CONSTRAINT messages_check
            CHECK ((status = 'deduplicated'::message_status) = (duplicate_of IS NOT NULL)),
        CONSTRAINT messages_segments_sent CHECK (segments_sent >= 1 AND segments_sent < segments),
        CONSTRAINT messages_pkey PRIMARY KEY (id)
    ) PARTITION BY RANGE (id);
    ALTER SEQUENCE messages_id_seq OWNED BY messages.id;
    CREATE INDEX messages_reference ON messages (gateway, reference) WHERE reference IS NOT NULL;
    CREATE INDEX messages_relying ON messages (duplicate_of)
        WHERE status = 'deduplicated' AND done_at IS NULL;
    CREATE INDEX messages_send ON messages (send_id, id) INCLUDE (status);

    -- The old table's indexes match the parent's, so attaching adopts them (nothing is built).
    -- Its ids came from a plain sequence: all below 2^40, the first id of month index 1
    -- (2000-02), so every real month can have a partition of its own.
    ALTER TABLE messages_before ADD CONSTRAINT messages_before_ids CHECK (id < 1099511627776);
    ALTER TABLE messages ATTACH PARTITION messages_before
        FOR VALUES FROM (MINVALUE) TO (1099511627776);
    ALTER TABLE messages_before DROP CONSTRAINT messages_before_ids;
    CREATE TABLE messages_default PARTITION OF messages DEFAULT;
    SELECT hub_message_partitions(hub_now(), 2);
    """)


def downgrade() -> None:
    run_script("""
    LOCK TABLE messages IN ACCESS EXCLUSIVE MODE;
    CREATE TABLE messages_flat (LIKE messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
    INSERT INTO messages_flat SELECT * FROM messages;
    ALTER SEQUENCE messages_id_seq OWNED BY NONE;
    DROP TABLE messages;
    ALTER TABLE messages_flat RENAME TO messages;
    ALTER TABLE messages ALTER COLUMN id DROP DEFAULT;
    DO $$
    DECLARE
        last bigint := (SELECT coalesce(max(id), 0) FROM messages);
    BEGIN
        DROP SEQUENCE messages_id_seq;
        EXECUTE format('ALTER TABLE messages ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY
                        (SEQUENCE NAME messages_id_seq START %s)', last + 1);
    END $$;
    ALTER TABLE messages ALTER COLUMN phone SET NOT NULL;
    ALTER TABLE messages ADD PRIMARY KEY (id);
    CREATE INDEX messages_reference ON messages (gateway, reference) WHERE reference IS NOT NULL;
    CREATE INDEX messages_relying ON messages (duplicate_of)
        WHERE status = 'deduplicated' AND done_at IS NULL;
    CREATE INDEX messages_send ON messages (send_id, id) INCLUDE (status);
    ALTER TABLE sends DROP COLUMN message_ids_from, DROP COLUMN summary;
    DROP FUNCTION hub_message_partitions(timestamptz, int), hub_send_messages_to(bigint),
        hub_least_id(bigint[]), hub_greatest_id(bigint[]),
        hub_send_messages_from(bigint), hub_message_id(), hub_month_floor(timestamptz),
        hub_month_index(timestamptz);
    """)
