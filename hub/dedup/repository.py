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
WHERE tenant_id = $1 AND key = $2 AND expires_at > now()
"""

# Keep an answer (replacing an expired one under the same key).
SAVE_ANSWER = """
INSERT INTO idempotency_keys (tenant_id, key, request_hash, status_code, response, expires_at)
VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
ON CONFLICT (tenant_id, key) DO UPDATE
SET request_hash = EXCLUDED.request_hash, status_code = EXCLUDED.status_code,
    response = EXCLUDED.response, created_at = now(), expires_at = EXCLUDED.expires_at
"""

# Claim content keys for messages, in key order so two sends claiming overlapping keys wait for
# each other instead of deadlocking. A key already held and unexpired is not claimed; returns
# the keys this call now holds.
CLAIM = """
INSERT INTO dedup_keys AS d (key, message_id, tenant_id, expires_at)
SELECT c.key, c.message_id, $3, now() + make_interval(secs => $4)
FROM UNNEST($1::bytea[], $2::bigint[]) AS c(key, message_id)
ORDER BY c.key
ON CONFLICT (key) DO UPDATE
SET message_id = EXCLUDED.message_id, tenant_id = EXCLUDED.tenant_id,
    expires_at = EXCLUDED.expires_at
WHERE d.expires_at <= now()
RETURNING d.key
"""


class Holder(msgspec.Struct, frozen=True):
    key: bytes
    message_id: int
    tenant_id: int


# Who holds these keys.
HOLDERS = "SELECT key, message_id, tenant_id FROM dedup_keys WHERE key = ANY($1::bytea[])"
