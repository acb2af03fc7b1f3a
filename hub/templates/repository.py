"""SQL for templates."""

from __future__ import annotations

_TEMPLATE = """
    tp.id, t.code AS tenant, tp.name, tp.body, tp.variables, tp.status::text AS status,
    r.code AS reviewed_by, tp.reviewed_at, tp.review_note, tp.created_at
"""

# A new template; nothing when the tenant already has one of that name.
INSERT = f"""
WITH created AS (
    INSERT INTO templates (tenant_id, name, body, variables, status, reviewed_at)
    VALUES ($1, $2, $3, $4, $5::template_status, CASE WHEN $5 = 'approved' THEN hub_now() END)
    ON CONFLICT (tenant_id, name) DO NOTHING
    RETURNING *
)
SELECT {_TEMPLATE} FROM created tp JOIN tenants t ON t.id = tp.tenant_id
LEFT JOIN tenants r ON r.id = tp.reviewed_by
"""

# A template whose tenant lies in the subtree $2.
IN_SUBTREE = f"""
SELECT {_TEMPLATE}, t.path FROM templates tp JOIN tenants t ON t.id = tp.tenant_id
LEFT JOIN tenants r ON r.id = tp.reviewed_by
WHERE tp.id = $1 AND t.path >= $2 AND t.path < $2 || '~'
"""

# A template a tenant may send: its own or an ancestor's ($2: the paths of the tenant's chain).
USABLE = f"""
SELECT {_TEMPLATE} FROM templates tp JOIN tenants t ON t.id = tp.tenant_id
LEFT JOIN tenants r ON r.id = tp.reviewed_by
WHERE tp.id = $1 AND t.path = ANY($2::text[])
"""

# The approved templates a tenant may send: its own and its ancestors' ($1: its chain's paths).
USABLE_LIST = f"""
SELECT {_TEMPLATE} FROM templates tp JOIN tenants t ON t.id = tp.tenant_id
LEFT JOIN tenants r ON r.id = tp.reviewed_by
WHERE t.path = ANY($1::text[]) AND tp.status = 'approved'
ORDER BY t.path, tp.name
LIMIT 1000
"""

# Templates of the subtree $1 (or of that tenant only), optionally of one status.
LIST = f"""
SELECT {_TEMPLATE} FROM templates tp JOIN tenants t ON t.id = tp.tenant_id
LEFT JOIN tenants r ON r.id = tp.reviewed_by
WHERE (CASE WHEN $2 THEN t.path >= $1 AND t.path < $1 || '~' ELSE t.path = $1 END)
  AND ($3::template_status IS NULL OR tp.status = $3)
ORDER BY tp.id
LIMIT 1000
"""

# Pending templates a tenant at path $1 may review: those of the tenants strictly below it.
PENDING_BELOW = f"""
SELECT {_TEMPLATE} FROM templates tp JOIN tenants t ON t.id = tp.tenant_id
LEFT JOIN tenants r ON r.id = tp.reviewed_by
WHERE tp.status = 'pending' AND t.path > $1 AND t.path < $1 || '~'
ORDER BY tp.id
LIMIT 1000
"""

# Record a decision on a pending template; its tenant's id (nothing: it was not pending).
REVIEW = """
UPDATE templates SET status = $2::template_status, reviewed_by = $3, reviewed_at = hub_now(),
                     review_note = $4
WHERE id = $1 AND status = 'pending'
RETURNING tenant_id
"""
