"""SQL for sends and messages, each query beside the row it returns."""

from __future__ import annotations

from datetime import datetime

import msgspec

# Which of these phones opted out of the tenant's messages.
OPTED_OUT = "SELECT phone FROM opt_outs WHERE tenant_id = $1 AND phone = ANY($2::text[])"

# A new send; its counts are filled in once its messages are written.
INSERT_SEND = """
INSERT INTO sends (tenant_id, signature, body, encoding, segments_each, priority, dedup,
                   recipients, repeats, rejects, segments, list_price_micros, actor,
                   state, send_at, held_until, due_at)
VALUES ($1, $2, $3, $4, $5, $6::send_priority, $7, $8, $9, $10::jsonb, 0, 0, $11,
        $12::send_state, $13, $14, $15)
RETURNING id
"""

# A tenant's own quiet hours, if it set any.
QUIET_HOURS = "SELECT enabled, starts, ends FROM quiet_hours WHERE tenant_id = $1"

# Set a tenant's own quiet hours.
SET_QUIET_HOURS = """
INSERT INTO quiet_hours (tenant_id, enabled, starts, ends) VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id) DO UPDATE
SET enabled = EXCLUDED.enabled, starts = EXCLUDED.starts, ends = EXCLUDED.ends,
    updated_at = hub_now()
"""

# Cancel a send that has not gone yet; returns its reservation when it could be cancelled.
CANCEL_SEND = """
UPDATE sends SET state = 'cancelled', cancelled_at = hub_now(), parked_at = NULL
WHERE id = $1 AND state IN ('scheduled', 'held')
RETURNING coalesce(reservation_id, 0) AS reservation_id
"""

# A send's messages still waiting to go.
WAITING = "SELECT id FROM messages WHERE send_id = $1 AND status = 'accepted'"

# Its messages that were to go are cancelled; their ids.
CANCEL_MESSAGES = """
UPDATE messages SET status = 'cancelled', updated_at = hub_now()
WHERE send_id = $1 AND status = 'accepted'
RETURNING id
"""

# Sends whose time has come, up to $1 of them (NULL: all), earliest first: from scheduled or
# held to queued (delivery picks them up), unless their tenant or one above it is suspended
# (those are parked instead: PARK_SUSPENDED).
RELEASE_DUE = """
UPDATE sends s SET state = 'queued'
WHERE s.state IN ('scheduled', 'held') AND s.id IN (
    SELECT d.id FROM sends d JOIN tenants t ON t.id = d.tenant_id
    WHERE d.state IN ('scheduled', 'held') AND d.due_at <= hub_now()
      AND d.parked_at IS NULL AND tenant_suspended_by(t.path) IS NULL
    ORDER BY d.due_at, d.id
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
RETURNING s.id
"""

# Due sends whose tenant or one above it is suspended, not parked yet: up to $1 of them (NULL:
# all) parked now; returns them with their reservations. Nothing is scanned while no tenant is
# suspended.
PARK_SUSPENDED = """
UPDATE sends s SET parked_at = hub_now()
WHERE s.parked_at IS NULL AND s.id IN (
    SELECT d.id FROM sends d JOIN tenants t ON t.id = d.tenant_id
    WHERE d.state IN ('scheduled', 'held', 'queued') AND d.due_at <= hub_now()
      AND d.parked_at IS NULL
      AND EXISTS (SELECT 1 FROM tenants WHERE status = 'suspended')
      AND tenant_suspended_by(t.path) IS NOT NULL
    ORDER BY d.id
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
RETURNING s.id, s.reservation_id
"""


class ParkedSend(msgspec.Struct, frozen=True):
    id: int
    tenant_id: int
    priority: str


# Parked sends whose suspension has ended: the next $2 (NULL: all) after send $1.
RESUMED = """
SELECT s.id, s.tenant_id, s.priority::text AS priority
FROM sends s JOIN tenants t ON t.id = s.tenant_id
WHERE s.parked_at IS NOT NULL AND s.state IN ('scheduled', 'held', 'queued')
  AND tenant_suspended_by(t.path) IS NULL
  AND s.id > $1
ORDER BY s.id
LIMIT $2
"""

# Parked sends that go on: queued and due now (so their validity starts afresh); returns them
# with their reservations.
UNPARK = """
UPDATE sends SET parked_at = NULL, state = 'queued', due_at = hub_now()
WHERE id = ANY($1::bigint[]) AND parked_at IS NOT NULL
  AND state IN ('scheduled', 'held', 'queued')
RETURNING id, reservation_id
"""

# A send's messages are written with COPY (see service.create_send) into these columns.
MESSAGE_COLUMNS = ("send_id", "tenant_id", "phone", "carrier", "status", "segments")

# Mark a send's messages to these phones as duplicates of the copies that reach them: settled
# (done_at) when that copy was delivered already, else relying on it until its outcome is known.
MARK_DUPLICATES = """
UPDATE messages m SET status = 'deduplicated', duplicate_of = d.original,
                      duplicate_tenant_id = d.tenant_id,
                      done_at = CASE WHEN d.gone THEN hub_now() END, updated_at = hub_now()
FROM UNNEST($2::text[], $3::bigint[], $4::bigint[], $5::boolean[])
     AS d(phone, original, tenant_id, gone)
WHERE m.send_id = $1 AND m.phone = d.phone
"""

# The send's reservation and what it cost.
FINISH_SEND = """
UPDATE sends SET reservation_id = $2, segments = $3, list_price_micros = $4 WHERE id = $1
"""


class SendRow(msgspec.Struct, frozen=True):
    id: int
    state: str
    send_at: datetime | None
    held_until: datetime | None
    due_at: datetime
    tenant_id: int
    tenant_code: str
    tenant_path: str
    signature: str
    body: str
    priority: str
    dedup: bool
    encoding: str
    segments_each: int
    segments: int
    list_price_micros: int
    rejects: str
    created_at: datetime


# A send, only if its tenant lies in the subtree whose path is $2.
SEND_IN_SUBTREE = """
SELECT s.id, s.state::text AS state, s.send_at, s.held_until, s.due_at, s.tenant_id,
       t.code AS tenant_code, t.path AS tenant_path, s.signature, s.body,
       s.priority::text AS priority, s.dedup, s.encoding, s.segments_each, s.segments,
       s.list_price_micros, s.rejects::text AS rejects, s.created_at
FROM sends s JOIN tenants t ON t.id = s.tenant_id
WHERE s.id = $1 AND t.path >= $2 AND t.path < $2 || '~'
"""

# How many of a send's messages are in each status.
STATUS_COUNTS = """
SELECT status::text AS status, count(*) AS n FROM messages WHERE send_id = $1 GROUP BY status
"""


# A page of a send's messages (as MessageView) after the cursor $2, of status $4 (NULL: all),
# for a caller whose subtree is the path $5: the copy a message was deduplicated against is named
# only when its tenant is in that subtree; any other sender stays anonymous.
MESSAGES_PAGE = """
SELECT m.id, m.phone, m.carrier, m.status::text AS status, m.segments,
       CASE WHEN v.inside THEN m.duplicate_of END AS duplicate_of,
       CASE WHEN v.inside THEN d.code END AS duplicate_tenant,
       CASE WHEN v.inside THEN 'subtree' WHEN NOT v.inside THEN 'another_sender' END
           AS duplicate_source,
       m.updated_at
FROM messages m
LEFT JOIN tenants d ON d.id = m.duplicate_tenant_id
LEFT JOIN LATERAL (SELECT d.path >= $5 AND d.path < $5 || '~' AS inside) v ON true
WHERE m.send_id = $1 AND m.id > $2 AND ($4::message_status IS NULL OR m.status = $4)
ORDER BY m.id
LIMIT $3
"""


class RecentSend(msgspec.Struct, frozen=True):
    id: int
    body: str
    state: str
    priority: str
    recipients: int
    segments: int
    created_at: datetime


# A tenant's own latest sends, newest first.
RECENT_SENDS = """
SELECT s.id, s.body, s.state::text AS state, s.priority::text AS priority, s.recipients,
       s.segments, s.created_at
FROM sends s WHERE s.tenant_id = $1
ORDER BY s.id DESC
LIMIT $2
"""


class SendStatusCount(msgspec.Struct, frozen=True):
    send_id: int
    status: str
    n: int


# Messages by status for the sends $1 (as GET /v1/messages/{id} counts them).
SEND_STATUS_COUNTS = """
SELECT send_id, status::text AS status, count(*) AS n
FROM messages WHERE send_id = ANY($1::bigint[])
GROUP BY send_id, status
"""
