"""SQL of the operation log. Only INSERT: the table's triggers refuse UPDATE, DELETE and
TRUNCATE (migration 0031)."""

from __future__ import annotations

from datetime import datetime

import msgspec

# One entry; the time is the hub's clock (the column's default, hub_now()).
RECORD = """
INSERT INTO operation_log
    (tenant_id, actor, actor_tenant_id, address, action, object, before, after, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9::jsonb)
"""

# A tenant's entries, newest first, filtered: $2 ≤ at < $3, actor = $4 (NULL: any), action
# beginning with $5 (NULL: any; a range on the C-collated column, as tenants.path), strictly
# after the entry $6 of the same tenant in that order (NULL: from the newest). A cursor that is
# not the tenant's own entry yields nothing.
PAGE = """
SELECT o.id, o.at, t.code AS tenant, o.actor, a.code AS actor_tenant, o.address, o.action,
       o.object, o.before::text AS before, o.after::text AS after, o.detail::text AS detail
FROM operation_log o
JOIN tenants t ON t.id = o.tenant_id
LEFT JOIN tenants a ON a.id = o.actor_tenant_id
WHERE o.tenant_id = $1
  AND o.at >= $2 AND o.at < $3
  AND ($4::text IS NULL OR o.actor = $4)
  AND ($5::text IS NULL OR (o.action >= $5 AND o.action < $5 || '~'))
  AND ($6::bigint IS NULL OR (o.at, o.id) < (
        SELECT c.at, c.id FROM operation_log c WHERE c.id = $6 AND c.tenant_id = $1))
ORDER BY o.at DESC, o.id DESC
LIMIT $7
"""


class OperationRow(msgspec.Struct, frozen=True):
    id: int
    at: datetime
    tenant: str
    actor: str
    actor_tenant: str | None
    address: str | None
    action: str
    object: str | None
    # jsonb as its text: decoded once, by the service.
    before: str | None
    after: str | None
    detail: str | None
