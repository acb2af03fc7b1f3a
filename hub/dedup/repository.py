"""SQL for deduplication: idempotency keys (layer 1) and content keys (layer 3)."""

from __future__ import annotations

from datetime import datetime

import msgspec

# Only one request per (tenant, Idempotency-Key) at a time; false while another holds it.
TRY_LOCK_KEY = "SELECT pg_try_advisory_xact_lock($1)"


class StoredAnswer(msgspec.Struct, frozen=True):
    request_hash: bytes
    status_code: int
    response: bytes


# The answer an unexpired key got.
STORED_ANSWER = """
SELECT request_hash, status_code, response FROM idempotency_keys
WHERE tenant_id = $1 AND key = $2 AND expires_at > hub_now()
"""

# Keep an answer (replacing an expired one under the same key).
SAVE_ANSWER = """
INSERT INTO idempotency_keys (tenant_id, key, request_hash, status_code, response, expires_at)
VALUES ($1, $2, $3, $4, $5, hub_now() + make_interval(secs => $6))
ON CONFLICT (tenant_id, key) DO UPDATE
SET request_hash = EXCLUDED.request_hash, status_code = EXCLUDED.status_code,
    response = EXCLUDED.response, created_at = hub_now(), expires_at = EXCLUDED.expires_at
"""

# A session-local scratch table for a send's content keys (emptied at every commit); each key's
# message when known (a large send's: hub.dedup.service.KnownKeys). Named anew when it gained
# `message_id` (it was `send_keys`): behind a transaction pooler a server connection keeps the
# version before's two-column table, which neither version could then use.
PREPARE_KEYS = """
CREATE TEMP TABLE IF NOT EXISTS send_content_keys (
    key bytea NOT NULL, phone text NOT NULL, message_id bigint
) ON COMMIT DELETE ROWS;
TRUNCATE send_content_keys;
"""


# The send's keys (COPYed into send_content_keys, or two arrays: inline_keys) with its messages
# (due at $4, a window of $3 seconds), those where `only` holds, in key order: each claim is one
# statement in that order, so two sends claiming overlapping keys wait for each other instead
# of deadlocking.
def _send_keys(only: str = "") -> str:
    return f"""
SELECT k.key, m.id, $2, $4::timestamptz, $4::timestamptz + make_interval(secs => $3)
FROM send_content_keys k JOIN messages m ON m.send_id = $1 AND m.phone = k.phone
    AND m.id >= hub_send_messages_from($1) AND m.id < hub_send_messages_to($1)
{f"WHERE {only}" if only else ""}
ORDER BY k.key
"""


# The same rows when send_content_keys holds each key's message (KnownKeys): no join with the
# send's messages (1.7 of a million-recipient claim's 8 s). $1 is the send, unused here but for
# the same parameters.
def _send_keys_by_id(only: str = "") -> str:
    return f"""
SELECT k.key, k.message_id, $2, $4::timestamptz, $4::timestamptz + make_interval(secs => $3)
FROM send_content_keys k
WHERE $1::bigint IS NOT NULL{f" AND {only}" if only else ""}
ORDER BY k.key
"""


# Claim the send's keys. A key whose holder's window is over by the time this copy is due, or
# whose holder never reached the phone (failed, expired, cancelled, undelivered), passes to this
# copy. Every conflicting row is locked by this statement, taken or not: the claim's later steps
# see it stay as it is. Returns how many keys it claimed: when that is all of them, no other
# message holds one (the rows are locked until the send commits) and the later steps are skipped.
def _claim_for_send(rows: str) -> str:
    return f"""
WITH claimed AS (
INSERT INTO dedup_keys AS d (key, message_id, tenant_id, due_at, expires_at)
{rows}
ON CONFLICT (key) DO UPDATE
SET message_id = EXCLUDED.message_id, tenant_id = EXCLUDED.tenant_id,
    due_at = EXCLUDED.due_at, expires_at = EXCLUDED.expires_at
WHERE d.expires_at <= EXCLUDED.due_at
   OR EXISTS (SELECT 1 FROM messages h WHERE h.id = d.message_id
              AND h.status IN ('failed', 'expired', 'cancelled', 'undelivered'))
RETURNING 1
)
SELECT count(*) FROM claimed
"""


CLAIM_FOR_SEND = _claim_for_send(_send_keys())
CLAIM_FOR_SEND_BY_ID = _claim_for_send(_send_keys_by_id())

# Whether any of a large send's keys (in send_content_keys) is held by a message already.
ANY_HELD = "SELECT EXISTS (SELECT 1 FROM send_content_keys k JOIN dedup_keys d ON d.key = k.key)"


# A large send none of whose keys is held: all of them by a plain INSERT, about a quarter
# cheaper per key than CLAIM_FOR_SEND, whose speculative insertion of every row (ON CONFLICT)
# was most of a fresh million-recipient send's claim. All or nothing (hub.dedup.service._claim):
# should another send have claimed one meanwhile, it inserts fewer than all (or fails on the
# unique key, once that send commits) and is undone to its savepoint, and CLAIM_FOR_SEND claims
# them. Returns how many it claimed.
def _claim_free(rows: str) -> str:
    return f"""
WITH claimed AS (
INSERT INTO dedup_keys (key, message_id, tenant_id, due_at, expires_at)
{rows}
RETURNING 1
)
SELECT count(*) FROM claimed
"""


_FREE = "NOT EXISTS (SELECT 1 FROM dedup_keys d WHERE d.key = k.key)"
CLAIM_FREE = _claim_free(_send_keys(_FREE))
CLAIM_FREE_BY_ID = _claim_free(_send_keys_by_id(_FREE))


class Displaced(msgspec.Struct, frozen=True):
    message_id: int  # the new holder, of this send
    displaced: int  # the copy due later that held the key
    displaced_due: datetime


# A copy due later never suppresses one due earlier, nor a copy in a slower lane one in a faster
# lane: keys whose holder still waits to go pass to this send's messages — a holder due after
# this send ($4) whose send is scheduled or held, one whose send is parked (its tenant suspended:
# it goes nowhere until the suspension ends), or, for a send due now, one queued in a slower
# lane than its own (an urgent notice is not held behind a bulk queue). Each holder's message
# is locked first, skipping one a worker is claiming: one already on its way keeps its key, and
# this copy relies on it. Returns who held the keys taken.
TAKE_FROM_LATER = """
WITH taken AS (
    SELECT k.key, c.id AS message_id, old.message_id AS displaced, old.due_at AS displaced_due
    FROM send_content_keys k
    JOIN messages c ON c.send_id = $1 AND c.phone = k.phone
        AND c.id >= hub_send_messages_from($1) AND c.id < hub_send_messages_to($1)
    JOIN dedup_keys old ON old.key = k.key
    JOIN messages h ON h.id = old.message_id
    JOIN sends hs ON hs.id = h.send_id
    JOIN sends me ON me.id = $1
    WHERE h.send_id <> $1 AND h.status = 'accepted'
      AND (old.due_at > $4::timestamptz AND hs.state IN ('scheduled', 'held')
           OR hs.parked_at IS NOT NULL
           OR hs.state = 'queued' AND me.state = 'queued' AND hs.priority > me.priority)
    FOR UPDATE OF h SKIP LOCKED
)
UPDATE dedup_keys d
SET message_id = t.message_id, tenant_id = $2, due_at = $4::timestamptz,
    expires_at = $4::timestamptz + make_interval(secs => $3)
FROM taken t
WHERE d.key = t.key
RETURNING t.message_id, t.displaced, t.displaced_due
"""

# Read-only, for a preview: which of these keys ($1, with their phones $2) a send due at $3 (in
# lane $4 when due now; NULL when later) would find held by another message, by the rules
# CLAIM_FOR_SEND and TAKE_FROM_LATER apply (a key whose holder's window is over or whose holder
# never reached the phone passes; so does one held by a copy that still waits: due later,
# parked, or queued in a slower lane).
HELD_FOR_PREVIEW = """
SELECT k.phone
FROM UNNEST($1::bytea[], $2::text[]) AS k(key, phone)
JOIN dedup_keys d ON d.key = k.key
JOIN messages h ON h.id = d.message_id
JOIN sends hs ON hs.id = h.send_id
WHERE d.expires_at > $3::timestamptz
  AND h.status NOT IN ('failed', 'expired', 'cancelled', 'undelivered')
  AND NOT (h.status = 'accepted'
           AND (d.due_at > $3::timestamptz AND hs.state IN ('scheduled', 'held')
                OR hs.parked_at IS NOT NULL
                OR hs.state = 'queued' AND hs.priority > $4::send_priority))
"""

# Copies that relied on the displaced holders $1 now rely on the new holders $2 (of tenant $3)
# when due before $4 (within the new holder's window); the others go out themselves.
REPOINT_RELYING = """
UPDATE messages m
SET status = CASE WHEN s.due_at < $4::timestamptz THEN 'deduplicated'
                  ELSE 'accepted' END::message_status,
    duplicate_of = CASE WHEN s.due_at < $4 THEN r.original END,
    duplicate_tenant_id = CASE WHEN s.due_at < $4 THEN $3::bigint END,
    updated_at = hub_now()
FROM UNNEST($1::bigint[], $2::bigint[]) AS r(displaced, original), sends s
WHERE m.relies_on = r.displaced AND s.id = m.send_id
"""

# The displaced holders $1 (still waiting) rely on the new ones $2 of tenant $3: not sent, their
# segments still reserved until the new holder reaches the phone (or fails).
RELY_ON = """
UPDATE messages m
SET status = 'deduplicated', duplicate_of = r.original, duplicate_tenant_id = $3,
    done_at = NULL, updated_at = hub_now()
FROM UNNEST($1::bigint[], $2::bigint[]) AS r(id, original)
WHERE m.id = r.id AND m.status = 'accepted'
"""


class Holder(msgspec.Struct, frozen=True):
    phone: str
    message_id: int
    tenant_id: int
    gone: bool  # the holder reached the phone: the duplicate is settled at once


# The send's phones whose key another send's message holds, who holds it, and whether it has
# reached the phone already (delivered). A holder `sent` (or closed as "outcome unknown") waits
# for its receipt: an `undelivered` one hands its copies on.
HELD_ELSEWHERE = """
SELECT k.phone, d.message_id, d.tenant_id, held.status = 'delivered' AS gone
FROM send_content_keys k JOIN dedup_keys d ON d.key = k.key
JOIN messages held ON held.id = d.message_id
WHERE held.send_id <> $1
"""


# A small send's keys need no scratch table: each statement that reads send_content_keys reads
# them from two arrays instead (its next two parameters), saving the table's preparation and the
# COPY (three round trips) on every few-recipient send.
def inline_keys(query: str, first_param: int) -> str:
    """`query` reading `send_content_keys k` from `UNNEST($first_param, $first_param + 1)`."""
    assert query.count("send_content_keys k") == 1, "one scratch-table read per statement"
    arrays = f"UNNEST(${first_param}::bytea[], ${first_param + 1}::text[]) AS k(key, phone)"
    return query.replace("send_content_keys k", arrays)


CLAIM_FOR_SEND_INLINE = inline_keys(CLAIM_FOR_SEND, 5)
TAKE_FROM_LATER_INLINE = inline_keys(TAKE_FROM_LATER, 5)
HELD_ELSEWHERE_INLINE = inline_keys(HELD_ELSEWHERE, 2)

# Before the originals $1 settle or hand over: their keys are locked (key order), so a send
# claiming one now either committed first (and its copy is seen) or waits and finds the outcome.
LOCK_KEYS_OF = """
SELECT count(*) FROM (
    SELECT key FROM dedup_keys WHERE message_id = ANY($1::bigint[]) ORDER BY key FOR UPDATE
) k
"""


class Relied(msgspec.Struct, frozen=True):
    tenant_id: int
    carrier: str
    segments: int
    reservation_id: int | None


# The originals $1 reached the phone (or may have): the copies relying on them (and, when $2 is
# given, due before $2 and not parked: a parked send's validity starts when it is unparked) are
# settled (their segments released from their sends' reservations and counted as dedup
# savings).
SETTLE_RELYING = """
UPDATE messages m SET done_at = hub_now(), updated_at = hub_now()
FROM sends s
WHERE m.relies_on = ANY($1::bigint[])
  AND s.id = m.send_id AND ($2::timestamptz IS NULL OR s.due_at < $2 AND s.parked_at IS NULL)
RETURNING m.tenant_id, m.carrier, m.segments, s.reservation_id
"""

# Before settling or handing over: the sends of the copies relying on the originals $1 are locked
# (shared, in id order), so a cancel of one of them either committed first (its copies are closed
# and not handed anything) or waits until this is committed (and then cancels the heir too).
LOCK_RELYING_SENDS = """
SELECT count(*) FROM (
    SELECT id FROM sends
    WHERE id IN (SELECT send_id FROM messages WHERE relies_on = ANY($1::bigint[]))
    ORDER BY id FOR SHARE
) s
"""

# The originals $1 never reached the phone (failed, expired, cancelled, undelivered), or ($2) are
# held up by a suspension (their sends parked): per original, the copy relying on it that can go
# first (not parked itself, then due first; with $2 only one not parked) goes out instead (back
# to `accepted`, still reserved) and takes its key (its window from its own due time, as long as
# the key's); the other copies rely on that heir, and so ($2) does the parked original. With no
# copy relying, the key of one that missed goes (a parked one keeps it: a claim takes it).
# Returns the heirs' sends.
HAND_OVER = """
WITH relying AS (
    SELECT m.id, m.relies_on AS original, m.tenant_id, s.due_at,
           row_number() OVER (PARTITION BY m.relies_on
                              ORDER BY s.parked_at IS NOT NULL, s.due_at, m.id) AS n
    FROM messages m JOIN sends s ON s.id = m.send_id
    WHERE m.relies_on = ANY($1::bigint[]) AND s.state <> 'cancelled'
      AND (NOT $2 OR s.parked_at IS NULL)
), heirs AS (
    UPDATE messages m
    SET status = 'accepted', duplicate_of = NULL, duplicate_tenant_id = NULL, retry_at = NULL,
        updated_at = hub_now()
    FROM relying r WHERE m.id = r.id AND r.n = 1
    RETURNING m.id, r.original, m.tenant_id, r.due_at, m.send_id
), others AS (
    UPDATE messages m
    SET duplicate_of = h.id, duplicate_tenant_id = h.tenant_id, updated_at = hub_now()
    FROM relying r JOIN heirs h ON h.original = r.original
    WHERE m.id = r.id AND r.n > 1
), passed AS (
    UPDATE dedup_keys d
    SET message_id = h.id, tenant_id = h.tenant_id, due_at = h.due_at,
        expires_at = h.due_at + (d.expires_at - d.due_at)
    FROM heirs h WHERE d.message_id = h.original
), aside AS (
    UPDATE messages m
    SET status = 'deduplicated', duplicate_of = h.id, duplicate_tenant_id = h.tenant_id,
        done_at = NULL, updated_at = hub_now()
    FROM heirs h WHERE $2 AND m.id = h.original AND m.status = 'accepted'
), gone AS (
    DELETE FROM dedup_keys d
    WHERE NOT $2 AND d.message_id = ANY($1::bigint[])
      AND NOT EXISTS (SELECT 1 FROM heirs h WHERE h.original = d.message_id)
)
SELECT DISTINCT send_id FROM heirs
"""

# A page of the parked messages copies rely on: the next $2 after message $1, walked on the
# partial index of relying copies (messages_relying); nothing is read while no tenant is
# suspended.
PARKED_RELIED_ON = """
SELECT DISTINCT r.relies_on AS id
FROM messages r
JOIN messages o ON o.id = r.relies_on
JOIN sends s ON s.id = o.send_id
WHERE r.relies_on > $1
  AND o.status = 'accepted' AND s.parked_at IS NOT NULL
  AND EXISTS (SELECT 1 FROM tenants WHERE status = 'suspended')
ORDER BY 1
LIMIT $2
"""

# Of the messages $1, those still waiting in a parked send, locked (after their keys and the
# relying copies' sends); one a worker is claiming (its send unparked meanwhile) is skipped.
LOCK_PARKED = """
SELECT o.id FROM messages o JOIN sends s ON s.id = o.send_id
WHERE o.id = ANY($1::bigint[]) AND o.status = 'accepted' AND s.parked_at IS NOT NULL
ORDER BY o.id
FOR UPDATE OF o SKIP LOCKED
"""

# A cancelled send's own copies that relied on others are settled with it (its whole
# reservation is voided): none of them is ever handed a key.
CLOSE_RELYING_OF_SEND = """
UPDATE messages SET done_at = hub_now(), updated_at = hub_now()
WHERE send_id = $1 AND relies_on IS NOT NULL
"""

# Past their window, in small batches (the purge cron commits each): content keys whose holder
# was due more than a window ago, stored answers to Idempotency-Keys.
PURGE_KEYS = """
DELETE FROM dedup_keys WHERE key IN (
    SELECT key FROM dedup_keys WHERE expires_at <= hub_now()
    ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
"""

PURGE_ANSWERS = """
DELETE FROM idempotency_keys WHERE (tenant_id, key) IN (
    SELECT tenant_id, key FROM idempotency_keys WHERE expires_at <= hub_now()
    ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
"""
