"""Quota leases: a tenant under pooled ancestors leases blocks of their quota (issue 17, point 3).

`quota_leases` holds each block a tenant leased of its pooled ancestors' quota for a month:
reserved on every one of them (`accounts`) when taken, drawn from by the tenant's reservations
(`quota_reservations.lease_id`) with only the tenant's own row locked, and returned (what is
undrawn released) when it expires, at the latest at the end of its month. Two entry kinds log
it on the ancestors: `lease` (reserved += amount) and `return` (reserved -= what was undrawn).
The functions live in hub/quota/sql/lease.sql.

Revision ID: 0043
Revises: 0042
Create Date: 2026-12-04
"""

from hub.db import run_script, sql_file

revision = "0043"
down_revision = "0042"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    ALTER TYPE quota_entry_kind ADD VALUE 'lease';
    ALTER TYPE quota_entry_kind ADD VALUE 'return';
    CREATE TYPE lease_status AS ENUM ('active', 'returned');
    CREATE TABLE quota_leases (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account_id  bigint NOT NULL REFERENCES quota_accounts (id),  -- the holder's
        tenant_id   bigint NOT NULL REFERENCES tenants (id),
        period      date NOT NULL,
        accounts    bigint[] NOT NULL,           -- the pooled ancestors' it is held on
        amount      bigint NOT NULL CHECK (amount > 0),
        drawn       bigint NOT NULL DEFAULT 0 CHECK (drawn >= 0 AND drawn <= amount),
        status      lease_status NOT NULL DEFAULT 'active',
        created_at  timestamptz NOT NULL DEFAULT hub_now(),
        expires_at  timestamptz NOT NULL,
        returned_at timestamptz,
        CHECK ((status = 'active') = (returned_at IS NULL))
    ) WITH (fillfactor = 70);
    -- One active lease per holder; the sweeper's due leases.
    CREATE UNIQUE INDEX quota_leases_active ON quota_leases (account_id)
        WHERE status = 'active';
    CREATE INDEX quota_leases_due ON quota_leases (expires_at) WHERE status = 'active';
    CREATE INDEX quota_leases_period ON quota_leases (period);
    ALTER TABLE quota_reservations ADD COLUMN lease_id bigint REFERENCES quota_leases (id);
    CREATE INDEX quota_reservations_lease ON quota_reservations (lease_id)
        WHERE lease_id IS NOT NULL;
    """)
    run_script(sql_file("hub/quota/sql/lease.sql"))


def downgrade() -> None:
    # The ledger is append-only: once a lease was taken, its entries are part of every balance's
    # history (and an active one holds quota on the ancestors), so going back would lose money
    # history. Only a hub that never leased goes back.
    run_script("""
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM quota_leases) THEN
            RAISE EXCEPTION 'quota leases were taken: the ledger cannot go back before 0043';
        END IF;
    END $$;
    DROP FUNCTION quota_draw;
    DROP FUNCTION quota_return_leases;
    DROP FUNCTION quota_return_lease;
    DROP FUNCTION quota_hold;
    -- (lease.sql's since 0045, and called by quota_reserve: an account then holds for its
    -- alerts what it holds; 0003's downgrade drops both)
    CREATE OR REPLACE FUNCTION quota_alert_held(p_account bigint, p_held bigint)
    RETURNS bigint LANGUAGE sql STABLE AS 'SELECT p_held';
    ALTER TABLE quota_reservations DROP COLUMN lease_id;
    DROP TABLE quota_leases;
    DROP TYPE lease_status;
    -- Enum values cannot be dropped: rebuild the type without them.
    ALTER TYPE quota_entry_kind RENAME TO quota_entry_kind_old;
    CREATE TYPE quota_entry_kind AS ENUM
        ('open', 'limit', 'allocate', 'policy', 'reserve', 'post', 'void', 'expire', 'use');
    ALTER TABLE quota_entries
        ALTER COLUMN kind TYPE quota_entry_kind USING kind::text::quota_entry_kind;
    DROP TYPE quota_entry_kind_old;
    """)
