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

    -- Reserve p_amount on the accounts p_accounts (the sender's and its pooled ancestors'):
    -- lock them root first, and if every one has room, record the reservation, charge each,
    -- log an entry per account and note thresholds crossed. Otherwise change nothing and return
    -- the highest account without room. One round trip, so the chain's row locks are held only
    -- while the server works (plus the caller's COMMIT). Each statement in a function takes a
    -- fresh snapshot, so the UPDATE sees exactly the rows the FOR UPDATE loop locked and checked.
    CREATE FUNCTION quota_reserve(
        p_accounts bigint[], p_amount bigint, p_tenant bigint, p_period date,
        p_cause text, p_actor text, p_ttl double precision
    ) RETURNS TABLE (
        reservation_id bigint, expires_at timestamptz, short_account bigint,
        short_tenant bigint, short_policy text, short_limit bigint, short_used bigint,
        short_reserved bigint, short_allocated bigint
    ) LANGUAGE plpgsql AS $fn$
    DECLARE
        acc record;
        short record;
        new_id bigint;
        new_expiry timestamptz;
        held bigint;
    BEGIN
        FOR acc IN
            SELECT a.id, a.tenant_id, a.policy, a.limit_segments, a.used, a.reserved, a.allocated
            FROM quota_accounts a WHERE a.id = ANY(p_accounts)
            ORDER BY a.depth, a.id
            FOR UPDATE
        LOOP
            -- (computed apart: plpgsql would read a CASE's THEN inside IF as the IF's own)
            held := acc.used + acc.reserved + p_amount;
            IF acc.policy = 'strict' THEN
                held := held + acc.allocated;
            END IF;
            IF short IS NULL AND held > acc.limit_segments THEN
                short := acc;
            END IF;
        END LOOP;
        IF short IS NOT NULL THEN
            RETURN QUERY SELECT NULL::bigint, NULL::timestamptz, short.id, short.tenant_id,
                short.policy::text, short.limit_segments, short.used, short.reserved,
                short.allocated;
            RETURN;
        END IF;

        INSERT INTO quota_reservations AS r
            (tenant_id, period, accounts, amount, cause, actor, expires_at)
        VALUES (p_tenant, p_period, p_accounts, p_amount, p_cause, p_actor,
                now() + make_interval(secs => p_ttl))
        RETURNING r.id, r.expires_at INTO new_id, new_expiry;

        WITH charged AS (
            UPDATE quota_accounts a SET reserved = a.reserved + p_amount
            WHERE a.id = ANY(p_accounts)
            RETURNING a.id, a.limit_segments, a.used, a.reserved, a.allocated
        ), logged AS (
            INSERT INTO quota_entries (account_id, kind, amount, limit_before, limit_after,
                used_before, used_after, reserved_before, reserved_after, allocated_before,
                allocated_after, reservation_id, cause, actor)
            SELECT c.id, 'reserve', p_amount, c.limit_segments, c.limit_segments, c.used,
                   c.used, c.reserved - p_amount, c.reserved, c.allocated, c.allocated, new_id,
                   p_cause, p_actor
            FROM charged c
        )
        INSERT INTO quota_events (account_id, threshold, used, reserved, limit_segments)
        SELECT c.id, t.threshold, c.used, c.reserved, c.limit_segments
        FROM charged c CROSS JOIN (VALUES (80), (100)) AS t(threshold)
        WHERE c.limit_segments > 0
          AND (c.used + c.reserved) * 100 >= t.threshold * c.limit_segments
        ON CONFLICT DO NOTHING;

        RETURN QUERY SELECT new_id, new_expiry, NULL::bigint, NULL::bigint, NULL::text,
            NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint;
    END
    $fn$;
    """)


def downgrade() -> None:
    run_script("""
    DROP FUNCTION quota_reserve;
    -- (hub/quota/sql/lease.sql's, loaded by 0043; quota_reserve calls them from 0045 on)
    DROP FUNCTION IF EXISTS quota_note_thresholds;
    DROP FUNCTION IF EXISTS quota_alert_held;
    DROP TABLE quota_events;
    DROP TABLE quota_entries;
    DROP TABLE quota_reservations;
    DROP TABLE quota_accounts;
    DROP TABLE quota_defaults;
    DROP TYPE reservation_status;
    DROP TYPE quota_entry_kind;
    DROP TYPE quota_policy;
    """)
