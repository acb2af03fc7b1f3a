"""Sends and their messages, cross-tenant dedup keys, idempotency keys, opt-outs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from hub.db import run_script

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE TYPE message_status AS ENUM ('accepted', 'sending', 'sent', 'delivered',
        'undelivered', 'failed', 'deduplicated', 'rejected', 'opted_out', 'cancelled', 'expired');
    CREATE TYPE send_priority AS ENUM ('urgent', 'normal', 'bulk');

    -- One POST /v1/messages: the text, who asked, what it reserved.
    CREATE TABLE sends (
        id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id          bigint NOT NULL REFERENCES tenants (id),
        signature          text NOT NULL,
        body               text NOT NULL,                -- rendered, without the signature
        encoding           text NOT NULL CHECK (encoding IN ('gsm7', 'ucs2')),
        segments_each      smallint NOT NULL CHECK (segments_each BETWEEN 1 AND 8),
        priority           send_priority NOT NULL,
        dedup              boolean NOT NULL,
        recipients         integer NOT NULL,             -- as submitted, repeats included
        repeats            integer NOT NULL,             -- the same phone twice in the request
        rejects            jsonb NOT NULL,               -- [{to, reason}]
        reservation_id     bigint REFERENCES quota_reservations (id),
        segments           bigint NOT NULL,              -- reserved: accepted * segments_each
        list_price_micros  bigint NOT NULL,              -- what those segments cost alone
        actor              text NOT NULL,               -- key:<prefix> or campaign:<id>
        created_at         timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX sends_tenant ON sends (tenant_id, id);

    -- One row per unique valid recipient of a send. The hub's biggest table, written by COPY a
    -- million rows at a time: no foreign keys here or on dedup_keys (their per-row checks made
    -- COPY 4x slower, measured); send_id/tenant_id/duplicate_of are written by the one service
    -- that also writes the rows they point at, in the same transaction.
    CREATE TABLE messages (
        id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        send_id             bigint NOT NULL,
        tenant_id           bigint NOT NULL,
        phone               text NOT NULL,
        carrier             text NOT NULL,
        status              message_status NOT NULL,
        segments            smallint NOT NULL,
        -- Deduplicated: the message that already reached this phone, and its tenant.
        duplicate_of        bigint,
        duplicate_tenant_id bigint,
        created_at          timestamptz NOT NULL DEFAULT now(),
        updated_at          timestamptz NOT NULL DEFAULT now(),
        CHECK ((status = 'deduplicated') = (duplicate_of IS NOT NULL))
    );
    CREATE INDEX messages_send ON messages (send_id, id);

    -- Layer 3: BLAKE2b-128(phone ‖ normalised body) claimed by the first message within the window.
    CREATE TABLE dedup_keys (
        key        bytea PRIMARY KEY CHECK (length(key) = 16),
        message_id bigint NOT NULL,
        tenant_id  bigint NOT NULL,
        expires_at timestamptz NOT NULL
    );

    -- Layer 1: a creating POST's Idempotency-Key and the answer it got, per tenant.
    CREATE TABLE idempotency_keys (
        tenant_id    bigint NOT NULL REFERENCES tenants (id),
        key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
        request_hash bytea NOT NULL,
        status_code  smallint NOT NULL,
        response     bytea NOT NULL,
        created_at   timestamptz NOT NULL DEFAULT now(),
        expires_at   timestamptz NOT NULL,
        PRIMARY KEY (tenant_id, key)
    );

    -- Phones that opted out of a tenant's messages (replies T, TD, 退订, 取消, N).
    CREATE TABLE opt_outs (
        tenant_id  bigint NOT NULL REFERENCES tenants (id),
        phone      text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, phone)
    );
    """)


def downgrade() -> None:
    run_script("""
    DROP TABLE opt_outs;
    DROP TABLE idempotency_keys;
    DROP TABLE dedup_keys;
    DROP TABLE messages;
    DROP TABLE sends;
    DROP TYPE send_priority;
    DROP TYPE message_status;
    """)
