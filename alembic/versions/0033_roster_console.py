"""The roster in the console: re-subscriptions with their reason and actor, and roster uploads
held between their preview and their confirmation.

`resubscriptions`: an opted-out phone (opt_outs) taken back into a tenant's messages only with a
recorded reason and who did it; the opt-out row is deleted, this row stays (with when the phone
had opted out). `roster_uploads`: a file uploaded on the import page, parsed for the preview and
held (bounded by the API's roster size) until it is confirmed or 30 minutes pass; only its
SHA-256 token's hash is kept, and confirming deletes it.

Revision ID: 0033
Revises: 0031
Create Date: 2026-12-15
"""

from hub.db import run_script

revision = "0033"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE TABLE resubscriptions (
        id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id    bigint NOT NULL REFERENCES tenants (id),
        phone        text NOT NULL,
        opted_out_at timestamptz NOT NULL,
        reason       text NOT NULL CHECK (length(btrim(reason)) BETWEEN 1 AND 200),
        actor        text NOT NULL CHECK (length(actor) BETWEEN 1 AND 90),
        at           timestamptz NOT NULL DEFAULT hub_now()
    );
    CREATE INDEX resubscriptions_tenant_phone ON resubscriptions (tenant_id, phone, at);

    CREATE TABLE roster_uploads (
        token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
        tenant_id  bigint NOT NULL REFERENCES tenants (id),
        actor      text NOT NULL,
        filename   text NOT NULL CHECK (length(filename) <= 200),
        data       bytea NOT NULL CHECK (length(data) <= 20 * 1024 * 1024),
        created_at timestamptz NOT NULL DEFAULT hub_now()
    );
    CREATE INDEX roster_uploads_created ON roster_uploads (created_at);
    """)


def downgrade() -> None:
    run_script("""
    DROP TABLE roster_uploads;
    DROP TABLE resubscriptions;
    """)
