"""Dashboard SQL: its sessions, and only what no other domain's service already answers.

The overview's money and quota numbers come from `billing.service.estimate` and
`quota.service.get_quota` (so they equal the API's by construction), the tenant page's lists
from the services of the domains that own them; these queries add only the per-day chart and
the per-child rollups. None reads `messages`: they aggregate the daily usage rollup and the
quota ledger.

A subtree is the path range `path >= $1 AND path < $1 || '~'`; the child of the subtree's top
that a row belongs to is the first code after the top's path ('' for the top itself).
"""

from __future__ import annotations

from datetime import date, datetime

import msgspec

_CHILD = "split_part(substr(t.path, length($1) + 1), '/', 1)"

# --- sessions (migrations 0018, 0025): a row per signed-in browser, found by its token's SHA-256,
# belonging to a user or to an API key (exactly one) ----------------------------------------------


class LiveSession(msgspec.Struct, frozen=True):
    id: int
    key_prefix: str | None
    user_id: int | None
    # When the SMS code was entered in this session (None: not yet).
    second_factor_at: datetime | None
    # Its last request was over a minute ago: note this one (at most a write a minute).
    stale: bool


# The session whose token hashes to $1, unless past its end or idle for the interval $2; with
# the prefix of the key or the user it belongs to (whose own liveness the caller checks).
LIVE_SESSION = """
SELECT s.id, k.prefix AS key_prefix, s.user_id, s.second_factor_at,
       s.seen_at < hub_now() - interval '1 minute' AS stale
FROM dashboard_sessions s LEFT JOIN api_keys k ON k.id = s.key_id
WHERE s.token_sha256 = $1 AND s.expires_at > hub_now() AND s.seen_at > hub_now() - $2::interval
"""

# A request in session $1.
TOUCH_SESSION = "UPDATE dashboard_sessions SET seen_at = hub_now() WHERE id = $1"

# A new session of key $2 or user $3 with the token hash $1, ending after the interval $4.
START_SESSION = """
INSERT INTO dashboard_sessions (token_sha256, key_id, user_id, expires_at, user_agent)
VALUES ($1, $2, $3, hub_now() + $4::interval, $5)
RETURNING id
"""

# The SMS code was entered in session $1.
PASS_SECOND_FACTOR = "UPDATE dashboard_sessions SET second_factor_at = hub_now() WHERE id = $1"

# Key $1's (or user $3's) sessions beyond its newest $2 end: a script signing in in a loop
# cannot pile up rows.
TRIM_SESSIONS = """
DELETE FROM dashboard_sessions
WHERE (key_id = $1 OR user_id = $3)
  AND id < (SELECT min(id) FROM (
        SELECT id FROM dashboard_sessions WHERE key_id = $1 OR user_id = $3
        ORDER BY id DESC LIMIT $2) newest)
"""

# Sessions of any key past their end or idle for the interval $1 (run at each sign-in).
END_STALE_SESSIONS = """
DELETE FROM dashboard_sessions WHERE expires_at <= hub_now() OR seen_at <= hub_now() - $1::interval
"""

# Sign-out: the session whose token hashes to $1.
# Sign-out: the session ends; whose it was (for the operation log).
END_SESSION = """
WITH gone AS (DELETE FROM dashboard_sessions WHERE token_sha256 = $1 RETURNING key_id, user_id)
SELECT coalesce('user:' || u.login, 'key:' || k.prefix) AS name,
       coalesce(u.tenant_id, k.tenant_id) AS tenant_id
FROM gone LEFT JOIN users u ON u.id = gone.user_id LEFT JOIN api_keys k ON k.id = gone.key_id
"""

# Sign-out everywhere: every session of key $1 or of user $2.
END_OWN_SESSIONS = "DELETE FROM dashboard_sessions WHERE key_id = $1 OR user_id = $2"

# One session ($1) of key $2 or user $3 ends; its id when it was theirs.
END_OWN_SESSION = """
DELETE FROM dashboard_sessions WHERE id = $1 AND (key_id = $2 OR user_id = $3) RETURNING id
"""


class SessionRow(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    created_at: datetime
    seen_at: datetime
    expires_at: datetime
    user_agent: str
    second_factor_at: datetime | None


# The live sessions of key $1 or user $2, newest first.
OWN_SESSIONS = """
SELECT id, created_at, seen_at, expires_at, user_agent, second_factor_at
FROM dashboard_sessions
WHERE (key_id = $1 OR user_id = $2) AND expires_at > hub_now()
  AND seen_at > hub_now() - $3::interval
ORDER BY id DESC
"""


class DaySegments(msgspec.Struct, frozen=True):
    day: date
    segments: int


# Billable segments per day of the subtree at $1 from $2 to $3 (exclusive), rolled up or not yet
# (as billing's USAGE reads them). From the subtree's tenants into usage_daily's primary key
# (tenant_id, day, …): a province reads its own rows, not the whole hub's month.
DAILY_SEGMENTS = """
SELECT u.day, sum(u.segments)::bigint AS segments
FROM (
    SELECT d.day, d.billable AS segments
    FROM tenants t JOIN LATERAL (
        SELECT day, billable FROM usage_daily
        WHERE tenant_id = t.id AND day >= $2 AND day < $3
    ) d ON true
    WHERE t.path >= $1 AND t.path < $1 || '~'
    UNION ALL
    SELECT e.day, e.segments
    FROM usage_entries e JOIN tenants t ON t.id = e.tenant_id
    WHERE e.kind = 'billable' AND e.day >= $2 AND e.day < $3
      AND t.path >= $1 AND t.path < $1 || '~'
) u
GROUP BY u.day
ORDER BY u.day
"""


class SubtreeTenant(msgspec.Struct, frozen=True):
    code: str
    child: str


# Every tenant of the subtree at $1 with the child of the top it lies under ('' for the top).
SUBTREE_CHILDREN = f"""
SELECT t.code, {_CHILD} AS child
FROM tenants t
WHERE t.path >= $1 AND t.path < $1 || '~'
"""


class ChildDelivery(msgspec.Struct, frozen=True):
    child: str
    delivered: int
    undelivered: int


# Per child of the top at $1 (and '' for the top's own sends): segments with a final receipt,
# delivered or not, from $2 to $3 (exclusive). Reads usage_daily.delivered/undelivered and the
# usage_entries kinds 'delivered'/'undelivered' (migration 0014); the delivery rate is
# delivered / (delivered + undelivered).
CHILD_DELIVERY = """
SELECT split_part(substr(u.path, length($1) + 1), '/', 1) AS child,
       sum(u.delivered)::bigint AS delivered,
       sum(u.undelivered)::bigint AS undelivered
FROM (
    SELECT t.path, d.delivered, d.undelivered
    FROM tenants t JOIN LATERAL (
        SELECT delivered, undelivered FROM usage_daily
        WHERE tenant_id = t.id AND day >= $2 AND day < $3
    ) d ON true
    WHERE t.path >= $1 AND t.path < $1 || '~'
    UNION ALL
    SELECT t.path,
           CASE WHEN e.kind = 'delivered' THEN e.segments ELSE 0 END,
           CASE WHEN e.kind = 'undelivered' THEN e.segments ELSE 0 END
    FROM usage_entries e JOIN tenants t ON t.id = e.tenant_id
    WHERE e.kind IN ('delivered', 'undelivered') AND e.day >= $2 AND e.day < $3
      AND t.path >= $1 AND t.path < $1 || '~'
) u
GROUP BY 1
"""


class NotedAlert(msgspec.Struct, frozen=True):
    code: str
    name: str
    threshold: int
    reached_at: datetime
    held: int
    limit_segments: int


# Accounts of the subtree at $1 whose ledger noted 80 % / 100 % of the limit in the month $2:
# the highest threshold each reached, fullest first.
SUBTREE_ALERTS = """
SELECT t.code, t.name, max(e.threshold)::int AS threshold, max(e.created_at) AS reached_at,
       quota_alert_held(a.id, a.used + a.reserved) AS held, a.limit_segments
FROM quota_events e
JOIN quota_accounts a ON a.id = e.account_id
JOIN tenants t ON t.id = a.tenant_id
WHERE a.period = $2 AND t.path >= $1 AND t.path < $1 || '~'
GROUP BY t.code, t.name, t.path, a.id, a.used, a.reserved, a.limit_segments
ORDER BY max(e.threshold) DESC, t.path
LIMIT $3
"""
