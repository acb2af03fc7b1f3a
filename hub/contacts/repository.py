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

# A page of a tenant's contacts after the cursor $2, optionally with tag $4 and matching $5.
CONTACTS_PAGE = """
SELECT c.id, c.phone, c.name, c.tags, c.joined_on, c.fields::text AS fields,
       (o.phone IS NOT NULL) AS opted_out, c.updated_at
FROM contacts c LEFT JOIN opt_outs o ON o.tenant_id = c.tenant_id AND o.phone = c.phone
WHERE c.tenant_id = $1 AND c.id > $2
  AND ($4::text IS NULL OR c.tags @> ARRAY[$4::text])
  AND ($5::text IS NULL OR c.name LIKE '%' || $5 || '%' OR c.phone LIKE '%' || $5 || '%')
ORDER BY c.id
LIMIT $3
"""

# Remove a contact of the tenant; returns its id when it was there.
DELETE = "DELETE FROM contacts WHERE id = $1 AND tenant_id = $2 RETURNING id"

# Phones of contacts with any of the tags $2, in the tenants of the subtree $1 (or one tenant).
PHONES_BY_TAGS = """
SELECT DISTINCT c.phone FROM contacts c JOIN tenants t ON t.id = c.tenant_id
WHERE c.tags && $2::text[]
  AND (CASE WHEN $3 THEN t.path >= $1 AND t.path < $1 || '~' ELSE t.path = $1 END)
"""

# Each tag of the roster at path $1 (or, with $2, of its whole subtree) and how many distinct
# phones carry it: what a send to that tag alone reaches (PHONES_BY_TAGS).
TAG_COUNTS = """
SELECT tag, count(DISTINCT c.phone)::bigint AS phones
FROM contacts c JOIN tenants t ON t.id = c.tenant_id, unnest(c.tags) AS tag
WHERE (CASE WHEN $2 THEN t.path >= $1 AND t.path < $1 || '~' ELSE t.path = $1 END)
GROUP BY tag ORDER BY tag
LIMIT 1000
"""

# Phones of the given contacts of one tenant; missing ids are simply absent.
PHONES_BY_IDS = "SELECT id, phone FROM contacts WHERE tenant_id = $1 AND id = ANY($2::bigint[])"
