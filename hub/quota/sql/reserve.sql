-- quota_reserve: loaded by migrations (0015 onwards, again by 0045); change it here and add a
-- migration that loads it again (hub.db.sql_file).
-- Reserve p_amount on the accounts p_accounts (the sender's and its pooled ancestors'):
-- lock them root first, and if every one has room, record the reservation, charge each,
-- log an entry per account and note thresholds crossed. Otherwise change nothing and return
-- the highest account without room. One round trip, so the chain's row locks are held only
-- while the server works (plus the caller's COMMIT). Each statement in a function takes a
-- fresh snapshot, so the UPDATE sees exactly the rows the FOR UPDATE loop locked and checked.
CREATE OR REPLACE FUNCTION quota_reserve(
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
            hub_now() + make_interval(secs => p_ttl))
    RETURNING r.id, r.expires_at INTO new_id, new_expiry;

    WITH charged AS (
        UPDATE quota_accounts a SET reserved = a.reserved + p_amount
        WHERE a.id = ANY(p_accounts)
        RETURNING a.id, a.limit_segments, a.used, a.reserved, a.allocated
    )
    INSERT INTO quota_entries (account_id, kind, amount, limit_before, limit_after,
        used_before, used_after, reserved_before, reserved_after, allocated_before,
        allocated_after, reservation_id, cause, actor)
    SELECT c.id, 'reserve', p_amount, c.limit_segments, c.limit_segments, c.used,
           c.used, c.reserved - p_amount, c.reserved, c.allocated, c.allocated, new_id,
           p_cause, p_actor
    FROM charged c;
    -- (hub/quota/sql/lease.sql: what an account holds for its alerts leaves out the leases
    -- held on it undrawn; loaded from 0043 on, with 0045 reloading this file)
    PERFORM quota_note_thresholds(p_accounts);

    RETURN QUERY SELECT new_id, new_expiry, NULL::bigint, NULL::bigint, NULL::text,
        NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint;
END
$fn$;
