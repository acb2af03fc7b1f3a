-- quota_settle_parts: loaded by migrations (0015 onwards); change it here and add a migration
-- that loads it again (hub.quota.sql.load).
-- Settle pieces of pending reservations: per reservation p_ids[i], use p_used[i] segments
-- (reserved → used) and release p_released[i] (reserved → free), each capped at what is left.
-- Locks as every other settlement does, reservations by id then accounts root first, and
-- holds them for one round trip: delivery chunks of one send all settle its one reservation,
-- so this lock is the hottest in delivery (docs/BENCHMARKS.md). Entries chain per account in
-- id order, as the audit replays them. A reservation no longer pending is skipped (it
-- expired: its segments were released already).
CREATE OR REPLACE FUNCTION quota_settle_parts(
    p_ids bigint[], p_used bigint[], p_released bigint[], p_actor text
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    a record;
    i int;
    left_over bigint;
    u bigint;
    f bigint;
BEGIN
    -- Lock first, in a fixed order, before changing anything.
    PERFORM 1 FROM quota_reservations
    WHERE id = ANY(p_ids) AND status = 'pending' ORDER BY id FOR UPDATE;
    PERFORM 1 FROM quota_accounts
    WHERE id IN (SELECT unnest(accounts) FROM quota_reservations
                 WHERE id = ANY(p_ids) AND status = 'pending')
    ORDER BY depth, id FOR UPDATE;

    FOR r IN SELECT * FROM quota_reservations
             WHERE id = ANY(p_ids) AND status = 'pending' ORDER BY id LOOP
        i := array_position(p_ids, r.id);
        left_over := r.amount - r.used_part - r.released_part;
        u := least(greatest(p_used[i], 0), left_over);
        f := least(greatest(p_released[i], 0), left_over - u);
        CONTINUE WHEN u = 0 AND f = 0;
        FOR a IN SELECT * FROM quota_accounts WHERE id = ANY(r.accounts)
                 ORDER BY depth, id LOOP
            IF u > 0 THEN
                INSERT INTO quota_entries (account_id, kind, amount, limit_before,
                    limit_after, used_before, used_after, reserved_before, reserved_after,
                    allocated_before, allocated_after, reservation_id, cause, actor)
                VALUES (a.id, 'use', u, a.limit_segments, a.limit_segments, a.used,
                    a.used + u, a.reserved, a.reserved - u, a.allocated, a.allocated,
                    r.id, r.cause, p_actor);
            END IF;
            IF f > 0 THEN
                INSERT INTO quota_entries (account_id, kind, amount, limit_before,
                    limit_after, used_before, used_after, reserved_before, reserved_after,
                    allocated_before, allocated_after, reservation_id, cause, actor)
                VALUES (a.id, 'void', f, a.limit_segments, a.limit_segments, a.used + u,
                    a.used + u, a.reserved - u, a.reserved - u - f, a.allocated,
                    a.allocated, r.id, r.cause, p_actor);
            END IF;
            UPDATE quota_accounts SET used = used + u, reserved = reserved - u - f
            WHERE id = a.id;
        END LOOP;
        UPDATE quota_reservations
        SET used_part = r.used_part + u,
            released_part = r.released_part + f,
            status = CASE WHEN u + f < left_over THEN 'pending'
                          WHEN r.used_part + u > 0 THEN 'posted'
                          ELSE 'voided' END::reservation_status,
            posted = CASE WHEN u + f = left_over AND r.used_part + u > 0
                          THEN r.used_part + u END,
            settled_at = CASE WHEN u + f = left_over THEN hub_now() END
        WHERE id = r.id;
    END LOOP;
END
$fn$;
