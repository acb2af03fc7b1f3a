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

# Segments that became billable, or were saved by dedup, today (Asia/Shanghai).
RECORD_USAGE = """
INSERT INTO usage_entries (tenant_id, day, carrier, kind, segments)
SELECT u.tenant_id, (now() AT TIME ZONE 'Asia/Shanghai')::date, u.carrier, $1::usage_kind,
       u.segments
FROM UNNEST($2::bigint[], $3::text[], $4::bigint[]) AS u(tenant_id, carrier, segments)
WHERE u.segments > 0
"""

# Fold up to $1 entries into the daily rollup (entries another run holds are left to it).
ROLL_UP = """
WITH taken AS (
    DELETE FROM usage_entries
    WHERE id IN (SELECT id FROM usage_entries ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING tenant_id, day, carrier, kind, segments
), dated AS (
    -- A day of a closed month moves to the first day after the last closed month.
    SELECT tenant_id, greatest(day, (SELECT (max(period) + interval '1 month')::date
                                     FROM billing_periods)) AS day, carrier, kind, segments
    FROM taken
), sums AS (
    SELECT tenant_id, day, carrier,
           coalesce(sum(segments) FILTER (WHERE kind = 'billable'), 0) AS billable,
           coalesce(sum(segments) FILTER (WHERE kind = 'dedup'), 0) AS dedup
    FROM dated GROUP BY tenant_id, day, carrier
)
INSERT INTO usage_daily AS d (tenant_id, day, carrier, billable, dedup)
SELECT tenant_id, day, carrier, billable, dedup FROM sums
ON CONFLICT (tenant_id, day, carrier)
DO UPDATE SET billable = d.billable + excluded.billable, dedup = d.dedup + excluded.dedup
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
    FROM usage_entries WHERE day >= $2 AND day < $3
) u JOIN tenants t ON t.id = u.tenant_id
WHERE t.path = $1 OR ($4 AND t.path > $1 AND t.path < $1 || '~')
GROUP BY t.code, u.carrier
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

# Per tenant and carrier, the month's rolled-up segments.
MONTH_USAGE = """
SELECT tenant_id, carrier, sum(billable)::bigint AS billable, sum(dedup)::bigint AS dedup
FROM usage_daily WHERE day >= $1 AND day < $2
GROUP BY tenant_id, carrier
ORDER BY carrier, tenant_id
"""

INSERT_CARRIER_COSTS = """
INSERT INTO billing_carrier_costs (period, carrier, segments, cost_micros, rate_card)
SELECT $1, * FROM UNNEST($2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
"""

INSERT_LINES = """
INSERT INTO billing_lines (period, tenant_id, carrier, segments, cost_micros, list_price_micros,
                           dedup_segments)
SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[],
                         $7::bigint[])
"""

# A closed month's hub cost per carrier.
CARRIER_COSTS = """
SELECT carrier, segments, cost_micros, rate_card FROM billing_carrier_costs
WHERE period = $1 ORDER BY carrier
"""

# A closed month's lines: how many, and their total.
LINE_TOTALS = """
SELECT count(*) AS lines, coalesce(sum(cost_micros), 0)::bigint AS cost_micros
FROM billing_lines WHERE period = $1
"""

# A closed month's lines of the subtree at path $2, in tree order.
STATEMENT_LINES = """
SELECT t.code AS tenant, t.name, t.level::text AS level, l.carrier, l.segments, l.cost_micros,
       l.list_price_micros, l.dedup_segments
FROM billing_lines l JOIN tenants t ON t.id = l.tenant_id
WHERE l.period = $1 AND t.path >= $2 AND t.path < $2 || '~'
ORDER BY t.path, l.carrier COLLATE "C"
"""
