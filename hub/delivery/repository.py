"""Delivery SQL: batches, claims with a lease, outcomes, receipts, replies, the sweeper's finds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import msgspec


def bounds(ids: Sequence[int]) -> tuple[int, int]:
    """The least and greatest of some message ids (an empty range for none), passed beside
    `id = ANY(ids)` as `id BETWEEN $a AND $b`: PostgreSQL prunes to the ids' partitions on
    these plain parameters at executor start, generic plans too, and checks them per row as two
    integer comparisons. (SQL functions of the array there, `hub_least_id($1)`, are not folded in
    a generic plan: PostgreSQL ran them for every row, ≈ 3.5 calls per delivered message and a
    third of its time in the outbox benchmark; docs/BENCHMARKS.md, issue 17 point 4.)"""
    return (min(ids), max(ids)) if ids else (0, -1)


# A queued send's `accepted` messages that are due, cut into batches of at most $2 per carrier:
# (carrier, first id, last id, the send's lane). The API runs it after commit; the sweeper for
# stragglers. The messages are numbered per carrier in id order, and only each batch's first and
# last are grouped; carriers compare bytewise (COLLATE "C": the same groups, without the
# locale's rules). For 890,000 messages, 2.2 s became 1.0 (docs/BENCHMARKS.md, issue 17 point 1).
BATCHES = """
SELECT carrier, min(id) AS first_id, max(id) AS last_id, priority
FROM (
    SELECT m.id, m.carrier COLLATE "C" AS carrier, s.priority::text AS priority,
           row_number() OVER w - 1 AS i, lead(m.id) OVER w IS NULL AS last
    FROM messages m JOIN sends s ON s.id = m.send_id
    WHERE m.send_id = $1 AND s.state = 'queued' AND m.status = 'accepted'
      AND m.id >= hub_send_messages_from($1) AND m.id < hub_send_messages_to($1)
      AND (m.retry_at IS NULL OR m.retry_at <= hub_now() + make_interval(secs => $3))
    WINDOW w AS (PARTITION BY m.carrier COLLATE "C" ORDER BY m.id)
) b
WHERE i % $2 = 0 OR i % $2 = $2 - 1 OR last
GROUP BY carrier, i / $2, priority
ORDER BY first_id
"""


class SendInfo(msgspec.Struct, frozen=True):
    id: int
    tenant_id: int
    signature: str
    body: str
    encoding: str
    priority: str
    due_at: datetime
    sms_extension: str
    reservation_id: int | None
    segments_each: int
    # The hub's own send (a second-factor code): its messages' texts go once they went.
    system: bool = False


# What every message of a send shares: its text, sender, lane and reservation; nothing while
# it waits on a suspension of its tenant or one above it (parked or not yet).
SEND_INFO = """
SELECT s.id, s.tenant_id, s.signature, s.body, s.encoding, s.priority::text AS priority,
       s.due_at, t.sms_extension, s.reservation_id, s.segments_each, s.system
FROM sends s JOIN tenants t ON t.id = s.tenant_id
WHERE s.id = $1 AND s.state = 'queued' AND s.parked_at IS NULL
  AND tenant_suspended_by(t.path) IS NULL
"""


class Claimed(msgspec.Struct, frozen=True):
    id: int
    phone: str
    segments: int
    attempts: int
    body: str | None  # its own body (a personal send's, with {姓名} filled in), else the send's


# Claim up to $7 of a batch's due `accepted` messages for gateway $5 under a lease; rows another
# worker holds are skipped (it owns them). `attempts` identifies this claim: every later write
# checks it, so a worker whose lease ran out (and whose rows were claimed again) changes nothing.
# Nothing is claimed once the send's tenant or one above it is suspended (checked per chunk, so
# a suspension stops a batch between two chunks). $8: the gateway can be asked what it took (the
# outbox): the claim marks the rows handed over itself (MARK_SUBMITTED's work), since a dead
# worker's rows that it never took go again all the same (EXPIRED_LEASES asks it).
CLAIM = """
UPDATE messages m
SET status = 'sending', gateway = $5, attempts = m.attempts + 1, retry_at = NULL,
    lease_until = hub_now() + make_interval(secs => $6), updated_at = hub_now(),
    submitted_at = CASE WHEN $8::boolean THEN hub_now() END
WHERE m.id IN (
    SELECT id FROM messages
    WHERE send_id = $1 AND carrier = $2 AND id BETWEEN $3 AND $4 AND status = 'accepted'
      AND phone IS NOT NULL  -- erased at its owner's request (hub.people): never sent
      AND (retry_at IS NULL OR retry_at <= hub_now())
      AND NOT EXISTS (SELECT 1 FROM sends s JOIN tenants t ON t.id = s.tenant_id
                      WHERE s.id = $1 AND (s.parked_at IS NOT NULL
                                           OR tenant_suspended_by(t.path) IS NOT NULL))
    ORDER BY id
    LIMIT $7
    FOR UPDATE SKIP LOCKED
)
RETURNING m.id, m.phone, m.segments, m.attempts, m.body
"""

# A system send's messages $1 that are done with the gateway (not waiting for a retry) lose
# their own text (a second-factor code): the code went to the phone and the hub keeps it
# nowhere. (The built-in outbox gateway stands for the carrier and the phone: what it was
# given stays there, for `hub outbox --phone`, until its retention period.)
FORGET_TEXTS = """
UPDATE messages SET body = NULL
WHERE id = ANY($1::bigint[]) AND status <> 'accepted' AND body IS NOT NULL
  AND id BETWEEN $2::bigint AND $3::bigint  -- the ids' bounds: prunes to their partition
"""

# Just before a chunk goes to the gateway: from here on its outcome may be unknown if we die.
MARK_SUBMITTED = """
UPDATE messages m SET submitted_at = hub_now()
FROM UNNEST($1::bigint[], $2::smallint[]) AS c(id, attempts)
WHERE m.id = c.id AND m.attempts = c.attempts AND m.status = 'sending'
  AND m.id BETWEEN $3::bigint AND $4::bigint  -- the ids' bounds: prunes to their partition
RETURNING m.id
"""

# The gateway took them: `sent`, with its reference, which receipts find in
# message_references: no index on `messages` names it, so this update is HOT where the page has
# room (migration 0050). Only our own leased rows change. A multi-part message that went only
# in part keeps how many parts went ($5, 0: all) and why ($4).
RECORD_SENT = """
WITH sent AS (
    UPDATE messages m
    SET status = 'sent', sent_at = hub_now(), lease_until = NULL,
        -- erased while it was being sent (hub.people): no reference that may hold the phone
        reference = CASE WHEN m.phone IS NULL THEN 'erased:' || m.id ELSE r.reference END,
        segments_sent = nullif(r.parts, 0), error = nullif(r.error, ''), updated_at = hub_now()
    FROM UNNEST($1::bigint[], $2::text[], $3::smallint[], $4::text[], $5::smallint[])
         AS r(id, reference, attempts, error, parts)
    WHERE m.id = r.id AND m.status = 'sending' AND m.attempts = r.attempts
      AND m.id BETWEEN $6::bigint AND $7::bigint  -- the ids' bounds: prunes to their partition
    RETURNING m.id, m.gateway, m.reference
), held AS (
    INSERT INTO message_references (message_id, gateway, reference)
    SELECT id, gateway, reference FROM sent
    ON CONFLICT (message_id) DO UPDATE
    SET gateway = EXCLUDED.gateway, reference = EXCLUDED.reference
)
SELECT id, reference FROM sent
"""

# It failed for good, or its validity ran out: a final status with the reason.
RECORD_FINAL = """
UPDATE messages m
SET status = $2::message_status, error = r.error, done_at = hub_now(), lease_until = NULL,
    updated_at = hub_now()
FROM UNNEST($1::bigint[], $3::text[], $4::smallint[]) AS r(id, error, attempts)
WHERE m.id = r.id AND m.status = 'sending' AND m.attempts = r.attempts
  AND m.id BETWEEN $5::bigint AND $6::bigint  -- the ids' bounds: prunes to their partition
RETURNING m.id
"""

# A transient failure: back to `accepted`, to be tried again at its retry time.
RECORD_RETRY = """
UPDATE messages m
SET status = 'accepted', retry_at = r.retry_at, error = r.error, submitted_at = NULL,
    lease_until = NULL, updated_at = hub_now()
FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::smallint[])
     AS r(id, retry_at, error, attempts)
WHERE m.id = r.id AND m.status = 'sending' AND m.attempts = r.attempts
  AND m.id BETWEEN $5::bigint AND $6::bigint  -- the ids' bounds: prunes to their partition
RETURNING m.id
"""


class ReceiptTarget(msgspec.Struct, frozen=True):
    id: int
    send_id: int
    tenant_id: int
    carrier: str
    segments: int
    reference: str
    status: str
    day: date  # when it was sent (Asia/Shanghai): the day its usage counts on
    gateway: str
    # Closed as "outcome unknown" before its receipt came: already counted used and billable.
    counted: bool
    # From its `sent` to this receipt, in seconds (the receipt lag /metrics shows).
    lag_seconds: float = 0.0


# Apply receipts: a receipt is for the NEWEST message of gateway $1 holding its reference, and
# only if that one was sent within the receipt window ($5 seconds): a gateway that reuses its ids
# (an SMSC restarted, a counter wrapped) never reaches an older message. `sent` moves forward to
# delivered or undelivered; a message already final stays as it is (repeats change nothing); one
# not yet `sent` is not matched (see apply_receipts). `segments` are those that went. Each
# receipt probes message_references by itself (migration 0050), which serves as the references'
# index: what it says is checked on the message. (As a join, the planner took a hash join over
# the month's messages whenever its statistics lagged.) The references ($2) are distinct.
APPLY_RECEIPTS = """
WITH target AS (
    SELECT m.id, r.status, r.code, coalesce(m.error LIKE 'outcome unknown:%', false) AS counted
    FROM UNNEST($2::text[], $3::text[], $4::text[]) AS r(reference, status, code)
    CROSS JOIN LATERAL (
        SELECT m.id, m.error FROM message_references h
        JOIN messages m ON m.id = h.message_id AND m.gateway = h.gateway
                       AND m.reference = h.reference
        WHERE h.gateway = $1 AND h.reference = r.reference
          AND m.sent_at > hub_now() - make_interval(secs => $5)
        ORDER BY m.sent_at DESC, m.id DESC
        LIMIT 1
    ) m
    ORDER BY r.reference
)
UPDATE messages m
SET status = t.status::message_status, error = nullif(t.code, ''), done_at = hub_now(),
    updated_at = hub_now()
FROM target t
WHERE m.id = t.id AND m.status = 'sent'
RETURNING m.id, m.send_id, m.tenant_id, m.carrier,
          coalesce(m.segments_sent, m.segments) AS segments, m.reference, m.status::text AS status,
          (m.sent_at AT TIME ZONE 'Asia/Shanghai')::date AS day, m.gateway, t.counted,
          extract(epoch FROM hub_now() - m.sent_at)::float8 AS lag_seconds
"""

# Serialise the recording of `sent` references with receipts for them that found no message:
# one transaction-scoped advisory lock per (gateway, reference), taken in key order.
LOCK_REFERENCES = """
SELECT count(pg_advisory_xact_lock(k))
FROM (SELECT DISTINCT hashtextextended($1 || ':' || r, 0) AS k FROM unnest($2::text[]) r
      ORDER BY 1) s
"""

# Receipts for references no message holds (yet): kept, counted; the latest one per reference
# (an old receipt kept for a reused id must not stand in the way of the new message's).
KEEP_UNMATCHED = """
INSERT INTO unmatched_receipts (gateway, reference, status, code)
SELECT $1, r.reference, r.status::message_status, r.code
FROM UNNEST($2::text[], $3::text[], $4::text[]) AS r(reference, status, code)
ON CONFLICT (gateway, reference) DO UPDATE
SET status = EXCLUDED.status, code = EXCLUDED.code, received_at = EXCLUDED.received_at
"""

# References that matched nothing: known to us (a message sent within the receipt window, $3
# seconds, already final: a repeat) or not (kept: it may be for a message not yet recorded).
KNOWN_REFERENCES = """
SELECT h.reference FROM message_references h
JOIN messages m ON m.id = h.message_id AND m.gateway = h.gateway AND m.reference = h.reference
WHERE h.gateway = $1 AND h.reference = ANY($2::text[])
  AND m.sent_at > hub_now() - make_interval(secs => $3)
"""

# Receipts that arrived before these messages ($2) were recorded `sent`, taken for applying:
# only those that came after the message was handed over (an older one is for another message
# that held a reused id).
TAKE_UNMATCHED = """
DELETE FROM unmatched_receipts u USING messages m
WHERE m.id = ANY($2::bigint[]) AND u.gateway = $1 AND u.reference = m.reference
  AND u.received_at >= m.submitted_at
  AND m.id BETWEEN $3::bigint AND $4::bigint  -- the ids' bounds: prunes to their partitions
RETURNING u.reference, u.status::text AS status, u.code
"""

# The one reservation a send's messages settle.
SEND_RESERVATION = "SELECT reservation_id FROM sends WHERE id = $1"

# Handed to the gateway with no answer recorded (its worker died, or the gateway never answered):
# maybe delivered, so never sent again. `sent` with no reference, "outcome unknown" and why ($3);
# $4 the parts that may have gone (0: all). Only the claim's own rows ($2: its attempts).
CLOSE_UNKNOWN = """
UPDATE messages m
SET status = 'sent', sent_at = hub_now(), lease_until = NULL, segments_sent = nullif(u.parts, 0),
    error = 'outcome unknown: ' || u.why, updated_at = hub_now()
FROM UNNEST($1::bigint[], $2::smallint[], $3::text[], $4::smallint[]) AS u(id, attempts, why, parts)
WHERE m.id = u.id AND m.attempts = u.attempts AND m.status = 'sending'
  AND m.id BETWEEN $5::bigint AND $6::bigint  -- the ids' bounds: prunes to their partitions
RETURNING m.id
"""

# The reservations several sends' messages settle.
SEND_RESERVATIONS = """
SELECT id, reservation_id FROM sends WHERE id = ANY($1::bigint[])
"""


class OpenSend(msgspec.Struct, frozen=True):
    id: int
    priority: str


# Queued sends that may still have messages to deliver (the sweeper's round), urgent ones
# first: the next $3 after ($1 priority, $2 id), a page of a keyset walk over the partial index
# sends_queued, so a round sees every queued send however many there are. Not those that wait
# on a suspension (nothing of them may expire or go meanwhile).
OPEN_SENDS = """
SELECT s.id, s.priority::text AS priority FROM sends s JOIN tenants t ON t.id = s.tenant_id
WHERE s.state = 'queued' AND s.parked_at IS NULL
  AND (s.priority, s.id) > ($1::send_priority, $2::bigint)
  AND tenant_suspended_by(t.path) IS NULL
ORDER BY s.priority, s.id
LIMIT $3
"""

# A send's messages whose lease ran out (their worker died): those never handed to the gateway
# go back to `accepted`; those handed over with no answer recorded are returned for a decision.
# An outbox gateway ($2: their names) can be asked: a message it has no row for was never taken
# (its worker lost PostgreSQL between marking it handed over and the insert) and goes back too;
# going again adds nothing if the insert lands after all (ON CONFLICT DO NOTHING).
EXPIRED_LEASES = """
WITH expired AS (
    SELECT m.id, m.submitted_at IS NOT NULL
                 AND NOT (m.gateway = ANY($2::text[])
                          AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = m.id))
                 AS handed
    FROM messages m
    WHERE m.send_id = $1 AND m.status = 'sending' AND m.lease_until < hub_now()
      AND m.id >= hub_send_messages_from($1) AND m.id < hub_send_messages_to($1)
)
UPDATE messages m
SET status = CASE WHEN e.handed THEN m.status ELSE 'accepted' END::message_status,
    lease_until = CASE WHEN e.handed THEN m.lease_until END,
    submitted_at = CASE WHEN e.handed THEN m.submitted_at END,
    updated_at = hub_now()
FROM expired e
WHERE m.id = e.id AND m.send_id = $1 AND m.status = 'sending' AND m.lease_until < hub_now()
  AND m.id >= hub_send_messages_from($1) AND m.id < hub_send_messages_to($1)
RETURNING m.id, m.attempts, m.tenant_id, m.carrier, m.segments, e.handed AS unknown,
          (m.submitted_at AT TIME ZONE 'Asia/Shanghai')::date AS day
"""

# Messages of a send still open: waiting, being sent, or relying on a copy whose outcome is not
# known yet (which may still hand it the notice to send).
OPEN_MESSAGES = """
SELECT count(*) FILTER (WHERE status = 'accepted' AND retry_at IS NULL
                         OR status = 'accepted' AND retry_at <= hub_now()) AS due,
       count(*) FILTER (WHERE status IN ('accepted', 'sending')
                         OR relies_on IS NOT NULL) AS open
FROM messages WHERE send_id = $1
  AND id >= hub_send_messages_from($1) AND id < hub_send_messages_to($1)
"""

# No message of it can change by our hand any more.
FINISH_SEND = "UPDATE sends SET state = 'done' WHERE id = $1 AND state = 'queued'"

# `accepted` messages past their validity: expired.
EXPIRE_MESSAGES = """
UPDATE messages SET status = 'expired', error = 'validity period ended', done_at = hub_now(),
                    retry_at = NULL, updated_at = hub_now()
WHERE send_id = $1 AND status = 'accepted'
  AND id >= hub_send_messages_from($1) AND id < hub_send_messages_to($1)
  AND (SELECT due_at FROM sends WHERE id = $1) + make_interval(secs => $2) <= hub_now()
RETURNING id, segments
"""

# Receipts kept as unmatched longer than a message's validity period ($2 seconds): no message can
# still be recorded `sent` for them. A batch of $1 (the purge cron commits each).
PURGE_UNMATCHED = """
DELETE FROM unmatched_receipts WHERE (gateway, reference) IN (
    SELECT gateway, reference FROM unmatched_receipts
    WHERE received_at <= hub_now() - make_interval(secs => $2)
    ORDER BY received_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
"""

# A batch ($1) of reply waits that can link no reply any more: their message went longer than the
# reply window ($2 seconds) ago, or ended without going (a settled copy, refused, cancelled…).
PURGE_REPLY_WAITS = """
DELETE FROM reply_waits w USING (
    SELECT d.tenant_id, d.phone, d.send_id FROM reply_waits d JOIN messages m ON m.id = d.message_id
    WHERE m.sent_at < hub_now() - make_interval(secs => $2)
       OR (m.sent_at IS NULL AND m.done_at IS NOT NULL)
       OR m.status IN ('rejected', 'opted_out', 'cancelled', 'expired', 'failed')
    LIMIT $1
) gone
WHERE w.tenant_id = gone.tenant_id AND w.phone = gone.phone AND w.send_id = gone.send_id
"""

# Whether the hub is still recording any of these messages' submission.
ANY_STILL_SENDING = """
SELECT EXISTS (SELECT 1 FROM messages WHERE id = ANY($1::bigint[]) AND status = 'sending'
                AND id BETWEEN $2::bigint AND $3::bigint)
"""

# Receipts kept as unmatched whose message has since been recorded `sent` within its gateway's
# receipt window ($2 gateways, $3 windows in seconds): up to $1 of them taken to apply (a batch per
# transaction; one a concurrent sweep holds is left to it), and only those that came after it was
# handed over: an older one is for a reused id's old message. One whose message is past its
# window is never taken (it could not apply): it stays until the purge.
TAKE_NOW_MATCHED = """
WITH matched AS (
    SELECT u.gateway, u.reference FROM unmatched_receipts u
    JOIN UNNEST($2::text[], $3::float8[]) AS g(name, window_seconds) ON g.name = u.gateway
    JOIN message_references h ON h.gateway = u.gateway AND h.reference = u.reference
    JOIN messages m ON m.id = h.message_id AND m.gateway = h.gateway
                   AND m.reference = h.reference AND m.status = 'sent'
    WHERE u.received_at >= m.submitted_at
      AND m.sent_at > hub_now() - make_interval(secs => g.window_seconds)
    LIMIT $1
    FOR UPDATE OF u SKIP LOCKED
)
DELETE FROM unmatched_receipts u USING matched
WHERE u.gateway = matched.gateway AND u.reference = matched.reference
RETURNING u.gateway, u.reference, u.status::text AS status, u.code
"""

# A page of the originals copies still rely on: the next $5 after original id $4, walked on the
# partial index of relying copies (messages_relying: only copies still relying, never the whole
# table), each with whether its outcome is decided: it reached the phone (delivered; or `sent`,
# outcome unknown included, with no receipt within its gateway's wait, $1 gateways and $2 waits
# in seconds, the validity $3 for a gateway no longer configured) or never did; and, for one
# `sent`, whether a receipt may still come (within its gateway's receipt window, $6).
ORIGINALS_DECIDED = """
WITH relied AS (
    SELECT DISTINCT relies_on AS id FROM messages WHERE relies_on > $4
    ORDER BY relies_on LIMIT $5
)
SELECT o.id, o.status IN ('sent', 'delivered') AS reached,
       o.status IN ('delivered', 'undelivered', 'failed', 'expired', 'cancelled')
       OR o.status = 'sent'
          AND o.sent_at <= hub_now() - make_interval(secs => coalesce(g.wait, $3)) AS decided,
       o.status = 'sent'
          AND o.sent_at > hub_now() - make_interval(secs => coalesce(g.receipts, $3)) AS presumed
FROM relied r
JOIN messages o ON o.id = r.id
LEFT JOIN UNNEST($1::text[], $2::float8[], $6::float8[]) AS g(name, wait, receipts)
    ON g.name = o.gateway
ORDER BY o.id
"""

# The outbox gateway: what it was given, once per message whatever retries happen, and its
# receipt to report (outbox_pending, migration 0048), queued again by a retry: a receipt
# reported while the message waited to go again is reported once more after it went.
OUTBOX_INSERT = """
WITH taken AS (
    INSERT INTO outbox (message_id, gateway, phone, sender, text, segments)
    SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::smallint[])
    ON CONFLICT (message_id) DO NOTHING
)
INSERT INTO outbox_pending (message_id, gateway)
SELECT * FROM UNNEST($1::bigint[], $2::text[])
ON CONFLICT (message_id) DO NOTHING
"""

# The outbox's receipts recorded: these need no report again. Not while the hub is still
# recording the message's submission (a receipt then waits as unmatched, and is reported again
# in case its worker dies and the message is closed as "outcome unknown").
OUTBOX_REPORTED = """
DELETE FROM outbox_pending p
USING messages m
WHERE p.message_id = ANY($1::bigint[]) AND m.id = p.message_id AND m.status <> 'sending'
  AND m.id BETWEEN $2::bigint AND $3::bigint  -- the ids' bounds: prunes to their partitions
"""

# Receipts the hub has not recorded, of messages the outbox took more than $2 seconds ago (the
# normal report comes within a second): lost while PostgreSQL or the worker was down. One whose
# outbox row went (its phone erased) is reported with no phone.
OUTBOX_UNREPORTED = """
SELECT p.message_id AS id, coalesce(o.phone, '') AS phone
FROM outbox_pending p
JOIN messages m ON m.id = p.message_id
LEFT JOIN outbox o ON o.message_id = p.message_id
WHERE p.gateway = $1 AND p.created_at < hub_now() - make_interval(secs => $2)
  AND m.status <> 'sending'
ORDER BY p.message_id
LIMIT $3
"""

# A message handed to the outbox by a worker that died before recording it (closed `sent`,
# "outcome unknown", without a reference): the outbox can be asked, and it has it, so it gets
# the outbox's reference (held in message_references, as RECORD_SENT does) and its receipt
# matches.
OUTBOX_KNOWN_REFERENCE = """
WITH known AS (
    UPDATE messages m SET reference = 'outbox-' || m.id::text, updated_at = hub_now()
    FROM outbox o
    WHERE m.id = ANY($1::bigint[]) AND o.message_id = m.id AND m.gateway = o.gateway
      AND m.status = 'sent' AND m.reference IS NULL
      AND m.id BETWEEN $2::bigint AND $3::bigint  -- the ids' bounds: prunes to their partitions
    RETURNING m.id, m.gateway, m.reference
)
INSERT INTO message_references (message_id, gateway, reference)
SELECT id, gateway, reference FROM known
ON CONFLICT (message_id) DO UPDATE SET gateway = EXCLUDED.gateway, reference = EXCLUDED.reference
"""

# The tenant a reply's address names.
TENANT_BY_EXTENSION = "SELECT id FROM tenants WHERE sms_extension = $1"

# A reply, once per gateway reference (an empty reference is never a repeat).
INSERT_INBOUND = """
INSERT INTO inbound (tenant_id, gateway, reference, phone, address, text, opt_out, received_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, hub_now()))
ON CONFLICT (gateway, reference) WHERE reference <> '' DO NOTHING
RETURNING id
"""

# Link the new replies $1 to the send each answers: the newest send of the reply's tenant that
# asked for a reply (reply_waits) and whose message to the phone went ($2 seconds at most
# before the reply came). One statement for the whole batch.
LINK_REPLIES = """
UPDATE inbound i SET send_id = pick.send_id
FROM (
    SELECT r.id, (
        SELECT w.send_id FROM reply_waits w JOIN messages m ON m.id = w.message_id
        WHERE w.tenant_id = r.tenant_id AND w.phone = r.phone
          AND m.sent_at IS NOT NULL AND m.sent_at >= r.received_at - make_interval(secs => $2)
        ORDER BY w.send_id DESC
        LIMIT 1
    ) AS send_id
    FROM inbound r WHERE r.id = ANY($1::bigint[])
) pick
WHERE i.id = pick.id AND pick.send_id IS NOT NULL
"""

# The phone asked this tenant to stop.
OPT_OUT = "INSERT INTO opt_outs (tenant_id, phone) VALUES ($1, $2) ON CONFLICT DO NOTHING"

# Push the replies $1 to their tenants' webhooks, where they have one.
QUEUE_WEBHOOKS = """
INSERT INTO webhook_deliveries (tenant_id, inbound_id)
SELECT i.tenant_id, i.id FROM inbound i
WHERE i.id = ANY($1::bigint[]) AND EXISTS (SELECT 1 FROM webhooks w WHERE w.tenant_id = i.tenant_id)
ORDER BY i.id
ON CONFLICT DO NOTHING
"""

# A page of replies to the tenant at path $1 (or its whole subtree), in id order.
INBOUND_PAGE = """
SELECT i.id, t.code AS tenant, i.phone, i.address, i.text, i.opt_out, i.gateway, i.received_at,
       i.send_id
FROM inbound i JOIN tenants t ON t.id = i.tenant_id
WHERE (t.path = $1 OR ($2 AND t.path > $1 AND t.path < $1 || '~')) AND i.id > $3
ORDER BY i.id
LIMIT $4
"""

# Set a tenant's webhook. A new secret keeps the one it replaces as previous_secret for $4
# seconds (both sign each push meanwhile); the same secret again, or a step back to the
# previous one, leaves that overlap's end alone (switching back and forth never stretches it);
# a new URL ends it (its receiver never had the old secret).
SET_WEBHOOK = """
INSERT INTO webhooks (tenant_id, url, secret) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id) DO UPDATE SET
    url = $2,
    secret = $3,
    updated_at = hub_now(),
    previous_secret = CASE WHEN webhooks.url <> $2 THEN NULL
                           WHEN webhooks.secret = $3 THEN webhooks.previous_secret
                           WHEN webhooks.previous_secret = $3 THEN webhooks.secret
                           WHEN $4 > 0 THEN webhooks.secret END,
    previous_until = CASE WHEN webhooks.url <> $2 THEN NULL
                          WHEN webhooks.secret = $3 THEN webhooks.previous_until
                          WHEN webhooks.previous_secret = $3 THEN webhooks.previous_until
                          WHEN $4 > 0 THEN hub_now() + make_interval(secs => $4) END
"""

# A tenant's webhook, without its secret.
GET_WEBHOOK = "SELECT url, updated_at FROM webhooks WHERE tenant_id = $1"

# No more pushes for tenant $1: its webhook goes, and so do its pushes not yet delivered (the
# delivered ones stay, as history).
DELETE_WEBHOOK = """
WITH gone AS (DELETE FROM webhooks WHERE tenant_id = $1)
DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND delivered_at IS NULL
"""


class DueWebhook(msgspec.Struct, frozen=True):
    delivery_id: int
    attempts: int
    url: str
    secret: str
    # The secret the current one replaced, while their overlap lasts (else None).
    previous_secret: str | None = None


# Claim up to $1 due, undelivered webhook pushes under a lease: next_at moves $2 seconds ahead, so
# other workers skip them while the HTTP call runs with no transaction open, and a dead worker's
# come back once it runs out. Rows are a DueWebhook plus the reply (an InboundView).
CLAIM_WEBHOOKS = """
WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE delivered_at IS NULL AND next_at <= hub_now()
    ORDER BY next_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE webhook_deliveries d SET next_at = hub_now() + make_interval(secs => $2)
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.tenant_id, d.inbound_id, d.attempts
)
SELECT l.id AS delivery_id, l.attempts, w.url, w.secret,
       CASE WHEN w.previous_until > hub_now() THEN w.previous_secret END AS previous_secret,
       i.id, t.code AS tenant, i.phone, i.address, i.text, i.opt_out, i.gateway, i.received_at,
       i.send_id
FROM leased l
JOIN webhooks w ON w.tenant_id = l.tenant_id
JOIN inbound i ON i.id = l.inbound_id
JOIN tenants t ON t.id = l.tenant_id
ORDER BY l.id
"""

# The tenant's endpoint took the push (2xx): delivered, for good.
WEBHOOK_DELIVERED = """
UPDATE webhook_deliveries SET delivered_at = hub_now(), attempts = attempts + 1
WHERE id = $1 AND delivered_at IS NULL
"""

# The push failed: counted, with why, and due again in $3 seconds, or never ('infinity') once it
# has had $4 attempts; the row stays, with its last error, for the tenant to ask about. $5 is the
# count it was claimed with: a worker whose lease ran out (the row claimed again) counts nothing.
WEBHOOK_FAILED = """
UPDATE webhook_deliveries
SET attempts = attempts + 1, last_error = $2,
    next_at = CASE WHEN attempts + 1 >= $4 THEN 'infinity'
                   ELSE hub_now() + make_interval(secs => $3) END
WHERE id = $1 AND delivered_at IS NULL AND attempts = $5
"""


# Replies to a tenant, newest first.
RECENT_INBOUND = """
SELECT i.id, i.phone, i.text, i.opt_out, i.received_at
FROM inbound i WHERE i.tenant_id = $1
ORDER BY i.id DESC
LIMIT $2
"""


# Phones that opted out of a tenant's messages, newest first.
OPT_OUTS = """
SELECT o.phone, o.created_at FROM opt_outs o WHERE o.tenant_id = $1
ORDER BY o.created_at DESC, o.phone
LIMIT $2
"""

# How many phones opted out of a tenant's messages.
OPT_OUT_COUNT = "SELECT count(*) FROM opt_outs WHERE tenant_id = $1"


# --- what operators watch (/metrics) -------------------------------------------------------

# The lanes of the sends $1 (whose batch jobs wait in arq's queue).
SEND_LANES = "SELECT id, priority::text AS priority FROM sends WHERE id = ANY($1::bigint[])"

# How long the oldest message due and not yet handed to a gateway has waited, in seconds (0:
# none): the queued sends (walked on sends_open) still holding an `accepted` or `sending`
# message, by when they fell due. A send parked by a suspension waits by design: not counted.
OLDEST_DUE_AGE = """
SELECT coalesce(extract(epoch FROM hub_now() - min(s.due_at)), 0)::float8
FROM sends s
WHERE s.state = 'queued' AND s.parked_at IS NULL AND s.due_at <= hub_now()
  AND EXISTS (
    SELECT 1 FROM messages m
    WHERE m.send_id = s.id AND m.status IN ('accepted', 'sending')
      AND m.id >= s.message_ids_from AND m.id < s.message_ids_from + (1::bigint << 40))
"""
