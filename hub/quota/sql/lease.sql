-- Quota leases (escrow): loaded by migration 0043; change it here and add a migration that
-- loads it again (hub.db.sql_file).
--
-- A tenant whose sends are charged to pooled ancestors leases a block of their quota: the
-- block is reserved on every pooled ancestor at once (one short lock on the chain per block),
-- and the tenant's sends then draw from it with only the tenant's own account and its lease
-- locked. A draw is an ordinary reservation charged to the same accounts (`accounts` holds
-- the ancestors too), so settling it (post, void, use, expire) is unchanged; only reserving
-- skips the ancestors, whose `reserved` already holds the block. What a lease still holds on
-- each ancestor is `amount - drawn`; returning it (expiry, month end, a new lease) releases
-- that. Lock order as everywhere: accounts by (depth, id), then the lease.

-- What account p_account holds for its 80 %/100 % alerts, given p_held (its used + reserved):
-- less what the active leases held on it hold undrawn. A lease is not use: its holder's sends
-- turn it into use as they draw from it, and what is undrawn goes back when it is returned.
-- (The account's `reserved` keeps the whole block: no other tenant may have it meanwhile.)
CREATE OR REPLACE FUNCTION quota_alert_held(p_account bigint, p_held bigint)
RETURNS bigint LANGUAGE sql STABLE AS $fn$
    SELECT p_held - coalesce(sum(l.amount - l.drawn), 0)::bigint
    FROM quota_leases l WHERE l.status = 'active' AND l.accounts @> ARRAY[p_account]
$fn$;

-- Note the 80 %/100 % thresholds of their limits the accounts p_accounts hold now
-- (quota_alert_held), once per account and threshold. An account whose used + reserved is
-- below a threshold holds less still: its leases are not looked up (PostgreSQL runs the cheaper
-- condition first), which is every send's case until its account nears 80 %.
-- (This and quota_hold are plpgsql, not sql, since migration 0051: PostgreSQL before 18 parses
-- and plans a non-inlined sql function's body again on every call, and every reservation calls
-- them; plpgsql keeps their plans for the session.)
CREATE OR REPLACE FUNCTION quota_note_thresholds(p_accounts bigint[])
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO quota_events (account_id, threshold, used, reserved, limit_segments)
    SELECT a.id, t.threshold, a.used, a.reserved, a.limit_segments
    FROM quota_accounts a CROSS JOIN (VALUES (80), (100)) AS t(threshold)
    WHERE a.id = ANY(p_accounts) AND a.limit_segments > 0
      AND (a.used + a.reserved) * 100 >= t.threshold * a.limit_segments
      AND quota_alert_held(a.id, a.used + a.reserved) * 100 >= t.threshold * a.limit_segments
    ON CONFLICT DO NOTHING;
END
$fn$;

-- Hold p_amount more as reserved on each of p_accounts (locked by the caller): one entry of
-- p_kind each, and the 80 %/100 % threshold events that crosses. A lease's block crosses none
-- on the ancestors it is held on: their thresholds are noted when it is returned.
CREATE OR REPLACE FUNCTION quota_hold(p_accounts bigint[], p_amount bigint,
    p_kind quota_entry_kind, p_reservation bigint, p_cause text, p_actor text)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    WITH held AS (
        UPDATE quota_accounts a SET reserved = a.reserved + p_amount
        WHERE a.id = ANY(p_accounts)
        RETURNING a.id, a.limit_segments, a.used, a.reserved, a.allocated
    )
    INSERT INTO quota_entries (account_id, kind, amount, limit_before, limit_after,
        used_before, used_after, reserved_before, reserved_after, allocated_before,
        allocated_after, reservation_id, cause, actor)
    SELECT c.id, p_kind, p_amount, c.limit_segments, c.limit_segments, c.used, c.used,
           c.reserved - p_amount, c.reserved, c.allocated, c.allocated, p_reservation,
           p_cause, p_actor
    FROM held c;
    PERFORM quota_note_thresholds(p_accounts);
END
$fn$;

-- Return lease p_lease (its accounts already locked by the caller): what it holds undrawn is
-- released on each ancestor, one `return` entry each, and the thresholds its draws made them
-- reach are noted (a draw writes the holder's account only). Returns the segments released
-- (0 when it was no longer active).
CREATE OR REPLACE FUNCTION quota_return_lease(p_lease bigint, p_actor text)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    held bigint[];
    back bigint;
BEGIN
    UPDATE quota_leases SET status = 'returned', returned_at = hub_now()
    WHERE id = p_lease AND status = 'active'
    RETURNING accounts, amount - drawn INTO held, back;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF back > 0 THEN
        WITH released AS (
            UPDATE quota_accounts a SET reserved = a.reserved - back
            WHERE a.id = ANY(held)
            RETURNING a.id, a.limit_segments, a.used, a.reserved, a.allocated
        )
        INSERT INTO quota_entries (account_id, kind, amount, limit_before, limit_after,
            used_before, used_after, reserved_before, reserved_after, allocated_before,
            allocated_after, reservation_id, cause, actor)
        SELECT c.id, 'return', back, c.limit_segments, c.limit_segments, c.used, c.used,
               c.reserved + back, c.reserved, c.allocated, c.allocated, NULL,
               'lease:' || p_lease, p_actor
        FROM released c;
    END IF;
    PERFORM quota_note_thresholds(held);
    RETURN back;
END
$fn$;

-- Return the due leases among p_ids (expired: their time, or their month, is over). Locks
-- their accounts root first, then the leases; returns how many were returned.
CREATE OR REPLACE FUNCTION quota_return_leases(p_ids bigint[], p_actor text)
RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    l record;
    n integer := 0;
BEGIN
    PERFORM 1 FROM quota_accounts
    WHERE id IN (SELECT unnest(accounts) FROM quota_leases WHERE id = ANY(p_ids))
    ORDER BY depth, id FOR UPDATE;
    FOR l IN SELECT id FROM quota_leases
             WHERE id = ANY(p_ids) AND status = 'active' AND expires_at <= hub_now()
             ORDER BY id FOR UPDATE LOOP
        PERFORM quota_return_lease(l.id, p_actor);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$fn$;

-- Reserve p_amount for tenant p_tenant from its lease on its pooled ancestors: p_accounts
-- are the charged accounts root first, the tenant's own last (as quota_reserve takes them).
-- Fast path (the lease has room): lock the tenant's account, then its lease, and draw.
-- Otherwise lock the whole chain root first, return the old lease, lease a new block of
-- p_block (or what the ancestors have left, if less) and draw from it; when the ancestors
-- cannot lease even p_amount, quota_reserve does it directly (and names the level short).
-- Returns what quota_reserve returns.
CREATE OR REPLACE FUNCTION quota_draw(
    p_accounts bigint[], p_amount bigint, p_tenant bigint, p_period date,
    p_cause text, p_actor text, p_ttl double precision,
    p_block bigint, p_lease_ttl double precision
) RETURNS TABLE (
    reservation_id bigint, expires_at timestamptz, short_account bigint,
    short_tenant bigint, short_policy text, short_limit bigint, short_used bigint,
    short_reserved bigint, short_allocated bigint
) LANGUAGE plpgsql AS $fn$
DECLARE
    n int := array_length(p_accounts, 1);
    holder bigint := p_accounts[n];
    above bigint[] := p_accounts[1:n - 1];
    own record;
    v_lease bigint;
    free bigint;
    room bigint;
    size bigint;
    held bigint;
    new_id bigint;
    new_expiry timestamptz;
    fast boolean := false;
BEGIN
    -- An unlocked look decides the path; the fast path checks again under the lease's lock.
    SELECT l.id, l.amount - l.drawn INTO v_lease, free FROM quota_leases l
    WHERE l.account_id = holder AND l.status = 'active' AND l.accounts = above
      AND l.expires_at > hub_now();
    IF v_lease IS NOT NULL AND free >= p_amount THEN
        fast := true;
        SELECT * INTO own FROM quota_accounts a WHERE a.id = holder FOR UPDATE;
        SELECT l.amount - l.drawn INTO free FROM quota_leases l
        WHERE l.id = v_lease AND l.status = 'active' AND l.expires_at > hub_now()
        FOR UPDATE;
        IF free IS NULL OR free < p_amount THEN
            -- Another send of this tenant drew it meanwhile. We hold the tenant's lock and
            -- the slow path must lock its ancestors first: roll back (releasing it) and be
            -- tried again (quota_take, hub/quota/sql/take.sql).
            RAISE EXCEPTION 'quota lease % drawn meanwhile', v_lease
                USING ERRCODE = 'serialization_failure';
        END IF;
    ELSE
        PERFORM 1 FROM quota_accounts a WHERE a.id = ANY(p_accounts)
        ORDER BY a.depth, a.id FOR UPDATE;
        SELECT * INTO own FROM quota_accounts a WHERE a.id = holder;
        v_lease := NULL;
        SELECT l.id, l.amount - l.drawn INTO v_lease, free FROM quota_leases l
        WHERE l.account_id = holder AND l.status = 'active' FOR UPDATE;
        IF v_lease IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM quota_leases l WHERE l.id = v_lease AND l.accounts = above
              AND l.expires_at > hub_now() AND l.amount - l.drawn >= p_amount
        ) THEN
            v_lease := NULL;  -- returned below, once the tenant's own room is known
        END IF;
    END IF;

    held := own.used + own.reserved + p_amount;
    IF own.policy = 'strict' THEN
        held := held + own.allocated;
    END IF;
    IF held > own.limit_segments AND NOT fast THEN
        -- Without a lease to draw from, the answer is quota_reserve's (the highest level
        -- short), and nothing is written.
        RETURN QUERY SELECT * FROM quota_reserve(p_accounts, p_amount, p_tenant, p_period,
            p_cause, p_actor, p_ttl);
        RETURN;
    ELSIF held > own.limit_segments THEN
        RETURN QUERY SELECT NULL::bigint, NULL::timestamptz, own.id, own.tenant_id,
            own.policy::text, own.limit_segments, own.used, own.reserved, own.allocated;
        RETURN;
    END IF;

    IF v_lease IS NULL THEN
        PERFORM quota_return_lease(l.id, p_actor) FROM quota_leases l
        WHERE l.account_id = holder AND l.status = 'active';
        SELECT min(a.limit_segments - a.used - a.reserved) INTO room
        FROM quota_accounts a WHERE a.id = ANY(above);
        -- Never more than the tenant itself may still reserve: the rest would only keep its
        -- siblings from quota it cannot use.
        size := least(greatest(p_block, p_amount), room, own.limit_segments - held + p_amount);
        -- (a month already over, reserved late, leases nothing: its lease would be due now)
        IF size < p_amount OR (p_period + interval '1 month')::timestamp
                                  AT TIME ZONE 'Asia/Shanghai' <= hub_now() THEN
            RETURN QUERY SELECT * FROM quota_reserve(p_accounts, p_amount, p_tenant, p_period,
                p_cause, p_actor, p_ttl);
            RETURN;
        END IF;
        INSERT INTO quota_leases (account_id, tenant_id, period, accounts, amount, expires_at)
        VALUES (holder, p_tenant, p_period, above, size,
                least(hub_now() + make_interval(secs => p_lease_ttl),
                      (p_period + interval '1 month')::timestamp AT TIME ZONE 'Asia/Shanghai'))
        RETURNING id INTO v_lease;
        PERFORM quota_hold(above, size, 'lease', NULL, 'lease:' || v_lease, p_actor);
    END IF;

    INSERT INTO quota_reservations AS r
        (tenant_id, period, accounts, amount, cause, actor, expires_at, lease_id)
    VALUES (p_tenant, p_period, p_accounts, p_amount, p_cause, p_actor,
            hub_now() + make_interval(secs => p_ttl), v_lease)
    RETURNING r.id, r.expires_at INTO new_id, new_expiry;
    UPDATE quota_leases SET drawn = drawn + p_amount WHERE id = v_lease;

    -- Only the tenant's own account changes: the ancestors' share is already in the lease.
    PERFORM quota_hold(ARRAY[holder], p_amount, 'reserve', new_id, p_cause, p_actor);

    RETURN QUERY SELECT new_id, new_expiry, NULL::bigint, NULL::bigint, NULL::text,
        NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint;
END
$fn$;
