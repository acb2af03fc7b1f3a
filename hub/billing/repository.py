"""Billing SQL."""

from __future__ import annotations

_CARD = (
    "id, carrier, valid_from, mode, bands::text AS bands, list_price_micros, created_by, created_at"
)

# A new rate card; nothing if the carrier already has one from that month.
INSERT_CARD = f"""
INSERT INTO rate_cards (carrier, valid_from, mode, bands, list_price_micros, created_by)
VALUES ($1, $2, $3, $4::jsonb, $5, $6)
ON CONFLICT (carrier, valid_from) DO NOTHING
RETURNING {_CARD}
"""

# Every card (of carrier $1, if given), newest first per carrier.
CARDS = f"""
SELECT {_CARD} FROM rate_cards
WHERE $1::text IS NULL OR carrier = $1
ORDER BY carrier, valid_from DESC
"""

# The card in force for carrier $1 in the month starting $2.
CARD_IN_FORCE = f"""
SELECT {_CARD} FROM rate_cards
WHERE carrier = $1 AND valid_from <= $2
ORDER BY valid_from DESC
LIMIT 1
"""

# Segments per kind, tenant, carrier and the (Asia/Shanghai) day they belong to (one row per
# element of the arrays).
RECORD_USAGE = """
INSERT INTO usage_entries (tenant_id, day, carrier, kind, segments)
SELECT u.tenant_id, u.day, u.carrier, u.kind, u.segments
FROM UNNEST($1::usage_kind[], $2::bigint[], $3::text[], $4::date[], $5::bigint[])
     AS u(kind, tenant_id, carrier, day, segments)
WHERE u.segments > 0
"""

# Fold up to $1 entries into the daily rollup (entries another run holds are left to it). Usage
# keeps its day even when its month is closed: the next close bills it as an adjustment.
ROLL_UP = """
WITH taken AS (
    DELETE FROM usage_entries
    WHERE id IN (SELECT id FROM usage_entries ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING tenant_id, day, carrier, kind, segments
), sums AS (
    SELECT tenant_id, day, carrier,
           coalesce(sum(segments) FILTER (WHERE kind = 'billable'), 0) AS billable,
           coalesce(sum(segments) FILTER (WHERE kind = 'dedup'), 0) AS dedup,
           coalesce(sum(segments) FILTER (WHERE kind = 'delivered'), 0) AS delivered,
           coalesce(sum(segments) FILTER (WHERE kind = 'undelivered'), 0) AS undelivered
    FROM taken GROUP BY tenant_id, day, carrier
)
INSERT INTO usage_daily AS d (tenant_id, day, carrier, billable, dedup, delivered, undelivered)
SELECT tenant_id, day, carrier, billable, dedup, delivered, undelivered FROM sums
ON CONFLICT (tenant_id, day, carrier)
DO UPDATE SET billable = d.billable + excluded.billable, dedup = d.dedup + excluded.dedup,
              delivered = d.delivered + excluded.delivered,
              undelivered = d.undelivered + excluded.undelivered
"""

# Per tenant of the subtree at $1 (or only that tenant) and carrier: the month's segments from
# $2 to $3 (exclusive), rolled up or not yet.
USAGE = """
SELECT t.code AS tenant, u.carrier, sum(u.billable)::bigint AS billable,
       sum(u.dedup)::bigint AS dedup
FROM (
    SELECT tenant_id, carrier, billable, dedup FROM usage_daily WHERE day >= $2 AND day < $3
    UNION ALL
    SELECT tenant_id, carrier,
           CASE WHEN kind = 'billable' THEN segments ELSE 0 END,
           CASE WHEN kind = 'dedup' THEN segments ELSE 0 END
    FROM usage_entries WHERE day >= $2 AND day < $3 AND kind IN ('billable', 'dedup')
) u JOIN tenants t ON t.id = u.tenant_id
WHERE t.path = $1 OR ($4 AND t.path > $1 AND t.path < $1 || '~')
GROUP BY t.code, u.carrier
HAVING sum(u.billable) + sum(u.dedup) > 0
ORDER BY t.code, u.carrier
"""

# The whole hub's billable segments per carrier from $1 to $2 (exclusive): what the tiers count.
HUB_VOLUME = """
SELECT carrier, sum(billable)::bigint AS segments FROM (
    SELECT carrier, billable FROM usage_daily WHERE day >= $1 AND day < $2
    UNION ALL
    SELECT carrier, segments FROM usage_entries
    WHERE kind = 'billable' AND day >= $1 AND day < $2
) u
GROUP BY carrier
"""

# Close a month; nothing if it was closed already.
CLOSE_PERIOD = """
INSERT INTO billing_periods (period, closed_by) VALUES ($1, $2)
ON CONFLICT (period) DO NOTHING
RETURNING closed_at
"""

# When a month was closed (NULL: open), and the last closed month.
CLOSED_AT = "SELECT closed_at FROM billing_periods WHERE period = $1"
LAST_CLOSED = "SELECT max(period) FROM billing_periods"

# The first day before $1 with usage in a month no close has billed (months close in order).
UNCLOSED_BEFORE = """
SELECT min(day) FROM usage_daily
WHERE day < $1
  AND day >= coalesce((SELECT (max(period) + interval '1 month')::date FROM billing_periods),
                      '-infinity')
"""

# Per tenant and carrier, the month's rolled-up segments.
MONTH_USAGE = """
SELECT tenant_id, carrier, sum(billable)::bigint AS billable, sum(dedup)::bigint AS dedup
FROM usage_daily WHERE day >= $1 AND day < $2
GROUP BY tenant_id, carrier
ORDER BY carrier, tenant_id
"""

# Per closed month before $1 (the origin), tenant and carrier: rolled-up segments no close has
# billed yet, because they arrived after their month was closed. What was billed is subtracted,
# so usage rolled up while a close ran is billed by the next one, never twice, never lost.
LATE_USAGE = """
WITH used AS (
    SELECT date_trunc('month', day)::date AS origin, tenant_id, carrier,
           sum(billable)::bigint AS billable
    FROM usage_daily
    WHERE day < $1 AND day >= (SELECT min(period) FROM billing_periods)
    GROUP BY 1, 2, 3
), billed AS (
    SELECT origin, tenant_id, carrier, sum(segments)::bigint AS segments
    FROM billing_lines WHERE origin < $1
    GROUP BY 1, 2, 3
)
SELECT u.origin, u.tenant_id, u.carrier, u.billable - coalesce(b.segments, 0) AS billable,
       0::bigint AS dedup
FROM used u LEFT JOIN billed b USING (origin, tenant_id, carrier)
WHERE u.billable > coalesce(b.segments, 0)
ORDER BY u.origin, u.carrier, u.tenant_id
"""

# What carrier $2 cost the hub in month $1 when that month was closed (its blended rate).
CLOSED_COST = """
SELECT segments, cost_micros FROM billing_carrier_costs
WHERE period = $1 AND origin = $1 AND carrier = $2
"""

INSERT_CARRIER_COSTS = """
INSERT INTO billing_carrier_costs (period, origin, carrier, segments, cost_micros, rate_card)
SELECT $1, * FROM UNNEST($2::date[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
"""

INSERT_LINES = """
INSERT INTO billing_lines (period, origin, tenant_id, carrier, segments, cost_micros,
                           list_price_micros, dedup_segments)
SELECT $1, * FROM UNNEST($2::date[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[],
                         $7::bigint[], $8::bigint[])
"""

# A closed month's hub cost per carrier, its adjustments for earlier months after it.
CARRIER_COSTS = """
SELECT carrier, to_char(origin, 'YYYY-MM') AS origin, segments, cost_micros, rate_card
FROM billing_carrier_costs
WHERE period = $1 ORDER BY origin DESC, carrier
"""

# A closed month's lines: how many, and their total.
LINE_TOTALS = """
SELECT count(*) AS lines, coalesce(sum(cost_micros), 0)::bigint AS cost_micros
FROM billing_lines WHERE period = $1
"""

_SUBTREE_LINES = """
FROM billing_lines l JOIN tenants t ON t.id = l.tenant_id
WHERE l.period = $1 AND t.path >= $2 AND t.path < $2 || '~'
"""

# A closed month's lines of the subtree at path $2, in tree order, adjustments after the month's
# own line of the same tenant and carrier.
STATEMENT_LINES = f"""
SELECT t.code AS tenant, t.name, t.level::text AS level, l.carrier,
       to_char(l.origin, 'YYYY-MM') AS origin, l.origin <> l.period AS adjustment, l.segments,
       l.cost_micros, l.list_price_micros, l.list_price_micros - l.cost_micros AS savings_micros,
       l.dedup_segments
{_SUBTREE_LINES}
ORDER BY t.path, l.carrier COLLATE "C", l.origin DESC
"""

# The same lines summed per level of the tree.
STATEMENT_LEVELS = f"""
SELECT t.level::text AS level, count(DISTINCT t.id) AS tenants,
       sum(l.segments)::bigint AS segments, sum(l.cost_micros)::bigint AS cost_micros,
       sum(l.list_price_micros)::bigint AS list_price_micros,
       sum(l.list_price_micros - l.cost_micros)::bigint AS savings_micros,
       sum(l.dedup_segments)::bigint AS dedup_segments
{_SUBTREE_LINES}
GROUP BY t.level
ORDER BY t.level
"""
