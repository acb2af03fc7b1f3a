"""SQL for sends and messages, each query beside the row it returns."""

from __future__ import annotations

from datetime import datetime

import msgspec

from hub.messages.schemas import FollowKind, Priority

# Which of these phones opted out of the tenant's messages.
OPTED_OUT = "SELECT phone FROM opt_outs WHERE tenant_id = $1 AND phone = ANY($2::text[])"

# Every phone that opted out of tenant $1's messages, at most $2 of them.
OPT_OUTS_OF = "SELECT phone FROM opt_outs WHERE tenant_id = $1 LIMIT $2"

# A large send's counts once its numbers are checked (as its messages were written).
SET_CHECKED = "UPDATE sends SET repeats = $2, rejects = $3::jsonb WHERE id = $1"

# A new send; its counts are filled in once its messages are written.
INSERT_SEND = """
INSERT INTO sends (tenant_id, signature, body, encoding, segments_each, priority, dedup,
                   recipients, repeats, rejects, segments, list_price_micros, actor,
                   state, send_at, held_until, due_at, reply_wanted, follows, follow_kind,
                   system)
VALUES ($1, $2, $3, $4, $5, $6::send_priority, $7, $8, $9, $10::jsonb, 0, 0, $11,
        $12::send_state, $13, $14, $15, $16, $17, $18, $19)
RETURNING id
"""

# A send that asked for a reply: each of its phones awaits one (reply_waits is how a reply is
# linked to it, hub.delivery.repository.LINK_REPLIES).
AWAIT_REPLIES = """
INSERT INTO reply_waits (tenant_id, phone, send_id, message_id)
SELECT tenant_id, phone, send_id, id FROM messages
WHERE send_id = $1 AND status <> 'opted_out'
  AND id >= hub_send_messages_from($1) AND id < hub_send_messages_to($1)
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

# Cancel a send that has not gone yet, if in one of the states $2: its sender's cancel
# (scheduled, held, review), a reviewer's rejection ($4 rejected_by, $5 the note) or an expired
# review, with the reason $3; returns its reservation when it could be cancelled.
CANCEL_SEND = """
UPDATE sends SET state = 'cancelled', cancelled_at = hub_now(), parked_at = NULL,
                 review_due_at = NULL, cancel_reason = $3, rejected_by = $4,
                 rejected_at = CASE WHEN $4::text IS NOT NULL THEN hub_now() END,
                 review_note = coalesce($5, review_note)
WHERE id = $1 AND state = ANY($2::send_state[])
RETURNING coalesce(reservation_id, 0) AS reservation_id
"""

# A send caught by a review rule: why, and whether it waits in `review` $3 hours for a decision
# (else it went at once, an urgent send reviewed after the fact: $4).
MARK_REVIEW = """
UPDATE sends SET review_reason = $2, review_after = $4,
                 state = CASE WHEN $4 THEN state ELSE 'review' END,
                 review_due_at = CASE WHEN NOT $4 THEN hub_now() + make_interval(hours => $3) END
WHERE id = $1
"""

# An approved send leaves review, as if sent now: its state and times recomputed; NULL when it
# had already left review (another decision, a cancel or the expiry won) or its review is
# overdue (the expiry cron closes it).
APPROVE = """
UPDATE sends SET state = $2::send_state, due_at = $3, held_until = $4,
                 approved_by = $5, approved_at = hub_now(), review_due_at = NULL,
                 review_note = nullif($6, '')
WHERE id = $1 AND state = 'review' AND review_due_at > hub_now()
RETURNING reservation_id
"""

# The messages of a send in review that are to go, with what a claim of their keys needs.
TO_GO = """
SELECT phone, carrier, segments, body FROM messages
WHERE send_id = $1 AND status = 'accepted'
  AND id >= hub_send_messages_from($1) AND id < hub_send_messages_to($1)
ORDER BY id
"""


class ToGo(msgspec.Struct, frozen=True):
    phone: str
    carrier: str
    segments: int
    body: str | None


# An urgent send that went at once, reviewed after the fact: approved ($3 NULL) or objected to
# (its sender told by the note; what went cannot be unsent). NULL when already decided.
DECIDE_AFTER = """
UPDATE sends SET approved_by = CASE WHEN $3 THEN $2 END,
                 approved_at = CASE WHEN $3 THEN hub_now() END,
                 rejected_by = CASE WHEN NOT $3 THEN $2 END,
                 rejected_at = CASE WHEN NOT $3 THEN hub_now() END,
                 review_note = nullif($4, '')
WHERE id = $1 AND review_after AND approved_at IS NULL AND rejected_at IS NULL
RETURNING id
"""

# Sends whose review expired: up to $1 of them, locked (the others are being decided).
REVIEWS_EXPIRED = """
SELECT id, tenant_id FROM sends
WHERE review_due_at <= hub_now() AND state = 'review'
ORDER BY review_due_at, id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

# A send's messages still waiting to go.
WAITING = """
SELECT id FROM messages
WHERE send_id = $1 AND status = 'accepted'
  AND id >= hub_send_messages_from($1) AND id < hub_send_messages_to($1)
"""

# Its messages that were to go are cancelled; their ids.
CANCEL_MESSAGES = """
UPDATE messages SET status = 'cancelled', updated_at = hub_now()
WHERE send_id = $1 AND status = 'accepted'
  AND id >= hub_send_messages_from($1) AND id < hub_send_messages_to($1)
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

# `$1` new message ids, ascending, 8 bytes each end to end (hub/messages/sql/months.sql): a
# million are 8 MB, not a million Python ints.
NEW_MESSAGE_IDS = "SELECT hub_message_ids($1)"

# A send's messages are written with COPY (see service.create_send) into these columns, and `id`
# (from NEW_MESSAGE_IDS).
MESSAGE_COLUMNS = ("send_id", "tenant_id", "phone", "carrier", "status", "segments", "body")

# The same for a few, by INSERT: each column's values as an array, in recipient order (the ids
# are given in that order, as COPY gives them).
INSERT_MESSAGES = """
INSERT INTO messages (send_id, tenant_id, phone, carrier, status, segments, body)
SELECT send_id, tenant_id, phone, carrier, status::message_status, segments, body
FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::smallint[],
            $7::text[]) WITH ORDINALITY AS r(send_id, tenant_id, phone, carrier, status, segments,
                                             body, n)
ORDER BY n
"""

# Mark a send's messages to these phones as duplicates of the copies that reach them: settled
# (done_at) when that copy was delivered already, else relying on it until its outcome is known.
MARK_DUPLICATES = """
UPDATE messages m SET status = 'deduplicated', duplicate_of = d.original,
                      duplicate_tenant_id = d.tenant_id,
                      done_at = CASE WHEN d.gone THEN hub_now() END, updated_at = hub_now()
FROM UNNEST($2::text[], $3::bigint[], $4::bigint[], $5::boolean[])
     AS d(phone, original, tenant_id, gone)
WHERE m.send_id = $1 AND m.phone = d.phone
  AND m.id >= hub_send_messages_from($1) AND m.id < hub_send_messages_to($1)
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
    priority: Priority
    dedup: bool
    encoding: str
    segments_each: int
    segments: int
    list_price_micros: int
    rejects: str
    created_at: datetime
    actor: str
    reply_wanted: bool
    follows: int | None
    follow_kind: FollowKind | None
    review_reason: str | None
    review_due_at: datetime | None
    review_after: bool
    approved_by: str | None
    approved_at: datetime | None
    rejected_by: str | None
    rejected_at: datetime | None
    review_note: str | None
    cancel_reason: str | None
    reservation_id: int | None


# A send, only if its tenant lies in the subtree whose path is $2. The hub's own sends (system:
# the second factor's codes) are no one's to read: not found, as for another subtree's.
SEND_IN_SUBTREE = """
SELECT s.id, s.state::text AS state, s.send_at, s.held_until, s.due_at, s.tenant_id,
       t.code AS tenant_code, t.path AS tenant_path, s.signature, s.body,
       s.priority::text AS priority, s.dedup, s.encoding, s.segments_each, s.segments,
       s.list_price_micros, s.rejects::text AS rejects, s.created_at, s.actor,
       s.reply_wanted, s.follows, s.follow_kind, s.review_reason, s.review_due_at,
       s.review_after, s.approved_by, s.approved_at, s.rejected_by, s.rejected_at,
       s.review_note, s.cancel_reason, s.reservation_id
FROM sends s JOIN tenants t ON t.id = s.tenant_id
WHERE s.id = $1 AND t.path >= $2 AND t.path < $2 || '~' AND NOT s.system
"""

# The follow-ups (reminders, resends) of the first send $1, oldest first.
FAMILY = "SELECT id FROM sends WHERE follows = $1 ORDER BY id"

# How many of a send's messages are in each status: counted from its messages, or, once
# retention kept its summary (and dropped them, hub.messages.retention), read from that.
STATUS_COUNTS = """
SELECT status::text AS status, count(*) AS n FROM messages
WHERE send_id = $1
  AND id >= hub_send_messages_from($1) AND id < hub_send_messages_to($1)
  AND NOT EXISTS (SELECT 1 FROM sends WHERE id = $1 AND summary IS NOT NULL)
GROUP BY status
UNION ALL
SELECT c.key AS status, c.value::bigint AS n
FROM sends s CROSS JOIN jsonb_each_text(s.summary -> 'statuses') c
WHERE s.id = $1
"""


# A page of a send's messages (as MessageView, with the name the sender's roster has for the
# phone) after the cursor $2, of status $4 (NULL: all),
# for a caller whose subtree is the path $5: the copy a message was deduplicated against is named
# only when its tenant is in that subtree; any other sender stays anonymous. `replied`: whether
# the phone replied to one of the sends $6 (the send's family; NULL: not asked, not shown), and
# $7 keeps only those that did (true) or did not (false); NULL keeps all. "Replied" is asked
# per message shown (an inbound_send probe): as an EXISTS, the planner may first read every
# reply of the send into a hash (90,000 for a send to a whole county's roster). "Send $1 after
# message $2" is a range of messages_send in its order (as contacts.repository.CONTACTS_PAGE):
# written `send_id = $1 AND id > $2 ORDER BY id`, the planner may walk the primary key from $2,
# and on a send's last page go on through every later message of the hub (380 ms).
MESSAGES_PAGE = """
SELECT m.id, m.phone, m.carrier, m.status::text AS status, m.segments,
       CASE WHEN v.inside THEN m.duplicate_of END AS duplicate_of,
       CASE WHEN v.inside THEN d.code END AS duplicate_tenant,
       CASE WHEN v.inside THEN 'subtree' WHEN NOT v.inside THEN 'another_sender' END
           AS duplicate_source,
       m.error, r.replied, m.updated_at, c.name
FROM messages m
LEFT JOIN contacts c ON c.tenant_id = m.tenant_id AND c.phone = m.phone
LEFT JOIN tenants d ON d.id = m.duplicate_tenant_id
LEFT JOIN LATERAL (SELECT d.path >= $5 AND d.path < $5 || '~' AS inside) v ON true
LEFT JOIN LATERAL (
    SELECT coalesce((
        SELECT true FROM inbound i
        WHERE i.send_id = ANY($6::bigint[]) AND i.phone = m.phone
        LIMIT 1
    ), false) AS replied
    WHERE $6::bigint[] IS NOT NULL
) r ON true
WHERE (m.send_id, m.id) > ($1, $2) AND m.send_id <= $1
  AND m.id >= hub_send_messages_from($1) AND m.id < hub_send_messages_to($1)
  AND ($4::message_status IS NULL OR m.status = $4)
  AND ($7::boolean IS NULL OR r.replied = $7)
ORDER BY m.send_id, m.id
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


# A tenant's own latest sends, newest first (not the hub's own: system).
RECENT_SENDS = """
SELECT s.id, s.body, s.state::text AS state, s.priority::text AS priority, s.recipients,
       s.segments, s.created_at
FROM sends s WHERE s.tenant_id = $1 AND NOT s.system
ORDER BY s.id DESC
LIMIT $2
"""


class SendStatusCount(msgspec.Struct, frozen=True):
    send_id: int
    status: str
    n: int


# Messages by status for the sends $1 (as GET /v1/messages/{id} counts them: from the
# messages, or from the summary retention kept).
SEND_STATUS_COUNTS = """
SELECT send_id, status::text AS status, count(*) AS n
FROM messages
WHERE send_id = ANY(ARRAY(SELECT id FROM sends WHERE id = ANY($1::bigint[]) AND summary IS NULL))
GROUP BY send_id, status
UNION ALL
SELECT s.id AS send_id, c.key AS status, c.value::bigint AS n
FROM sends s CROSS JOIN jsonb_each_text(s.summary -> 'statuses') c
WHERE s.id = ANY($1::bigint[])
"""


class ListedSend(msgspec.Struct, frozen=True):
    id: int
    tenant: str
    state: str
    priority: str
    body: str
    sender: str
    reply_wanted: bool
    follows: int | None
    follow_kind: FollowKind | None
    recipients: int
    segments: int
    created_at: datetime
    due_at: datetime
    replies: int
    review_due_at: datetime | None
    review_after: bool
    approved_by: str | None
    rejected_by: str | None
    review_note: str | None
    cancel_reason: str | None


# The sends of the tenant at path $1 (with $2, of its whole subtree), newest first, below the
# cursor $3, filtered: created (or, with $6, due) in [$4, $5); state $7; having a message in a
# status of $8; body containing $9 (a LIKE pattern, escaped by the caller); created by $10;
# asking for a reply or not ($11). $12 rows. Never the hub's own sends (system: codes).
# "Having a message in $8" is a probe per candidate send (LIMIT 1 on messages_send, reading
# each message's status off its row until one matches): as an EXISTS, the planner
# may instead read every such message of the hub into a hash first (650 ms over 3.5 million
# messages, ops/bench/console_pages.py). Run with fetch_planned.
SENDS_PAGE = """
SELECT s.id, t.code AS tenant, s.state::text AS state, s.priority::text AS priority, s.body,
       s.actor AS sender, s.reply_wanted, s.follows, s.follow_kind, s.recipients, s.segments,
       s.created_at, s.due_at,
       (SELECT count(*) FROM inbound i WHERE i.send_id = s.id) AS replies,
       s.review_due_at, s.review_after, s.approved_by, s.rejected_by, s.review_note,
       s.cancel_reason
FROM sends s JOIN tenants t ON t.id = s.tenant_id
WHERE (t.path = $1 OR ($2 AND t.path > $1 AND t.path < $1 || '~'))
  AND NOT s.system
  AND ($3::bigint IS NULL OR s.id < $3)
  AND ($4::timestamptz IS NULL OR CASE WHEN $6 THEN s.due_at ELSE s.created_at END >= $4)
  AND ($5::timestamptz IS NULL OR CASE WHEN $6 THEN s.due_at ELSE s.created_at END < $5)
  AND ($7::send_state IS NULL OR s.state = $7)
  AND (cardinality($8::message_status[]) = 0
       OR s.summary -> 'statuses' ?| $8::text[]
       OR (SELECT true FROM messages m WHERE m.send_id = s.id AND m.status = ANY($8) LIMIT 1))
  AND ($9::text IS NULL OR s.body LIKE $9 ESCAPE '\\')
  AND ($10::text IS NULL OR s.actor = $10)
  AND ($11::boolean IS NULL OR s.reply_wanted = $11)
ORDER BY s.id DESC
LIMIT $12
"""


class ReplyRow(msgspec.Struct, frozen=True):
    id: int
    send_id: int
    phone: str
    text: str
    opt_out: bool
    received_at: datetime


# Replies linked to any of the sends $1, after the reply $2, in id order; $3 rows. Each send's
# first $3 from the inbound_send_order index, then merged: read as one scan of the primary key
# filtered by send, a send whose 90,000 replies came after 240,000 others took 75 ms to find
# its first 200 (ops/bench/console_pages.py).
REPLIES_OF = """
SELECT r.id, r.send_id, r.phone, r.text, r.opt_out, r.received_at
FROM unnest($1::bigint[]) AS f(send_id)
CROSS JOIN LATERAL (
    SELECT i.id, i.send_id, i.phone, i.text, i.opt_out, i.received_at
    FROM inbound i
    WHERE i.send_id = f.send_id AND i.id > $2
    ORDER BY i.id
    LIMIT $3
) r
ORDER BY r.id
LIMIT $3
"""

# The phones of send $1 that have not replied to any of the sends $2 (its family): whom a
# reminder goes to. Opted-out and cancelled messages are left out (they were never to go), and
# so are erased ones (hub.people).
NOT_REPLIED = """
SELECT m.phone, m.body FROM messages m
WHERE m.send_id = $1 AND m.status NOT IN ('opted_out', 'cancelled') AND m.phone IS NOT NULL
  AND m.id >= hub_send_messages_from($1) AND m.id < hub_send_messages_to($1)
  AND NOT EXISTS (SELECT 1 FROM inbound i WHERE i.send_id = ANY($2::bigint[]) AND i.phone = m.phone)
ORDER BY m.id
"""

# The phones of send $1 whose message did not arrive: whom a resend goes to.
UNREACHED = """
SELECT m.phone, m.body FROM messages m
WHERE m.send_id = $1 AND m.status IN ('failed', 'undelivered', 'expired') AND m.phone IS NOT NULL
  AND m.id >= hub_send_messages_from($1) AND m.id < hub_send_messages_to($1)
ORDER BY m.id
"""


class ResultRow(msgspec.Struct, frozen=True):
    id: int
    phone: str | None  # null: erased (hub.people)
    carrier: str
    status: str
    error: str | None
    updated_at: datetime
    reply: str | None
    replied_at: datetime | None


# A send's messages after $2 for the results file, each with the latest reply its phone sent to
# one of the sends $3 (its family; NULL: replies not shown); $4 rows. The send's messages as a
# range of messages_send, as MESSAGES_PAGE reads them.
RESULTS = """
SELECT m.id, m.phone, m.carrier, m.status::text AS status, m.error, m.updated_at,
       r.text AS reply, r.received_at AS replied_at
FROM messages m
LEFT JOIN LATERAL (
    SELECT i.text, i.received_at FROM inbound i
    WHERE i.send_id = ANY($3::bigint[]) AND i.phone = m.phone
    ORDER BY i.id DESC LIMIT 1
) r ON true
WHERE (m.send_id, m.id) > ($1, $2) AND m.send_id <= $1
  AND m.id >= hub_send_messages_from($1) AND m.id < hub_send_messages_to($1)
ORDER BY m.send_id, m.id
LIMIT $4
"""


class ArchiveSendRow(msgspec.Struct, frozen=True):
    id: int
    tenant: str
    signature: str
    body: str
    priority: str
    state: str
    actor: str
    approved_by: str | None
    approved_at: datetime | None
    created_at: datetime
    due_at: datetime
    cancelled_at: datetime | None
    recipients: int
    reply_wanted: bool
    follows: int | None
    follow_kind: FollowKind | None


# The sends of the tenant at path $1 (with $2, of its whole subtree) due in [$3, $4): the month
# they went (or were to go) in, for the archive (hub.archive), in the order they were due. The
# body is the send's own (a personal send's keeps its placeholders, never a recipient's text).
# `approved_by`/`approved_at`: migration 0037 (review, issue 15 point 1, writes them).
ARCHIVE_SENDS = """
SELECT s.id, t.code AS tenant, s.signature, s.body, s.priority::text AS priority,
       s.state::text AS state, s.actor, s.approved_by, s.approved_at, s.created_at, s.due_at,
       s.cancelled_at, s.recipients, s.reply_wanted, s.follows, s.follow_kind
FROM sends s JOIN tenants t ON t.id = s.tenant_id
WHERE (t.path = $1 OR ($2 AND t.path > $1 AND t.path < $1 || '~'))
  AND s.due_at >= $3 AND s.due_at < $4 AND NOT s.system  -- a sign-in code is no notice
ORDER BY s.due_at, s.id
"""

# Per send of $1 and status: how many messages, the segments that went (of one that went in
# part, its parts), the first to go and the last to reach a final status; from the messages in
# the send's month, or, once retention kept its summary (hub.messages.retention.SUMMARIZE, the
# same figures) and dropped them, from that. No phone leaves this query.
ARCHIVE_COUNTS = """
SELECT m.send_id, m.status::text AS status, count(*) AS n,
       sum(coalesce(m.segments_sent, m.segments))::bigint AS segments,
       min(m.sent_at) AS first_sent, max(m.done_at) AS last_done
FROM sends s JOIN messages m ON m.send_id = s.id
     AND m.id >= s.message_ids_from AND m.id < s.message_ids_from + (1::bigint << 40)
WHERE s.id = ANY($1::bigint[]) AND s.summary IS NULL
GROUP BY m.send_id, m.status
UNION ALL
SELECT s.id, c.key, c.value::bigint, (s.summary -> 'segments' ->> c.key)::bigint,
       (s.summary ->> 'first_sent')::timestamptz, (s.summary ->> 'last_done')::timestamptz
FROM sends s CROSS JOIN jsonb_each_text(s.summary -> 'statuses') c
WHERE s.id = ANY($1::bigint[])
"""

# How many replies each of the sends $1 has.
REPLY_COUNTS = """
SELECT send_id, count(*) AS n FROM inbound WHERE send_id = ANY($1::bigint[]) GROUP BY send_id
"""

# The first $2 replies of each of the sends $1 (their texts and times, never their phones), in
# the order they came (inbound_send_order).
REPLY_TEXTS = """
SELECT f.send_id, r.text, r.opt_out, r.received_at
FROM unnest($1::bigint[]) AS f(send_id)
CROSS JOIN LATERAL (
    SELECT i.id, i.text, i.opt_out, i.received_at FROM inbound i
    WHERE i.send_id = f.send_id ORDER BY i.id LIMIT $2
) r
ORDER BY f.send_id, r.id
"""


# --- what operators watch (/metrics) -------------------------------------------------------

# The messages of the sends being delivered (queued: walked on sends_open), by status: what
# delivery has in hand, walked on messages_send (send_id, id) within each send's month. Done
# sends are not read, so the month's millions of finished messages cost nothing.
IN_FLIGHT_STATUSES = """
SELECT m.status::text AS status, count(*) AS n
FROM sends s
JOIN messages m ON m.send_id = s.id
  AND m.id >= s.message_ids_from AND m.id < s.message_ids_from + (1::bigint << 40)
WHERE s.state = 'queued'
GROUP BY m.status
"""

# Sends not finished, by state (each state on its partial index: sends_open, sends_review).
OPEN_SEND_STATES = """
SELECT state::text AS state, count(*) AS n FROM sends
WHERE state IN ('scheduled', 'held', 'queued', 'review')
GROUP BY state
"""
