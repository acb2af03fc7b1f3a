"""SQL for review rules and the review queue, each query beside the row it returns."""

from __future__ import annotations

import msgspec

from hub.reviews.schemas import RuleKind


class RuleRow(msgspec.Struct, frozen=True):
    tenant: str
    rule: RuleKind
    above: int | None
    subtree: bool


# The rules that bind a send of the tenant at path $1 (whose chain of paths, itself included,
# is $2): its own, and those of tenants above it marked `subtree`; root first.
BINDING = """
SELECT t.code AS tenant, r.rule, r.above, r.subtree
FROM review_rules r JOIN tenants t ON t.id = r.tenant_id
WHERE t.path = ANY($2::text[]) AND (t.path = $1 OR r.subtree) AND r.rule <> 'none'
ORDER BY length(t.path)
"""

# A tenant's own rule, if it set one.
OWN = """
SELECT t.code AS tenant, r.rule, r.above, r.subtree
FROM review_rules r JOIN tenants t ON t.id = r.tenant_id
WHERE r.tenant_id = $1
"""

# Set a tenant's own rule (the tenant at path $7), by a caller at path $6; unless a tenant
# above the caller set it: then nothing (no row answered). A `none` imposes nothing: it is the
# tenant's own to change.
SET = """
INSERT INTO review_rules (tenant_id, rule, above, subtree, updated_by, updated_at, set_by_path)
VALUES ($1, $2, $3, $4, $5, hub_now(), CASE WHEN $2 = 'none' THEN $7 ELSE $6 END)
ON CONFLICT (tenant_id) DO UPDATE
SET rule = EXCLUDED.rule, above = EXCLUDED.above, subtree = EXCLUDED.subtree,
    updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at,
    set_by_path = EXCLUDED.set_by_path
WHERE NOT ($6 > review_rules.set_by_path AND $6 < review_rules.set_by_path || '~')
RETURNING tenant_id
"""

# The queue of the caller at path $1 (actor $2, whose own sends it never decides): sends of
# its subtree waiting in review ($3 = 'review', oldest expiry first by id) or urgent sends to
# review after the fact ($3 = 'after'); of the tenant $4 (and its subtree; NULL: all), after
# the send $5, $6 rows, by id.
QUEUE = """
SELECT s.id, t.code AS tenant, t.name AS tenant_name, s.state::text AS state,
       s.priority::text AS priority, s.signature, s.body, s.actor AS sender,
       (SELECT count(*) FROM messages m
        WHERE m.send_id = s.id AND m.status <> 'opted_out'
          AND m.id >= s.message_ids_from AND m.id < s.message_ids_from + (1::bigint << 40))
           AS recipients,
       s.segments, s.list_price_micros, s.created_at, s.due_at, s.review_reason,
       s.review_due_at, s.review_after
FROM sends s JOIN tenants t ON t.id = s.tenant_id
WHERE t.path >= $1 AND t.path < $1 || '~'
  AND ($4::text IS NULL OR (t.path >= $4 AND t.path < $4 || '~'))
  AND s.actor <> $2
  AND s.id > $5
  AND CASE WHEN $3 = 'review' THEN s.review_due_at IS NOT NULL AND s.state = 'review'
           ELSE s.review_after AND s.approved_at IS NULL AND s.rejected_at IS NULL END
ORDER BY s.id
LIMIT $6
"""
