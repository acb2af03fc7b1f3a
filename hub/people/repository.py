"""SQL of a person's data: the operator's lookup of a phone across every tenant, and its
erasure. The erasure is the one place that writes rows of many domains by phone (as the
retention run is for age): each statement takes one batch ($2 rows) and the service commits
each batch on its own, so no lock is held long."""

from __future__ import annotations

from datetime import datetime

import msgspec

# --- the lookup ---------------------------------------------------------------------------


class MessageRow(msgspec.Struct, frozen=True):
    id: int
    tenant: str
    send_id: int
    created_at: datetime
    status: str
    signature: str
    # The message's own text (a personal send's) or its send's; a system send's placeholder.
    body: str
    sender: str
    system: bool


# Messages to the phone $1 after the message $2, oldest first; $3 rows (messages_phone). A
# system send (a second-factor code) shows its stored placeholder, never the message's own body.
MESSAGES_TO = """
SELECT m.id, t.code AS tenant, m.send_id, m.created_at, m.status::text AS status, s.signature,
       CASE WHEN s.system THEN s.body ELSE coalesce(m.body, s.body) END AS body,
       s.actor AS sender, s.system
FROM messages m
JOIN sends s ON s.id = m.send_id
JOIN tenants t ON t.id = m.tenant_id
WHERE m.phone = $1 AND m.id > $2
ORDER BY m.id
LIMIT $3
"""


class ContactRow(msgspec.Struct, frozen=True):
    tenant: str
    id: int
    name: str


# The rosters holding the phone $1; $2 rows at most.
CONTACTS_OF = """
SELECT t.code AS tenant, c.id, c.name
FROM contacts c JOIN tenants t ON t.id = c.tenant_id
WHERE c.phone = $1
ORDER BY c.id
LIMIT $2
"""


class OptOutRow(msgspec.Struct, frozen=True):
    tenant: str
    created_at: datetime


# The tenants the phone $1 opted out of; $2 rows at most.
OPT_OUTS_OF = """
SELECT t.code AS tenant, o.created_at
FROM opt_outs o JOIN tenants t ON t.id = o.tenant_id
WHERE o.phone = $1
ORDER BY o.created_at, t.code
LIMIT $2
"""


class ReplyRow(msgspec.Struct, frozen=True):
    tenant: str
    id: int
    send_id: int | None
    received_at: datetime
    text: str
    opt_out: bool


# The replies from the phone $1, oldest first; $2 rows at most.
REPLIES_FROM = """
SELECT t.code AS tenant, i.id, i.send_id, i.received_at, i.text, i.opt_out
FROM inbound i JOIN tenants t ON t.id = i.tenant_id
WHERE i.phone = $1
ORDER BY i.id
LIMIT $2
"""

# --- erased phones ------------------------------------------------------------------------

# Whether any phone was ever erased (if not, nothing needs hashing).
ANY_ERASED = "SELECT EXISTS (SELECT 1 FROM erased_phones)"

# Which of the hashes $1 are erased phones.
ERASED_AMONG = "SELECT hash FROM erased_phones WHERE hash = ANY($1::bytea[])"

# Keep the phone's hash $1 with the reason $2 (an erasure again keeps the first time).
KEEP_ERASED = """
INSERT INTO erased_phones (hash, reason) VALUES ($1, $2)
ON CONFLICT (hash) DO UPDATE SET reason = EXCLUDED.reason
"""

# --- the erasure, a batch of $2 at a time for the phone $1 ----------------------------------

# Contacts holding the phone (their tags and free fields are columns of the row; the tag
# counts follow by the table's triggers). Returns their ids.
DELETE_CONTACTS = """
DELETE FROM contacts WHERE id IN (SELECT id FROM contacts WHERE phone = $1 ORDER BY id LIMIT $2)
RETURNING id
"""

# Which contact was greeted on its anniversary: no FK, so by the deleted contacts' ids.
DELETE_CAMPAIGN_DELIVERIES = """
DELETE FROM campaign_deliveries WHERE contact_id = ANY($1::bigint[])
"""


class ErasedMessage(msgspec.Struct, frozen=True):
    id: int
    send_id: int
    segments: int
    gateway: str | None
    reference: str | None
    # It was still waiting to go (now cancelled), or a copy relying on another message to the
    # phone (now done): its segments to release.
    waiting: bool


# A gateway's reference that holds the phone's digits ($N: the national number of a +86
# phone) as a number of its own: Alibaba's is `BizId:13800138000` (hub.delivery.gateways.aliyun).
_NUMBER_IN = "{} ~ ('(^|[^0-9])' || {} || '([^0-9]|$)')"

# Messages to the phone lose it and their own body (and the gateway's words, which may quote
# it); one still waiting to go is cancelled (delivery claims only `accepted` messages with a
# phone), and a copy relying on another message to the phone (deduplicated, not done: every
# such original is to this phone too) is done, so nothing hands the phone to it. A reference
# holding the phone ($3, its digits) becomes `erased:<message id>`, here and in
# message_references: a receipt for it matches nothing. The send, status, times and segments
# stay: statements and the archive outlive them. Returns the reference as it was.
ERASE_MESSAGES = f"""
WITH picked AS (
    SELECT id, status = 'accepted' AS waiting,
           relies_on IS NOT NULL AS relying, reference AS held,
           coalesce({_NUMBER_IN.format("reference", "$3")}, false) AS quoting
    FROM messages
    WHERE phone = $1 ORDER BY id LIMIT $2
    FOR UPDATE
), unquoted AS (
    UPDATE message_references h SET reference = 'erased:' || h.message_id
    FROM picked p
    WHERE h.message_id = p.id AND p.quoting
)
UPDATE messages m
SET phone = NULL, body = NULL, error = NULL,
    reference = CASE WHEN p.quoting THEN 'erased:' || m.id ELSE m.reference END,
    status = CASE WHEN p.waiting THEN 'cancelled'::message_status ELSE m.status END,
    done_at = CASE WHEN p.waiting OR p.relying THEN hub_now() ELSE m.done_at END,
    updated_at = hub_now()
FROM picked p
WHERE m.id = p.id
RETURNING m.id, m.send_id, m.segments, m.gateway, p.held AS reference,
          p.waiting OR p.relying AS waiting
"""

# Receipts not matched to a message whose reference ends in the phone ($1, its digits), as
# Alibaba's does: one that came before its message's `sent` was recorded, or for a message
# erased before. (Other tenants' receipts are kept: only that shape, not any number in it.)
DELETE_UNMATCHED_QUOTING = """
DELETE FROM unmatched_receipts WHERE (gateway, reference) IN (
    SELECT gateway, reference FROM unmatched_receipts
    WHERE reference LIKE '%:' || $1 LIMIT $2)
"""


class SendReservation(msgspec.Struct, frozen=True):
    id: int
    reservation_id: int | None


SEND_RESERVATIONS = "SELECT id, reservation_id FROM sends WHERE id = ANY($1::bigint[])"

# What else keys on the erased messages: their content keys (BLAKE2b of phone and body), the
# reply waits, the outbox's copies and receipts that found no message yet.
DELETE_DEDUP_KEYS = "DELETE FROM dedup_keys WHERE message_id = ANY($1::bigint[])"
DELETE_REPLY_WAITS_OF = "DELETE FROM reply_waits WHERE message_id = ANY($1::bigint[])"
DELETE_UNMATCHED = """
DELETE FROM unmatched_receipts u
USING UNNEST($1::text[], $2::text[]) AS r(gateway, reference)
WHERE u.gateway = r.gateway AND u.reference = r.reference
"""

DELETE_OUTBOX = """
DELETE FROM outbox
WHERE message_id IN (SELECT message_id FROM outbox WHERE phone = $1 LIMIT $2)
"""

DELETE_REPLY_WAITS = """
DELETE FROM reply_waits
WHERE (tenant_id, phone, send_id) IN (
    SELECT tenant_id, phone, send_id FROM reply_waits WHERE phone = $1 LIMIT $2)
"""

# Replies from the phone go whole (the text is the member's own words), with the webhook
# pushes of them (pending ones would send the phone on; delivered ones keep the receiver's
# answer, which may echo it).
PICK_REPLIES = "SELECT id FROM inbound WHERE phone = $1 ORDER BY id LIMIT $2"
DELETE_WEBHOOK_DELIVERIES = "DELETE FROM webhook_deliveries WHERE inbound_id = ANY($1::bigint[])"
DELETE_REPLIES = "DELETE FROM inbound WHERE id = ANY($1::bigint[])"

DELETE_OPT_OUTS = """
DELETE FROM opt_outs WHERE (tenant_id, phone) IN (
    SELECT tenant_id, phone FROM opt_outs WHERE phone = $1 LIMIT $2)
"""

DELETE_RESUBSCRIPTIONS = """
DELETE FROM resubscriptions
WHERE id IN (SELECT id FROM resubscriptions WHERE phone = $1 LIMIT $2)
"""

# The second factor's codes sent to the phone (their rate-limit rows).
DELETE_USER_CODES = """
DELETE FROM user_codes WHERE id IN (SELECT id FROM user_codes WHERE phone = $1 LIMIT $2)
"""

# Text that holds the phone, as submitted or as stored: its digits ($1, the national number
# of a +86 phone, else the digits after +) appear in it once the separators a phone is written
# with (spaces, dashes, dots, brackets) are dropped. Full-width digits are not matched.
_HOLDS = "strpos(regexp_replace({}, '[[:space:]().-]', '', 'g'), $1) > 0"

# The highest send id, for walking `sends` in id ranges.
LAST_SEND = "SELECT coalesce(max(id), 0) FROM sends"

# A refused recipient of a send is kept as submitted (`rejects`, [{to, reason}]): entries
# holding the phone go, in the sends with ids in ($2, $3]. Returns how many entries went.
ERASE_REJECTS = f"""
WITH changed AS (
    UPDATE sends s
    SET rejects = (SELECT coalesce(jsonb_agg(e ORDER BY n), '[]'::jsonb)
                   FROM jsonb_array_elements(s.rejects) WITH ORDINALITY AS r(e, n)
                   WHERE NOT {_HOLDS.format("(e ->> 'to')")})
    WHERE s.id > $2 AND s.id <= $3 AND s.rejects <> '[]'::jsonb
      AND EXISTS (SELECT 1 FROM jsonb_array_elements(s.rejects) e
                  WHERE {_HOLDS.format("(e ->> 'to')")})
    RETURNING jsonb_array_length(s.rejects) AS kept,
              (SELECT jsonb_array_length(o.rejects) FROM sends o WHERE o.id = s.id) AS had
)
SELECT coalesce(sum(had - kept), 0)::bigint FROM changed
"""

# Stored answers to creating POSTs whose rejected list quotes the phone: they go (a repeat of
# that request is then answered afresh). The table holds a day or so of answers.
DELETE_IDEMPOTENCY = f"""
DELETE FROM idempotency_keys WHERE (tenant_id, key) IN (
    SELECT tenant_id, key FROM idempotency_keys
    WHERE {_HOLDS.format("convert_from(response, 'UTF8')")}
    LIMIT $2)
"""

# The highest entry of the operation log, for walking it in id ranges.
LAST_OPERATION = "SELECT coalesce(max(id), 0) FROM operation_log"

# Entries with ids in ($2, $3] whose object, before, after or detail holds the phone: each
# such part is replaced by {"erased": true} (an object by `erased`) and `redacted_at` set.
# Only in a transaction that `SET LOCAL hub.redacting = 'on'` (the log's trigger, migration
# 0040). Returns how many entries changed.
REDACT_OPERATIONS = f"""
WITH changed AS (
    UPDATE operation_log o
    SET object = CASE WHEN {_HOLDS.format("coalesce(o.object, '')")} THEN 'erased'
                      ELSE o.object END,
        before = CASE WHEN {_HOLDS.format("coalesce(o.before::text, '')")}
                      THEN '{{"erased": true}}'::jsonb ELSE o.before END,
        after = CASE WHEN {_HOLDS.format("coalesce(o.after::text, '')")}
                     THEN '{{"erased": true}}'::jsonb ELSE o.after END,
        detail = CASE WHEN {_HOLDS.format("coalesce(o.detail::text, '')")}
                      THEN '{{"erased": true}}'::jsonb ELSE o.detail END,
        redacted_at = hub_now()
    WHERE o.id > $2 AND o.id <= $3
      AND {_HOLDS.format("concat_ws(' ', o.object, o.before::text, o.after::text, o.detail::text)")}
    RETURNING 1
)
SELECT count(*) FROM changed
"""

START_REDACTING = "SET LOCAL hub.redacting = 'on'"
