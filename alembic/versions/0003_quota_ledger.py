"""Quota ledger: accounts per (tenant, month), reservations, an append-only entry log, events.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from hub.db import run_script

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE TYPE quota_policy AS ENUM ('strict', 'pooled');
    CREATE TYPE quota_entry_kind AS ENUM
        ('open', 'limit', 'allocate', 'policy', 'reserve', 'post', 'void', 'expire');
    CREATE TYPE reservation_status AS ENUM ('pending', 'posted', 'voided', 'expired');

    -- What a tenant's account opens with when a month starts (set by its parent).
    CREATE TABLE quota_defaults (
        tenant_id     bigint PRIMARY KEY REFERENCES tenants (id),
        monthly_limit bigint CHECK (monthly_limit >= 0),      -- NULL: no default, opens at 0
        policy        quota_policy NOT NULL DEFAULT 'strict',
        updated_at    timestamptz NOT NULL DEFAULT now(),
        updated_by    text NOT NULL
    );

    -- One account per (tenant, month in Asia/Shanghai). `used` and `reserved` are what has been
    -- charged to this account: the tenant's own sends, plus its descendants' when it is pooled.
    -- `allocated` is the sum of its children's limits for the month.
    CREATE TABLE quota_accounts (
        id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id      bigint NOT NULL REFERENCES tenants (id),
        period         date NOT NULL CHECK (extract(day FROM period) = 1),
        depth          smallint NOT NULL,                      -- lock order: root first
        policy         quota_policy NOT NULL,
        limit_segments bigint NOT NULL CHECK (limit_segments >= 0),
        used           bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
        reserved       bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
        allocated      bigint NOT NULL DEFAULT 0 CHECK (allocated >= 0),
        opened_at      timestamptz NOT NULL DEFAULT now(),
        UNIQUE (tenant_id, period),
        -- The ledger's invariants, enforced by the database as a last line of defence.
        CHECK (used + reserved <= limit_segments),
        CHECK (policy = 'pooled' OR used + reserved + allocated <= limit_segments)
    );

    CREATE TABLE quota_reservations (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id  bigint NOT NULL REFERENCES tenants (id),
        period     date NOT NULL,
        accounts   bigint[] NOT NULL,                     -- the accounts charged, root first
        amount     bigint NOT NULL CHECK (amount > 0),
        posted     bigint CHECK (posted >= 0 AND posted <= amount),
        status     reservation_status NOT NULL DEFAULT 'pending',
        cause      text NOT NULL,
        actor      text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        settled_at timestamptz,
        CHECK ((status = 'pending') = (settled_at IS NULL)),
        CHECK ((status = 'posted') = (posted IS NOT NULL))
    );
    CREATE INDEX quota_reservations_expiry ON quota_reservations (expires_at)
        WHERE status = 'pending';
    CREATE INDEX quota_reservations_period_tenant ON quota_reservations (period, tenant_id);

    -- Append-only: every change to an account, with its balances before and after.
    CREATE TABLE quota_entries (
        id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account_id       bigint NOT NULL REFERENCES quota_accounts (id),
        kind             quota_entry_kind NOT NULL,
        amount           bigint NOT NULL,
        limit_before     bigint NOT NULL,
        limit_after      bigint NOT NULL,
        used_before      bigint NOT NULL,
        used_after       bigint NOT NULL,
        reserved_before  bigint NOT NULL,
        reserved_after   bigint NOT NULL,
        allocated_before bigint NOT NULL,
        allocated_after  bigint NOT NULL,
        reservation_id   bigint REFERENCES quota_reservations (id),
        cause            text NOT NULL,
        actor            text NOT NULL,
        created_at       timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX quota_entries_account ON quota_entries (account_id, id);

    -- 80 % and 100 % of a limit reached: once per threshold per account.
    CREATE TABLE quota_events (
        account_id     bigint NOT NULL REFERENCES quota_accounts (id),
        threshold      smallint NOT NULL CHECK (threshold IN (80, 100)),
        used           bigint NOT NULL,
        reserved       bigint NOT NULL,
        limit_segments bigint NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (account_id, threshold)
    );
    """)


def downgrade() -> None:
    run_script("""
    DROP TABLE quota_events;
    DROP TABLE quota_entries;
    DROP TABLE quota_reservations;
    DROP TABLE quota_accounts;
    DROP TABLE quota_defaults;
    DROP TYPE reservation_status;
    DROP TYPE quota_entry_kind;
    DROP TYPE quota_policy;
    """)
