-- Messages are partitioned by month on their id: a message's id carries the business month
-- (Asia/Shanghai) it was written in, `(month index << 40) + a sequence number`, the month
-- index being (year - 2000) * 12 + (month - 1). Ids stay below 2^53 (JSON-safe) until the
-- year 2682 and increase with time. The partition of month m holds [m << 40, (m + 1) << 40).

-- The month index of an instant, in the business time zone.
CREATE OR REPLACE FUNCTION hub_month_index(at timestamptz) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT (extract(year FROM at AT TIME ZONE 'Asia/Shanghai')::bigint - 2000) * 12
         + extract(month FROM at AT TIME ZONE 'Asia/Shanghai')::bigint - 1
$$;

-- The first message id of the month an instant falls in.
CREATE OR REPLACE FUNCTION hub_month_floor(at timestamptz) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT hub_month_index(at) << 40
$$;

-- A new message's id: the month of hub_now(), which is stable for a transaction, so every
-- message of one send (written in the send's transaction) falls in the month of the send's
-- created_at.
CREATE OR REPLACE FUNCTION hub_message_id() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT hub_month_floor(hub_now()) + nextval('messages_id_seq')
$$;

-- `n` new message ids at once, ascending, as one bytea of 8-byte big-endian integers
-- (int8send): what hub_message_id() gives n rows, the month worked out once. A COPY of many
-- messages gives each row its own id from these: working the month out for every row was a
-- sixth of a million-recipient send's COPY. Ids left unused are gaps, as a rolled-back insert
-- leaves.
CREATE OR REPLACE FUNCTION hub_message_ids(n integer) RETURNS bytea
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    floor bigint := hub_month_floor(hub_now());
BEGIN
    RETURN (SELECT coalesce(string_agg(int8send(floor + nextval('messages_id_seq')), ''::bytea
                                       ORDER BY g), ''::bytea)
            FROM generate_series(1, n) AS g);
END
$$;

-- The ids a send's messages carry: [hub_send_messages_from(s), hub_send_messages_to(s)), from
-- `sends.message_ids_from` (the first id of the month it was created in; 0 for a send from
-- before partitioning: its messages are in `messages_before`). STABLE functions of a
-- parameter, so PostgreSQL prunes the partitions of a query by send at executor start, also in
-- a generic (prepared) plan. NULL for an unknown send: no rows. plpgsql since migration
-- 0051, not sql: a sql function that reads a table is not inlined, and PostgreSQL before 18
-- parses and plans its body again on every call (a query by send calls both, at planning and
-- at executor start); plpgsql keeps the plan for the session.
CREATE OR REPLACE FUNCTION hub_send_messages_from(send bigint) RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN (SELECT message_ids_from FROM sends WHERE id = send);
END
$$;

CREATE OR REPLACE FUNCTION hub_send_messages_to(send bigint) RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN (SELECT message_ids_from + (1::bigint << 40) FROM sends WHERE id = send);
END
$$;

-- Make sure the partitions of the month of `at` and the `ahead` months after it exist; the
-- names of those it created. Rows of such a month that the DEFAULT partition caught meanwhile
-- (the clock ran into a month before its partition was made) move into the new partition in
-- the same transaction, under an exclusive lock on `messages` (brief: the DEFAULT partition
-- holds rows only when the cron was late). Waits at most `lock_timeout` for that lock.
CREATE OR REPLACE FUNCTION hub_message_partitions(at timestamptz, ahead int)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    first int := hub_month_index(at);
    m int;  -- a FOR loop's variable is an integer: shift its bigint copies
    lo bigint;
    name text;
    -- Where messages_before ends: a month before it (a clock set back) has no partition of
    -- its own.
    legacy bigint := coalesce((
        SELECT substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''?(\d+)')::bigint
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'messages'::regclass AND c.relname = 'messages_before'), 0);
    -- The columns a row is written with (a generated one is computed, never given).
    written text := (SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
                     FROM pg_attribute WHERE attrelid = 'messages'::regclass AND attnum > 0
                       AND NOT attisdropped AND attgenerated = '');
BEGIN
    FOR m IN first .. first + ahead LOOP
        name := format('messages_%s_%s', 2000 + m / 12, lpad((m % 12 + 1)::text, 2, '0'));
        lo := m::bigint << 40;
        CONTINUE WHEN to_regclass(name) IS NOT NULL OR lo < legacy;
        -- Every partition (the DEFAULT one too) locked before rows move: a worker's UPDATE
        -- waiting on a row that a plain DELETE moved would find it gone and change nothing.
        LOCK TABLE messages IN ACCESS EXCLUSIVE MODE;
        -- 15 % of each page left free: a message's claim and receipt are HOT updates
        -- (migration 0047).
        EXECUTE format('CREATE TABLE %I (LIKE messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS
                        INCLUDING GENERATED) WITH (fillfactor = 85)', name);
        EXECUTE format('WITH moved AS (DELETE FROM messages_default WHERE id >= %s AND id < %s
                        RETURNING %s) INSERT INTO %I (%3$s) SELECT * FROM moved',
                       lo, lo + (1::bigint << 40), written, name);
        EXECUTE format('ALTER TABLE messages ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                       name, lo, lo + (1::bigint << 40));
        RETURN NEXT name;
    END LOOP;
END
$$;

-- The least and greatest of some message ids: `id BETWEEN hub_least_id($1) AND
-- hub_greatest_id($1)` beside `id = ANY($1)` (or a join on UNNEST($1)) lets PostgreSQL prune to
-- the ids' partitions at executor start, also in a generic plan (it prunes on no array
-- parameter by itself).
CREATE OR REPLACE FUNCTION hub_least_id(ids bigint[]) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT min(x) FROM unnest(ids) AS x
$$;

CREATE OR REPLACE FUNCTION hub_greatest_id(ids bigint[]) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT max(x) FROM unnest(ids) AS x
$$;
