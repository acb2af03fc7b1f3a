"""SQL for the quota ledger, each query beside the row Struct it returns.

Lock order everywhere: accounts by (depth, id), root first; a settlement locks its reservations
(by id) before their accounts. Nothing takes them the other way round, so nothing deadlocks.
"""

from __future__ import annotations

from datetime import date, datetime

import msgspec

from hub.quota.schemas import Entry


class AccountRow(msgspec.Struct, frozen=True):
    id: int
    tenant_id: int
    period: date
    depth: int
    policy: str
    limit_segments: int
    used: int
    reserved: int
    allocated: int


_ACCOUNT = (
    "a.id, a.tenant_id, a.period, a.depth, a.policy::text AS policy, a.limit_segments, "
    "a.used, a.reserved, a.allocated"
)


class ChainLink(msgspec.Struct, frozen=True):
    tenant_id: int
    code: str
    depth: int
    account_id: int | None
    policy: str | None


# The tenants from the root down to one tenant ($1: the path of every level), each with its
# account for the month $2 when one is open.
CHAIN = """
SELECT t.id AS tenant_id, t.code, t.depth, a.id AS account_id, a.policy::text AS policy
FROM tenants t LEFT JOIN quota_accounts a ON a.tenant_id = t.id AND a.period = $2
WHERE t.path = ANY($1::text[])
ORDER BY t.depth
"""

# One account, locked.
LOCK_ACCOUNT = f"""
SELECT {_ACCOUNT} FROM quota_accounts a WHERE a.tenant_id = $1 AND a.period = $2 FOR UPDATE
"""

# Several accounts, locked root first.
LOCK_ACCOUNTS = f"""
SELECT {_ACCOUNT} FROM quota_accounts a WHERE a.id = ANY($1::bigint[])
ORDER BY a.depth, a.id FOR UPDATE
"""

# One account, unlocked.
ACCOUNT = f"SELECT {_ACCOUNT} FROM quota_accounts a WHERE a.tenant_id = $1 AND a.period = $2"

# Open an account; nothing when a concurrent transaction opened it first.
OPEN_ACCOUNT = f"""
WITH opened AS (
    INSERT INTO quota_accounts AS a (tenant_id, period, depth, policy, limit_segments)
    VALUES ($1, $2, $3, $4::quota_policy, $5)
    ON CONFLICT (tenant_id, period) DO NOTHING
    RETURNING *
)
SELECT {_ACCOUNT} FROM opened a
"""

# New balances and policy for one account.
UPDATE_ACCOUNT = """
UPDATE quota_accounts SET limit_segments = $2, used = $3, reserved = $4, allocated = $5,
                          policy = $6::quota_policy
WHERE id = $1
"""

# Append entries (one per row of the arrays).
INSERT_ENTRIES = """
INSERT INTO quota_entries (account_id, kind, amount, limit_before, limit_after, used_before,
    used_after, reserved_before, reserved_after, allocated_before, allocated_after,
    reservation_id, cause, actor)
SELECT * FROM UNNEST($1::bigint[], $2::quota_entry_kind[], $3::bigint[], $4::bigint[],
    $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[],
    $11::bigint[], $12::bigint[], $13::text[], $14::text[])
"""

# Record 80 % / 100 % of the limit reached (once per account and threshold; what an account
# holds for its alerts is quota_alert_held's: hub/quota/sql/lease.sql).
RECORD_THRESHOLDS = "SELECT quota_note_thresholds($1::bigint[])"

# Reserve on the charged accounts, root first, all or nothing (quota_reserve in
# hub/quota/sql/reserve.sql: lock, check, insert, charge, log and note thresholds at once); or,
# with a block $8 (not NULL), from the tenant's lease of its pooled ancestors' quota, leasing a
# block of $8 segments for $9 seconds when it has none with room (quota_draw in
# hub/quota/sql/lease.sql). quota_take (hub/quota/sql/take.sql) tries either again itself after
# a deadlock, $10 tries at most.
TAKE = "SELECT * FROM quota_take($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"

# Active leases past their time (or their month), oldest first.
DUE_LEASES = """
SELECT id FROM quota_leases WHERE status = 'active' AND expires_at <= hub_now()
ORDER BY expires_at LIMIT $1
"""

# Return the leases among $1 that are due, their accounts locked root first; how many.
RETURN_LEASES = "SELECT quota_return_leases($1::bigint[], $2)"

# The accounts of every active lease held on account $1 (a descendant's lease of its quota).
LEASED_ON = """
SELECT DISTINCT unnest(accounts) FROM quota_leases
WHERE status = 'active' AND accounts @> ARRAY[$1::bigint]
"""

# What the active leases held on account $1 whose accounts are all among $2 (the caller locked
# them root first) hold undrawn; the leases locked.
UNDRAWN_ON = """
SELECT coalesce(sum(l.free), 0)::bigint
FROM (SELECT amount - drawn AS free FROM quota_leases
      WHERE status = 'active' AND accounts @> ARRAY[$1::bigint] AND accounts <@ $2::bigint[]
      ORDER BY id FOR UPDATE) l
"""

# Return every active lease held on account $1 whose accounts are all among $2 (the caller
# locked them root first): the segments released.
RETURN_LEASES_ON = """
SELECT coalesce(sum(quota_return_lease(l.id, $3)), 0)::bigint
FROM (SELECT id FROM quota_leases
      WHERE status = 'active' AND accounts @> ARRAY[$1::bigint] AND accounts <@ $2::bigint[]
      ORDER BY id FOR UPDATE) l
"""


class ReserveResult(msgspec.Struct, frozen=True):
    reservation_id: int | None
    expires_at: datetime | None
    short_account: int | None
    short_tenant: int | None
    short_policy: str | None
    short_limit: int | None
    short_used: int | None
    short_reserved: int | None
    short_allocated: int | None


class ReservationRow(msgspec.Struct, frozen=True):
    id: int
    tenant_id: int
    period: date
    accounts: list[int]
    amount: int
    posted: int | None
    status: str
    cause: str
    expires_at: datetime
    # Settled piece by piece by delivery batches (`settle_parts`).
    used_part: int = 0
    released_part: int = 0

    @property
    def left(self) -> int:
        """Still reserved: neither used nor released yet."""
        return self.amount - self.used_part - self.released_part


# The one definition of what a reservation `r` has used and what it still holds reserved,
# whatever its state: delivery settles it chunk by chunk (used_part, released_part) before it
# is posted, and an expired or voided one keeps what it used. The audit (`hub audit quota`)
# checks the accounts against these; the API's and the dashboard's subtree numbers are these.
USED_OF = "coalesce(r.posted, r.used_part)"
RESERVED_OF = (
    "CASE WHEN r.status = 'pending' THEN r.amount - r.used_part - r.released_part ELSE 0 END"
)

_RESERVATION = (
    "r.id, r.tenant_id, r.period, r.accounts, r.amount, r.posted, r.status::text "
    "AS status, r.cause, r.expires_at, r.used_part, r.released_part"
)

# Pending reservations among $1, locked (settled ones are skipped: settling happens once).
LOCK_PENDING = f"""
SELECT {_RESERVATION} FROM quota_reservations r
WHERE r.id = ANY($1::bigint[]) AND r.status = 'pending'
ORDER BY r.id FOR UPDATE
"""

# Expired pending reservations, oldest first, skipping those another sweeper holds.
LOCK_EXPIRED = f"""
SELECT {_RESERVATION} FROM quota_reservations r
WHERE r.status = 'pending' AND r.expires_at <= hub_now()
ORDER BY r.expires_at
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

# Pending reservations among $1 expire $2 seconds from now, or never ($2 NULL).
SET_EXPIRY = """
UPDATE quota_reservations
SET expires_at = CASE WHEN $2::float8 IS NULL THEN 'infinity'::timestamptz
                      ELSE hub_now() + make_interval(secs => $2::float8) END
WHERE id = ANY($1::bigint[]) AND status = 'pending'
"""

# Pending reservations among $1 last at least $2 seconds from now (never shortened).
EXTEND_EXPIRY = """
UPDATE quota_reservations
SET expires_at = greatest(expires_at, hub_now() + make_interval(secs => $2::float8))
WHERE id = ANY($1::bigint[]) AND status = 'pending'
"""

# Mark reservations settled.
SETTLE = """
UPDATE quota_reservations r
SET status = s.status::reservation_status, posted = s.posted, settled_at = hub_now()
FROM UNNEST($1::bigint[], $2::text[], $3::bigint[]) AS s(id, status, posted)
WHERE r.id = s.id
"""

# A delivery chunk's share of reservations, used and released in part, in one round trip
# (quota_settle_parts in hub/quota/sql/settle_parts.sql).
SETTLE_PARTS = "SELECT quota_settle_parts($1::bigint[], $2::bigint[], $3::bigint[], $4)"

# New balances for several accounts.
UPDATE_BALANCES = """
UPDATE quota_accounts a SET used = b.used, reserved = b.reserved
FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS b(id, used, reserved)
WHERE a.id = b.id
"""

# What a tenant's account opens with.
DEFAULTS = "SELECT monthly_limit, policy::text AS policy FROM quota_defaults WHERE tenant_id = $1"

# Set what a tenant's account opens with.
SET_DEFAULTS = """
INSERT INTO quota_defaults (tenant_id, monthly_limit, policy, updated_by)
VALUES ($1, $2, $3::quota_policy, $4)
ON CONFLICT (tenant_id) DO UPDATE
SET monthly_limit = EXCLUDED.monthly_limit, policy = EXCLUDED.policy, updated_at = hub_now(),
    updated_by = EXCLUDED.updated_by
"""


class AccountView(AccountRow, frozen=True):
    """A tenant's account for a month as the quota views read it. One not open yet (`opened`
    false, id 0) reads as what it will open with: its default limit and policy, nothing used,
    reserved or granted."""

    code: str
    name: str
    opened: bool


# The columns of AccountView for tenants `t` and the month $2 (the queries add which tenants).
_ACCOUNT_VIEW = """
SELECT coalesce(a.id, 0) AS id, t.id AS tenant_id, $2::date AS period, t.depth,
       coalesce(a.policy, d.policy, 'strict')::text AS policy,
       coalesce(a.limit_segments, d.monthly_limit, 0) AS limit_segments,
       coalesce(a.used, 0) AS used, coalesce(a.reserved, 0) AS reserved,
       coalesce(a.allocated, 0) AS allocated, t.code, t.name, a.id IS NOT NULL AS opened
FROM tenants t LEFT JOIN quota_accounts a ON a.tenant_id = t.id AND a.period = $2
LEFT JOIN quota_defaults d ON d.tenant_id = t.id
"""

# Tenant $1's account for the month $2, as its own quota view reads it.
OWN_ACCOUNT = _ACCOUNT_VIEW + "WHERE t.id = $1"

# Tenant $1's children's accounts for the month $2, read the same way (its list of children).
CHILDREN = _ACCOUNT_VIEW + "WHERE t.parent_id = $1 ORDER BY t.code"


class BranchUse(msgspec.Struct, frozen=True):
    # The child of the top the branch hangs from ('' for the top itself).
    child: str
    used: int
    reserved: int


# What each branch below the top whose path is $1 has used and holds reserved in the month $2:
# one row per child of the top with reservations in its subtree, and '' for the top's own.
SUBTREE_USE = f"""
SELECT split_part(substr(t.path, length($1) + 1), '/', 1) AS child,
       coalesce(sum({USED_OF}), 0)::bigint AS used,
       coalesce(sum({RESERVED_OF}), 0)::bigint AS reserved
FROM quota_reservations r JOIN tenants t ON t.id = r.tenant_id
WHERE r.period = $2 AND t.path >= $1 AND t.path < $1 || '~'
GROUP BY 1
"""


# The thresholds an account has reached, in order.
THRESHOLDS_REACHED = """
SELECT threshold, created_at FROM quota_events WHERE account_id = $1 ORDER BY threshold
"""


_ENTRY = (
    "e.id, e.account_id, e.kind::text AS kind, e.amount, e.limit_before, e.limit_after, "
    "e.used_before, e.used_after, e.reserved_before, e.reserved_after, e.allocated_before, "
    "e.allocated_after, e.reservation_id, e.cause, e.actor, e.created_at"
)

# A page of one account's entries, oldest first, after the cursor $2.
ENTRIES_PAGE = f"""
SELECT {_ENTRY} FROM quota_entries e WHERE e.account_id = $1 AND e.id > $2 ORDER BY e.id LIMIT $3
"""

# The latest $3 entries of tenant $1's account for month $2, newest first.
LATEST_ENTRIES = f"""
SELECT {_ENTRY} FROM quota_entries e JOIN quota_accounts a ON a.id = e.account_id
WHERE a.tenant_id = $1 AND a.period = $2
ORDER BY e.id DESC
LIMIT $3
"""

# --- audit -------------------------------------------------------------------------------


class AuditEntryRow(Entry, frozen=True):
    # Entries are read per account for the audit.
    account_id: int
    # The amount of the reservation a `post` settled (it releases all of it).
    reservation_amount: int | None


class AuditAccountRow(msgspec.Struct, frozen=True):
    id: int
    tenant_id: int
    code: str
    policy: str
    limit_segments: int
    used: int
    reserved: int
    allocated: int
    parent_tenant_id: int | None


# Every account of the month.
PERIOD_ACCOUNTS = f"""
SELECT {_ACCOUNT}, t.code, t.path, p.id AS parent_tenant_id
FROM quota_accounts a JOIN tenants t ON t.id = a.tenant_id
LEFT JOIN tenants p ON p.id = t.parent_id
WHERE a.period = $1
ORDER BY a.depth, a.id
"""

# Every entry of the month's accounts, in order, with the reservation's amount where it has one.
PERIOD_ENTRIES = f"""
SELECT {_ENTRY}, r.amount AS reservation_amount
FROM quota_entries e JOIN quota_accounts a ON a.id = e.account_id
LEFT JOIN quota_reservations r ON r.id = e.reservation_id
WHERE a.period = $1
ORDER BY e.account_id, e.id
"""

# What an active lease `l` still holds on each of its accounts (the pooled ancestors'):
# what it has not lent to its tenant's reservations yet. Those hold the rest themselves.
LEASE_HELD_OF = "CASE WHEN l.status = 'active' THEN l.amount - l.drawn ELSE 0 END"

# Per account: what its reservations, and the leases held on it, say it should hold.
RESERVATION_TOTALS = f"""
SELECT account_id, sum(reserved)::bigint AS reserved, sum(used)::bigint AS used
FROM (
    SELECT acc.id AS account_id, {RESERVED_OF} AS reserved, {USED_OF} AS used
    FROM quota_reservations r CROSS JOIN LATERAL unnest(r.accounts) AS acc(id)
    WHERE r.period = $1
    UNION ALL
    SELECT acc.id, {LEASE_HELD_OF}, 0
    FROM quota_leases l CROSS JOIN LATERAL unnest(l.accounts) AS acc(id)
    WHERE l.period = $1
) held
GROUP BY account_id
"""

# Leases of the month whose `drawn` is not the sum of the reservations drawn from them.
LEASES_MISDRAWN = """
SELECT l.id, l.drawn, coalesce(sum(r.amount), 0)::bigint AS draws
FROM quota_leases l LEFT JOIN quota_reservations r ON r.lease_id = l.id
WHERE l.period = $1
GROUP BY l.id
HAVING l.drawn <> coalesce(sum(r.amount), 0)
"""

# Per tenant with an account: the real usage of its whole subtree.
SUBTREE_TOTALS = f"""
SELECT a.id AS account_id, t.code, a.limit_segments,
       coalesce(sum({RESERVED_OF}), 0) + coalesce(sum({USED_OF}), 0) AS total
FROM quota_accounts a JOIN tenants t ON t.id = a.tenant_id
LEFT JOIN tenants d ON d.path >= t.path AND d.path < t.path || '~'
LEFT JOIN quota_reservations r ON r.tenant_id = d.id AND r.period = a.period
WHERE a.period = $1
GROUP BY a.id, t.code, a.limit_segments
"""


# Per threshold (80, 100): the accounts of month $1 that reached it (quota_events) and still
# stand at or over it (a raised limit ends the alert), as RECORD_THRESHOLDS measures them.
ALERTS_STANDING = """
SELECT e.threshold, count(*) AS n
FROM quota_events e JOIN quota_accounts a ON a.id = e.account_id
WHERE a.period = $1 AND a.limit_segments > 0
  AND quota_alert_held(a.id, a.used + a.reserved) * 100 >= e.threshold * a.limit_segments
GROUP BY e.threshold
"""
