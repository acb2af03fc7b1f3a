-- contact_tags_follow: loaded by migration 0035; change it here and add a migration that loads
-- it again. Keeps `contact_tags` (how many of a tenant's contacts carry each tag) equal to the
-- roster, from the rows each statement on `contacts` inserted, changed or deleted (its
-- transition tables, `new_rows` and `old_rows`): +1 for every tag a new or changed row carries,
-- -1 for every tag a deleted or changed row carried, a tag counted once per contact however
-- often it is listed. An import's upsert fires the INSERT trigger for the rows it created and
-- the UPDATE trigger for those it changed. The counts are upserted in (tenant, tag) order, so
-- two statements on one roster lock them in the same order and wait for each other instead of
-- deadlocking. A count that falls to 0 stays (readers skip it).
CREATE OR REPLACE FUNCTION contact_tags_follow() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO contact_tags AS ct (tenant_id, tag, contacts)
        SELECT r.tenant_id, x.tag, count(*)
        FROM new_rows r CROSS JOIN LATERAL (SELECT DISTINCT unnest(r.tags)) AS x(tag)
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (tenant_id, tag) DO UPDATE SET contacts = ct.contacts + EXCLUDED.contacts;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO contact_tags AS ct (tenant_id, tag, contacts)
        SELECT r.tenant_id, x.tag, -count(*)
        FROM old_rows r CROSS JOIN LATERAL (SELECT DISTINCT unnest(r.tags)) AS x(tag)
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (tenant_id, tag) DO UPDATE SET contacts = ct.contacts + EXCLUDED.contacts;
    ELSE
        INSERT INTO contact_tags AS ct (tenant_id, tag, contacts)
        SELECT d.tenant_id, d.tag, sum(d.n)
        FROM (
            SELECT r.tenant_id, x.tag, 1 AS n
            FROM new_rows r CROSS JOIN LATERAL (SELECT DISTINCT unnest(r.tags)) AS x(tag)
            UNION ALL
            SELECT r.tenant_id, x.tag, -1
            FROM old_rows r CROSS JOIN LATERAL (SELECT DISTINCT unnest(r.tags)) AS x(tag)
        ) d
        GROUP BY 1, 2 HAVING sum(d.n) <> 0 ORDER BY 1, 2
        ON CONFLICT (tenant_id, tag) DO UPDATE SET contacts = ct.contacts + EXCLUDED.contacts;
    END IF;
    RETURN NULL;
END
$fn$;
