"""Retention's SQL: the tenants' own periods, and one `Sweep` per table the run erases from.

A sweep's predicate is written once: the dry run counts with it and the real run erases with
it, so both report the same rows. Every batch takes at most `$2` rows (`FOR UPDATE SKIP
LOCKED`: a row a request holds waits for the next run, it never holds the run up), and where
the table has an id the batches walk it (keyset: `$3` is the last id done), so no batch scans
what an earlier one already passed. The messages table is not here: its step is
hub.messages.retention's (partitions).
"""

from __future__ import annotations

import msgspec

# --- the tenants' own periods -------------------------------------------------------------

SET_PERIOD = """
INSERT INTO retention_periods (tenant_id, messages_days, subtree, updated_by)
VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id) DO UPDATE
SET messages_days = EXCLUDED.messages_days, subtree = EXCLUDED.subtree,
    updated_by = EXCLUDED.updated_by, updated_at = hub_now()
"""

DROP_PERIOD = "DELETE FROM retention_periods WHERE tenant_id = $1"

# The periods that bind tenant $1 (path $2): its own, and those set for their subtree by the
# tenants above it.
PERIODS_OVER = """
SELECT r.messages_days AS days, r.tenant_id = $1 AS own, r.subtree
FROM retention_periods r JOIN tenants s ON s.id = r.tenant_id
WHERE r.tenant_id = $1 OR (r.subtree AND $2 > s.path AND $2 < s.path || '~')
"""

# Every tenant bound by a period of its own or of an ancestor's subtree, with the shortest.
PERIODS_IN_FORCE = """
SELECT t.id AS tenant_id, min(r.messages_days) AS days
FROM retention_periods r
JOIN tenants s ON s.id = r.tenant_id
JOIN tenants t ON t.id = s.id OR (r.subtree AND t.path > s.path AND t.path < s.path || '~')
GROUP BY t.id
"""


class PeriodRow(msgspec.Struct, frozen=True):
    days: int
    own: bool
    subtree: bool


# --- the sweeps ---------------------------------------------------------------------------


# The tenants whose own period is shorter than the operator's, and their cutoffs (Policy's
# tenants_before): every sweep's query has them, those for messages' data use them.
SHORTER = (
    "shorter AS (SELECT * FROM unnest($2::bigint[], $3::timestamptz[]) AS s (tenant_id, before))"
)


def _before(table: str, column: str) -> str:
    """`column` is older than the row's tenant's cutoff (its own shorter one, else `$1`)."""
    return (
        f"{column} < coalesce((SELECT s.before FROM shorter s"
        f" WHERE s.tenant_id = {table}.tenant_id), $1)"
    )


class Sweep(msgspec.Struct, frozen=True, kw_only=True):
    """What one step erases: rows of `table` matching `where`, where `$1` is the operator's
    cutoff and `shorter (tenant_id, before)` the cutoffs of tenants that chose shorter."""

    table: str
    where: str
    how: str  # as the run reports it: "rows deleted", "phones and texts erased"
    # As the run names it (the table unless a column is meant: "sends.rejects").
    what: str = ""
    # The id the batches walk; None: the table has no single id (each batch takes any rows).
    key: str | None = "id"
    # None: the rows are deleted; otherwise what an UPDATE sets (the personal columns).
    erase: str | None = None

    @property
    def shown(self) -> str:
        return self.what or self.table

    @property
    def count(self) -> str:
        """`$1` cutoff, `$2` and `$3` the shorter tenants' ids and cutoffs."""
        return f"WITH {SHORTER} SELECT count(*) FROM {self.table} WHERE {self.where}"

    @property
    def batch(self) -> str:
        """One batch: `$1` to `$3` as `count`'s, `$4` rows at most, `$5` the last key done
        (keyset sweeps only); answers how many rows went and the last key."""
        if self.key is None:
            pick = (
                f"SELECT ctid FROM {self.table} WHERE {self.where} LIMIT $4 FOR UPDATE SKIP LOCKED"
            )
            match, last = "ctid = ANY (ARRAY (SELECT ctid FROM picked))", "0::bigint"
            returning = "RETURNING 1 AS k"
        else:
            pick = (
                f"SELECT {self.key} FROM {self.table} WHERE {self.key} > $5 AND ({self.where})"
                f" ORDER BY {self.key} LIMIT $4 FOR UPDATE SKIP LOCKED"
            )
            match = f"{self.key} IN (SELECT {self.key} FROM picked)"
            last = "coalesce(max(k), $5)"
            returning = f"RETURNING {self.key} AS k"
        change = (
            f"DELETE FROM {self.table} WHERE {match} {returning}"
            if self.erase is None
            else f"UPDATE {self.table} SET {self.erase} WHERE {match} {returning}"
        )
        return (
            f"WITH {SHORTER}, picked AS ({pick}), done AS ({change})\n"
            f"SELECT count(*) AS n, {last} AS last FROM done"
        )


# Replies: phone and text erased (a tenant's shorter period holds for them too, as for its
# messages); the row stays (its send's reply count, the opt-out flag,
# the archive's "n replies").
INBOUND = Sweep(
    table="inbound",
    where=f"{_before('inbound', 'received_at')} AND (phone <> '' OR text <> '')",
    erase="phone = '', text = ''",
    how="phones and texts erased",
)
# Ended opt-outs (the phone, why, who). Opt-outs in force (`opt_outs`) are never swept.
RESUBSCRIPTIONS = Sweep(table="resubscriptions", where="at < $1", how="rows deleted")
# Pushes delivered, or pending since long before (given up): their last_error may echo a reply.
WEBHOOK_DELIVERIES = Sweep(
    table="webhook_deliveries", where="coalesce(delivered_at, next_at) < $1", how="rows deleted"
)
# Stored answers to creating POSTs (refused phones among them), whatever their TTL.
IDEMPOTENCY_KEYS = Sweep(
    table="idempotency_keys", where="created_at < $1", key=None, how="rows deleted"
)
UNMATCHED_RECEIPTS = Sweep(
    table="unmatched_receipts", where="received_at < $1", key=None, how="rows deleted"
)
OUTBOX = Sweep(table="outbox", where="created_at < $1", key="message_id", how="rows deleted")
# Who held a gateway's reference (receipts' lookup, migration 0050): those of months before the
# cutoff's (a message id carries its month) whose message went with its month's partition in
# the messages' step; a month kept for a message still waiting keeps them.
MESSAGE_REFERENCES = Sweep(
    table="message_references",
    where=(
        "message_id < hub_month_floor($1) AND NOT EXISTS"
        " (SELECT 1 FROM messages m WHERE m.id = message_references.message_id)"
    ),
    key="message_id",
    how="rows deleted",
)
# Receipts the outbox never got to report (a message stuck for the whole period): with its copies.
OUTBOX_PENDING = Sweep(
    table="outbox_pending", where="created_at < $1", key="message_id", how="rows deleted"
)
# A send's refused recipients (the tenant's shorter period holds): each `to` (a phone) emptied,
# its reason kept, so the send still says how many were refused and why.
REJECTS = Sweep(
    table="sends",
    what="sends.rejects",
    where=(
        f"{_before('sends', 'created_at')} AND EXISTS "
        "(SELECT 1 FROM jsonb_array_elements(rejects) r WHERE r ->> 'to' <> '')"
    ),
    erase=(
        "rejects = (SELECT coalesce(jsonb_agg(r || '{\"to\": \"\"}'::jsonb ORDER BY i), '[]')"
        " FROM jsonb_array_elements(rejects) WITH ORDINALITY AS e (r, i))"
    ),
    how="refused phones erased",
)
# Console sessions past their end before the cutoff (an idle one ended sooner, never later).
SESSIONS = Sweep(table="dashboard_sessions", where="expires_at < $1", how="rows deleted")
USER_CODES = Sweep(table="user_codes", where="expires_at < $1", how="rows deleted")
USER_INVITES = Sweep(table="user_invites", where="expires_at < $1", how="rows deleted")
# Greetings recorded for contacts that no longer exist (a new contact has a new id).
CAMPAIGN_DELIVERIES = Sweep(
    table="campaign_deliveries",
    where=(
        "created_at < $1 AND NOT EXISTS "
        "(SELECT 1 FROM contacts c WHERE c.id = campaign_deliveries.contact_id)"
    ),
    key=None,
    how="rows deleted",
)
