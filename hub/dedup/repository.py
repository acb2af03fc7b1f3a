"""SQL for deduplication: idempotency keys (layer 1) and content keys (layer 3)."""

from __future__ import annotations

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

# A session-local scratch table for a send's content keys (emptied at every commit).
PREPARE_KEYS = """
CREATE TEMP TABLE IF NOT EXISTS send_keys (key bytea NOT NULL, phone text NOT NULL)
    ON COMMIT DELETE ROWS;
TRUNCATE send_keys;
"""

# Claim the send's keys (COPYed into send_keys) for its messages, in key order so two sends
# claiming overlapping keys wait for each other instead of deadlocking. A key another message
# holds and has not let expire stays with it.
CLAIM_FOR_SEND = """
INSERT INTO dedup_keys AS d (key, message_id, tenant_id, expires_at)
SELECT k.key, m.id, $2, hub_now() + make_interval(secs => $3)
FROM send_keys k JOIN messages m ON m.send_id = $1 AND m.phone = k.phone
ORDER BY k.key
ON CONFLICT (key) DO UPDATE
SET message_id = EXCLUDED.message_id, tenant_id = EXCLUDED.tenant_id,
    expires_at = EXCLUDED.expires_at
WHERE d.expires_at <= hub_now()
"""


class Holder(msgspec.Struct, frozen=True):
    phone: str
    message_id: int
    tenant_id: int


# The send's phones whose key another send's message holds, and who holds it.
HELD_ELSEWHERE = """
SELECT k.phone, d.message_id, d.tenant_id
FROM send_keys k JOIN dedup_keys d ON d.key = k.key JOIN messages held ON held.id = d.message_id
WHERE held.send_id <> $1
"""

# Let go of the keys a send's messages hold (the send was cancelled: nothing reached the phones).
RELEASE_SEND = """
DELETE FROM dedup_keys d USING messages m WHERE m.send_id = $1 AND d.message_id = m.id
"""
