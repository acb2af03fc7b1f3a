"""SQL for campaigns."""

from __future__ import annotations

import msgspec

_CAMPAIGN = """
    c.id, c.kind, c.field, c.template_id AS template, to_char(c.send_time, 'HH24:MI') AS send_time,
    c.to_tags, c.active, c.created_at
"""

# A new campaign of a tenant.
INSERT = f"""
INSERT INTO campaigns AS c (tenant_id, kind, field, template_id, send_time, to_tags, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING {_CAMPAIGN}
"""

# A tenant's campaigns.
OF_TENANT = f"SELECT {_CAMPAIGN} FROM campaigns c WHERE c.tenant_id = $1 ORDER BY c.id"

# Stop a tenant's campaign; its id when it was there.
STOP = "UPDATE campaigns SET active = false WHERE id = $1 AND tenant_id = $2 RETURNING id"


class DueCampaign(msgspec.Struct, frozen=True):
    id: int
    tenant_id: int
    template_id: int
    to_tags: list[str]


# Active campaigns whose send time has come today ($1: the Asia/Shanghai wall clock now).
DUE = """
SELECT c.id, c.tenant_id, c.template_id, c.to_tags FROM campaigns c
WHERE c.active AND c.send_time <= $1
ORDER BY c.id
"""

# The next $9 contacts after contact $8 (a batch) of the campaign's tenant whose anniversary is
# today ($2 month, $3 day; on 28 February of a common year, $4 also takes those who joined on
# 29 February), with their years and whether this year's greeting is theirs already. The batch
# is chosen first and its greetings looked up by key, at most $9 probes: an anti-join against
# campaign_deliveries, planned on a young table's statistics, became a nested loop reading every
# greeting of the campaign for each contact (25 s a batch at 3,000 greeted).
CELEBRATING = """
WITH batch AS MATERIALIZED (
    SELECT ct.id, ct.name, ct.phone, $5::int - extract(year FROM ct.joined_on)::int AS years
    FROM contacts ct
    WHERE ct.tenant_id = $1 AND ct.joined_on IS NOT NULL
      AND (
        (extract(month FROM ct.joined_on) = $2 AND extract(day FROM ct.joined_on) = $3)
        OR ($4 AND extract(month FROM ct.joined_on) = 2 AND extract(day FROM ct.joined_on) = 29)
      )
      AND extract(year FROM ct.joined_on)::int < $5
      AND (cardinality($6::text[]) = 0 OR ct.tags && $6::text[])
      AND ct.id > $8
    ORDER BY ct.id
    LIMIT $9
)
SELECT b.id, b.name, b.phone, b.years,
       b.id = ANY (ARRAY(
           SELECT d.contact_id FROM campaign_deliveries d
           WHERE d.campaign_id = $7 AND d.year = $5
             AND d.contact_id = ANY (ARRAY(SELECT id FROM batch))
       )) AS greeted
FROM batch b
ORDER BY b.id
"""

# This year's greeting of contacts $2 is taken by send $4: how many were (fewer when a
# concurrent run took some first).
CLAIM = """
WITH taken AS (
    INSERT INTO campaign_deliveries (campaign_id, contact_id, year, send_id)
    SELECT $1, contact, $3, $4 FROM unnest($2::bigint[]) AS contact
    ON CONFLICT DO NOTHING
    RETURNING contact_id
)
SELECT count(*) FROM taken
"""
