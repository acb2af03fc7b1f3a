"""Delivery: message leases and outcomes, partial quota settlement, receipts, replies, outbox.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from hub.db import run_script

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    -- A delivery batch settles its part of the send's one reservation: `use` moves segments
    -- from reserved to used, a partial `void` releases them.
    ALTER TYPE quota_entry_kind ADD VALUE 'use';
    ALTER TABLE quota_reservations
        ADD COLUMN used_part bigint NOT NULL DEFAULT 0 CHECK (used_part >= 0),
        ADD COLUMN released_part bigint NOT NULL DEFAULT 0 CHECK (released_part >= 0),
        ADD CHECK (used_part + released_part <= amount);

    -- A send is `done` once none of its messages can still change by our hand.
    ALTER TYPE send_state ADD VALUE 'done';

    ALTER TABLE messages
        ADD COLUMN gateway      text,          -- the gateway that took (or last tried) it
        ADD COLUMN reference    text,          -- the gateway's id for it; receipts carry it
        ADD COLUMN attempts     smallint NOT NULL DEFAULT 0,
        ADD COLUMN lease_until  timestamptz,   -- while `sending`: a worker owns it until then
        ADD COLUMN submitted_at timestamptz,   -- handed to the gateway (outcome maybe unknown)
        ADD COLUMN retry_at     timestamptz,   -- `accepted` again after a transient error
        ADD COLUMN sent_at      timestamptz,
        ADD COLUMN done_at      timestamptz,   -- reached a final status
        ADD COLUMN error        text;
    CREATE INDEX messages_reference ON messages (gateway, reference)
        WHERE reference IS NOT NULL;

    -- Receipts whose reference matched no message (yet): counted, kept, applied if it turns up.
    CREATE TABLE unmatched_receipts (
        gateway     text NOT NULL,
        reference   text NOT NULL,
        status      message_status NOT NULL CHECK (status IN ('delivered', 'undelivered')),
        code        text NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (gateway, reference)
    );

    -- The embedded `outbox` gateway: what it was given, once per message.
    CREATE TABLE outbox (
        message_id bigint PRIMARY KEY,
        gateway    text NOT NULL,
        phone      text NOT NULL,
        sender     text NOT NULL,
        text       text NOT NULL,
        segments   smallint NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );

    -- Replies (mobile-originated messages) routed to a tenant by the address they were sent to.
    CREATE TABLE inbound (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id   bigint NOT NULL REFERENCES tenants (id),
        gateway     text NOT NULL,
        reference   text NOT NULL,     -- the gateway's id for it ('' if it gives none)
        phone       text NOT NULL,
        address     text NOT NULL,     -- what it was sent to: service number + extension…
        text        text NOT NULL,
        opt_out     boolean NOT NULL,  -- T, TD, 退订, 取消, N
        received_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX inbound_tenant ON inbound (tenant_id, id);
    CREATE UNIQUE INDEX inbound_reference ON inbound (gateway, reference) WHERE reference <> '';

    -- Where a tenant wants its replies pushed, and the secret that signs them.
    CREATE TABLE webhooks (
        tenant_id  bigint PRIMARY KEY REFERENCES tenants (id),
        url        text NOT NULL,
        secret     text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE webhook_deliveries (
        id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id    bigint NOT NULL REFERENCES tenants (id),
        inbound_id   bigint NOT NULL REFERENCES inbound (id),
        attempts     smallint NOT NULL DEFAULT 0,
        next_at      timestamptz NOT NULL DEFAULT now(),
        delivered_at timestamptz,
        last_error   text,
        UNIQUE (tenant_id, inbound_id)
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at)
        WHERE delivered_at IS NULL;
    """)


def downgrade() -> None:
    run_script("""
    DROP TABLE webhook_deliveries;
    DROP TABLE webhooks;
    DROP TABLE inbound;
    DROP TABLE outbox;
    DROP TABLE unmatched_receipts;
    DROP INDEX messages_reference;
    ALTER TABLE messages DROP COLUMN gateway, DROP COLUMN reference, DROP COLUMN attempts,
        DROP COLUMN lease_until, DROP COLUMN submitted_at, DROP COLUMN retry_at,
        DROP COLUMN sent_at, DROP COLUMN done_at, DROP COLUMN error;
    ALTER TABLE quota_reservations DROP COLUMN used_part, DROP COLUMN released_part;
    -- Enum values cannot be dropped: rebuild the two types without them.
    UPDATE sends SET state = 'queued' WHERE state = 'done';
    ALTER TYPE send_state RENAME TO send_state_old;
    CREATE TYPE send_state AS ENUM ('scheduled', 'held', 'queued', 'cancelled');
    DROP INDEX sends_due;
    ALTER TABLE sends ALTER COLUMN state DROP DEFAULT,
        ALTER COLUMN state TYPE send_state USING state::text::send_state,
        ALTER COLUMN state SET DEFAULT 'queued';
    CREATE INDEX sends_due ON sends (due_at) WHERE state IN ('scheduled', 'held');
    DROP TYPE send_state_old;
    DELETE FROM quota_entries WHERE kind = 'use';
    ALTER TYPE quota_entry_kind RENAME TO quota_entry_kind_old;
    CREATE TYPE quota_entry_kind AS ENUM
        ('open', 'limit', 'allocate', 'policy', 'reserve', 'post', 'void', 'expire');
    ALTER TABLE quota_entries
        ALTER COLUMN kind TYPE quota_entry_kind USING kind::text::quota_entry_kind;
    DROP TYPE quota_entry_kind_old;
    """)
