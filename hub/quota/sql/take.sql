-- quota_take: loaded by migration 0051; change it here and add a migration that loads it
-- again (hub.db.sql_file).
--
-- How the hub reserves (hub.quota.service.reserve): quota_reserve, or with
-- p_block a draw from the tenant's lease (quota_draw, hub/quota/sql/lease.sql), done again after
-- a short pause when PostgreSQL rolls it back as a deadlock's victim or a serialization failure
-- (SQLSTATE class 40; quota_draw raises one itself when its lease was drawn meanwhile),
-- p_tries tries at most, with hub.db.retrying's pauses, then the error goes to the caller (503
-- `busy`; a caller already trying again from its own savepoint gives 1). The inner block is a
-- subtransaction whose rollback releases the locks taken in it, as hub.db.retrying's savepoint
-- does from the client, without its two round trips inside the chain's locks.
CREATE OR REPLACE FUNCTION quota_take(
    p_accounts bigint[], p_amount bigint, p_tenant bigint, p_period date,
    p_cause text, p_actor text, p_ttl double precision,
    p_block bigint, p_lease_ttl double precision, p_tries int
) RETURNS TABLE (
    reservation_id bigint, expires_at timestamptz, short_account bigint,
    short_tenant bigint, short_policy text, short_limit bigint, short_used bigint,
    short_reserved bigint, short_allocated bigint
) LANGUAGE plpgsql AS $fn$
DECLARE
    attempt int := 1;
BEGIN
    LOOP
        BEGIN
            -- (a set-returning function's rows are all made before the first is taken: an
            -- error leaves none here)
            IF p_block IS NULL THEN
                RETURN QUERY SELECT * FROM quota_reserve(p_accounts, p_amount, p_tenant,
                    p_period, p_cause, p_actor, p_ttl);
            ELSE
                RETURN QUERY SELECT * FROM quota_draw(p_accounts, p_amount, p_tenant,
                    p_period, p_cause, p_actor, p_ttl, p_block, p_lease_ttl);
            END IF;
            RETURN;
        EXCEPTION WHEN transaction_rollback THEN
            IF attempt >= p_tries THEN
                RAISE;
            END IF;
        END;
        PERFORM pg_sleep(0.005 + random() * (0.02 * 2 ^ (attempt - 1) - 0.005));
        attempt := attempt + 1;
    END LOOP;
END
$fn$;
