"""SQL for signature proposals, each query beside the row it returns."""

from __future__ import annotations

from datetime import datetime

import msgspec


class ProposalRow(msgspec.Struct, frozen=True):
    id: int
    tenant_id: int
    tenant: str
    text: str
    status: str
    proposed_by: str
    # The highest tenant that could have made it: only a tenant strictly above it approves.
    answerable_path: str
    # That tenant's parent: the first that may approve.
    awaiting: str | None
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str | None
    created_at: datetime


_PROPOSAL = """
SELECT s.id, s.tenant_id, t.code AS tenant, s.text, s.status::text AS status,
       pb.code AS proposed_by, a.path AS answerable_path, ap.code AS awaiting,
       r.code AS reviewed_by, s.reviewed_at, s.review_note, s.created_at
FROM signatures s
JOIN tenants t ON t.id = s.tenant_id
JOIN tenants pb ON pb.id = s.proposed_by
JOIN tenants a ON a.id = s.answerable_id
LEFT JOIN tenants ap ON ap.id = a.parent_id
LEFT JOIN tenants r ON r.id = s.reviewed_by
"""

# A new proposal ($3: pending, or approved when the operator made it); nothing when another
# proposal for the tenant is pending (one arrived at the same moment).
INSERT = """
INSERT INTO signatures (tenant_id, text, status, proposed_by, answerable_id, actor,
                        reviewed_by, reviewed_at)
VALUES ($1, $2, $3::signature_status, $4, $5::bigint, $6,
        CASE WHEN $3::signature_status = 'approved' THEN $5::bigint END,
        CASE WHEN $3::signature_status = 'approved' THEN hub_now() END)
ON CONFLICT (tenant_id) WHERE status = 'pending' DO NOTHING
RETURNING id
"""

# The tenant's pending proposal, locked while a new one decides whether to replace it.
PENDING_OF = f"{_PROPOSAL} WHERE s.tenant_id = $1 AND s.status = 'pending' FOR UPDATE OF s"

# A later proposal replaces a pending one.
WITHDRAW = "UPDATE signatures SET status = 'withdrawn' WHERE id = $1 AND status = 'pending'"

# A proposal whose tenant lies in the subtree $2.
IN_SUBTREE = f"{_PROPOSAL} WHERE s.id = $1 AND t.path >= $2 AND t.path < $2 || '~'"

# A tenant's proposals, newest first.
OF_TENANT = f"{_PROPOSAL} WHERE s.tenant_id = $1 ORDER BY s.id DESC LIMIT 50"

# The tenant's latest proposal that was not replaced (why it has no approved signature).
LATEST_OF = f"""
{_PROPOSAL} WHERE s.tenant_id = $1 AND s.status <> 'withdrawn' ORDER BY s.id DESC LIMIT 1
"""

# Pending proposals a tenant at path $1 may decide: those answerable to a tenant strictly below.
PENDING_BELOW = f"""
{_PROPOSAL} WHERE s.status = 'pending' AND a.path > $1 AND a.path < $1 || '~'
ORDER BY s.id
LIMIT 1000
"""

# Decide a pending proposal (exactly once); its tenant and text.
REVIEW = """
UPDATE signatures SET status = $2::signature_status, reviewed_by = $3, reviewed_at = hub_now(),
                      review_note = $4
WHERE id = $1 AND status = 'pending'
RETURNING tenant_id, text
"""
