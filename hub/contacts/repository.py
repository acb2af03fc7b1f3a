"""SQL for rosters."""

from __future__ import annotations

# Upsert contacts by (tenant, phone); `inserted` tells new rows from updated ones.
UPSERT = """
INSERT INTO contacts AS c (tenant_id, phone, name, tags, joined_on, fields)
SELECT $1, r.phone, r.name, r.tags::text[], r.joined_on, r.fields::jsonb
FROM UNNEST($2::text[], $3::text[], $4::text[], $5::date[], $6::text[])
     AS r(phone, name, tags, joined_on, fields)
ON CONFLICT (tenant_id, phone) DO UPDATE
SET name = EXCLUDED.name, tags = EXCLUDED.tags, joined_on = EXCLUDED.joined_on,
    fields = EXCLUDED.fields, updated_at = hub_now()
RETURNING (xmax = 0) AS inserted
"""

# A page of a tenant's contacts after the cursor $2, optionally with tag $4 and whose name or
# phone matches the LIKE pattern $5 (its own characters escaped: hub.messages.followup).
# "Tenant $1, after id $2" is written as a range of the (tenant_id, id) index, in its order:
# with `tenant_id = $1 AND id > $2 ORDER BY id` the planner may walk the primary key instead,
# from $2 through every later tenant's contacts, hoping to meet 50 of a rare tag early (a
# roster is imported in one go, so a tenant's ids are one block: 280 ms for a late page of
# 大学生村官 in a 100,000-contact county, ops/bench/console_pages.py). Run with fetch_planned.
CONTACTS_PAGE = """
SELECT c.id, c.phone, c.name, c.tags, c.joined_on, c.fields::text AS fields,
       (o.phone IS NOT NULL) AS opted_out, c.updated_at
FROM contacts c LEFT JOIN opt_outs o ON o.tenant_id = c.tenant_id AND o.phone = c.phone
WHERE (c.tenant_id, c.id) > ($1, $2) AND c.tenant_id <= $1
  AND ($4::text IS NULL OR c.tags @> ARRAY[$4::text])
  AND ($5::text IS NULL OR c.name LIKE $5 ESCAPE '\\' OR c.phone LIKE $5 ESCAPE '\\')
ORDER BY c.tenant_id, c.id
LIMIT $3
"""

# Phones of contacts with any of the tags $2, in the tenants of the subtree $1 (or one tenant).
PHONES_BY_TAGS = """
SELECT DISTINCT c.phone FROM contacts c JOIN tenants t ON t.id = c.tenant_id
WHERE c.tags && $2::text[]
  AND (CASE WHEN $3 THEN t.path >= $1 AND t.path < $1 || '~' ELSE t.path = $1 END)
"""

# Each tag of the roster at path $1 and how many of its phones carry it (a tenant's phones are
# distinct): what a send to that tag alone reaches (PHONES_BY_TAGS). Read from contact_tags,
# which statement triggers keep equal to the roster (hub/contacts/sql/tag_counts.sql).
OWN_TAG_COUNTS = """
SELECT ct.tag, ct.contacts AS phones
FROM contact_tags ct JOIN tenants t ON t.id = ct.tenant_id
WHERE t.path = $1 AND ct.contacts > 0
ORDER BY ct.tag
LIMIT 1000
"""

# The same for the whole subtree at path $1: how many distinct phones of all its rosters carry
# each tag. The rosters' counts added up count a phone once per roster that holds it, so
# `extra` takes back, per tag, every holder of a shared phone but one. Shared phones are found
# without reading the largest roster whole: the others' phones (`rest`, in a county the units'
# few thousand) are grouped among themselves and looked up in the largest one's
# (tenant_id, phone) index. A county's subtree: 56 ms against 880 ms counted from the rows
# (100,000 contacts and 12,000 in its units; ops/bench/console_pages.py). Its cost grows with
# the rosters beside the largest one: a province of 183 similar counties takes seconds.
SUBTREE_TAG_COUNTS = """
WITH sub AS (
    SELECT t.id, coalesce(sum(ct.contacts), 0) AS tagged
    FROM tenants t LEFT JOIN contact_tags ct ON ct.tenant_id = t.id
    WHERE t.path >= $1 AND t.path < $1 || '~'
    GROUP BY t.id
),
largest AS (SELECT id FROM sub ORDER BY tagged DESC, id LIMIT 1),
rest AS MATERIALIZED (
    SELECT c.phone, c.tags FROM contacts c
    WHERE c.tenant_id IN (SELECT id FROM sub WHERE id <> (SELECT id FROM largest))
),
shared AS (
    SELECT phone FROM rest GROUP BY phone HAVING count(*) > 1
    UNION
    SELECT r.phone FROM rest r
    JOIN contacts b ON b.tenant_id = (SELECT id FROM largest) AND b.phone = r.phone
),
holders AS (
    SELECT r.phone, r.tags FROM rest r WHERE r.phone IN (SELECT phone FROM shared)
    UNION ALL
    SELECT b.phone, b.tags FROM contacts b
    WHERE b.tenant_id = (SELECT id FROM largest) AND b.phone IN (SELECT phone FROM shared)
),
extra AS (
    SELECT tag, sum(n - 1) AS extra FROM (
        SELECT x.tag, h.phone, count(*) AS n
        FROM holders h CROSS JOIN LATERAL (SELECT DISTINCT unnest(h.tags)) AS x(tag)
        GROUP BY 1, 2
    ) d
    GROUP BY tag
)
SELECT ct.tag, (sum(ct.contacts) - coalesce(min(e.extra), 0))::bigint AS phones
FROM contact_tags ct LEFT JOIN extra e ON e.tag = ct.tag
WHERE ct.tenant_id IN (SELECT id FROM sub) AND ct.contacts > 0
GROUP BY ct.tag
ORDER BY ct.tag
LIMIT 1000
"""

# What the roster says of each of the phones $2 (its name and free fields), from the tenant at
# path $1 or, with $3, from its whole subtree: the nearest tenant's contact of a phone wins;
# `own`: it is the tenant's own.
ROSTER_ENTRIES = """
SELECT DISTINCT ON (c.phone) c.phone, c.name, c.fields::text AS fields, t.path = $1 AS own
FROM contacts c JOIN tenants t ON t.id = c.tenant_id
WHERE c.phone = ANY($2::text[])
  AND (CASE WHEN $3 THEN t.path >= $1 AND t.path < $1 || '~' ELSE t.path = $1 END)
ORDER BY c.phone, length(t.path), c.id
"""

# The given contacts of one tenant, by id (what the compose page shows of those picked).
CONTACTS_BY_IDS = """
SELECT id, name, phone FROM contacts WHERE tenant_id = $1 AND id = ANY($2::bigint[]) ORDER BY id
"""

# Phones of the given contacts of one tenant; missing ids are simply absent.
PHONES_BY_IDS = "SELECT id, phone FROM contacts WHERE tenant_id = $1 AND id = ANY($2::bigint[])"

# One contact of the tenant, locked for its change.
CONTACT = """
SELECT c.id, c.phone, c.name, c.tags, c.joined_on, c.fields::text AS fields,
       EXISTS (SELECT 1 FROM opt_outs o WHERE o.tenant_id = c.tenant_id AND o.phone = c.phone)
           AS opted_out,
       c.updated_at
FROM contacts c WHERE c.id = $1 AND c.tenant_id = $2
FOR UPDATE OF c
"""

# Change a contact's name, tags and free fields.
UPDATE = """
UPDATE contacts SET name = $3, tags = $4::text[], fields = $5::jsonb, updated_at = hub_now()
WHERE id = $1 AND tenant_id = $2
"""

# Remove a contact of the tenant; what it was (for the operation log), when it was there.
DELETE_RETURNING = "DELETE FROM contacts WHERE id = $1 AND tenant_id = $2 RETURNING id, name, phone"

# The free fields' names of a tenant's roster (an export's columns), at most $2 of them.
FIELD_NAMES = """
SELECT k FROM (SELECT DISTINCT jsonb_object_keys(fields) AS k FROM contacts WHERE tenant_id = $1) f
ORDER BY k LIMIT $2
"""

# A phone's opt-out of the tenant, removed; when it had opted out (none: it had not).
END_OPT_OUT = "DELETE FROM opt_outs WHERE tenant_id = $1 AND phone = $2 RETURNING created_at"

# A re-subscription: the phone, when it had opted out, why it is back and who took it back.
RESUBSCRIBE = """
INSERT INTO resubscriptions (tenant_id, phone, opted_out_at, reason, actor)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, phone, opted_out_at, reason, actor, at
"""

# Uploads older than their time are gone (each new upload sweeps them).
FORGET_UPLOADS = "DELETE FROM roster_uploads WHERE created_at < hub_now() - $1::interval"

# One upload of a tenant at a time counts its held rosters (parallel uploads would each miss
# the others' uncommitted rows): false if another holds the tenant's lock. Not waited for: a
# county's parallel previews queued on it, each holding a pooled connection, took the whole pool
# from every other tenant.
LOCK_UPLOADS = "SELECT pg_try_advisory_xact_lock(hashtextextended('roster_uploads', $1))"

# The rosters a tenant holds in their time, and who uploaded each.
HELD_UPLOADS = """
SELECT actor, created_at FROM roster_uploads
WHERE tenant_id = $1 AND created_at >= hub_now() - $2::interval
"""

# A new upload replaces the one its uploader held before (its preview's token is let go).
LET_GO_UPLOADS_OF = "DELETE FROM roster_uploads WHERE tenant_id = $1 AND actor = $2"

# Hold an uploaded roster until it is confirmed.
HOLD_UPLOAD = """
INSERT INTO roster_uploads (token_hash, tenant_id, actor, filename, data)
VALUES ($1, $2, $3, $4, $5)
"""

# The space of uploads let go, back to PostgreSQL for the next ones (not to the disk): skipped
# while another VACUUM of the table runs.
RECLAIM_UPLOADS = "VACUUM (SKIP_LOCKED) roster_uploads"

# Take back a held roster (once: it is deleted), if it is the tenant's and still in its time.
TAKE_UPLOAD = """
DELETE FROM roster_uploads
WHERE token_hash = $1 AND tenant_id = $2 AND created_at >= hub_now() - $3::interval
RETURNING filename, data
"""

# A held roster, read without taking it (its confirmation parses it before it imports).
PEEK_UPLOAD = """
SELECT data FROM roster_uploads
WHERE token_hash = $1 AND tenant_id = $2 AND created_at >= hub_now() - $3::interval
"""
