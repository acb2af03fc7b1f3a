"""A person's data (issue 15, point 5): the operator's lookup and erasure of a phone, and the
second factor's codes kept out of the send history.

- `messages.phone` may be NULL: an erased phone's messages keep their send, status, times and
  segments (the archive and billing outlive them), never the phone or the filled-in body.
- Indexes by phone on the tables the lookup and the erasure search (`messages` has only
  `(send_id, id)` and `(gateway, reference)`; the rosters, opt-outs and reply waits are keyed by
  tenant first). `messages_phone` is `(phone, id)`: the lookup pages by message id. On a
  partitioned `messages` an index on the parent is created on each partition. Building it
  holds writes to `messages` back meanwhile. On a hub with many millions of messages, build it
  first by hand without that lock (PostgreSQL refuses CONCURRENTLY on a partitioned parent):
  `CREATE INDEX messages_phone ON ONLY messages (phone, id)`, then for each partition
  `CREATE INDEX CONCURRENTLY messages_<partition>_phone ON <partition> (phone, id)` and
  `ALTER INDEX messages_phone ATTACH PARTITION messages_<partition>_phone`; this then skips it.
- `erased_phones`: an erased phone as HMAC-SHA256 under the operator's HUB_PEOPLE__SECRET, so
  no tenant messages it again (the send path counts it `opted_out`) and no roster takes it back.
- `sends.system`: the hub's own sends (the second factor's codes): no list, page or export shows
  them; their stored body is a placeholder, the code travels in the message's own body only
  until delivery (hub.users.service.send_code, hub.delivery.service).
- `operation_log.redacted_at` and one narrow exception to the log's append-only trigger: an
  UPDATE in a transaction that set `hub.redacting = 'on'` (only hub.people's erasure does) may
  change `object`, `before`, `after`, `detail` and must set `redacted_at`; who, when, from where
  and what action stay as they were. DELETE and TRUNCATE stay refused.

Revision ID: 0040
Revises: 0035
Create Date: 2026-12-17
"""

from hub.db import run_script

revision = "0040"
down_revision = "0039"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    ALTER TABLE messages ALTER COLUMN phone DROP NOT NULL;
    CREATE INDEX IF NOT EXISTS messages_phone ON messages (phone, id);
    CREATE INDEX IF NOT EXISTS contacts_phone ON contacts (phone);
    CREATE INDEX IF NOT EXISTS inbound_phone ON inbound (phone);
    CREATE INDEX IF NOT EXISTS outbox_phone ON outbox (phone);
    CREATE INDEX IF NOT EXISTS opt_outs_phone ON opt_outs (phone);
    CREATE INDEX IF NOT EXISTS resubscriptions_phone ON resubscriptions (phone);
    CREATE INDEX IF NOT EXISTS reply_waits_phone ON reply_waits (phone);

    ALTER TABLE sends ADD COLUMN IF NOT EXISTS system boolean NOT NULL DEFAULT false;

    CREATE TABLE erased_phones (
        hash      bytea PRIMARY KEY CHECK (length(hash) = 32),
        erased_at timestamptz NOT NULL DEFAULT hub_now(),
        reason    text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500)
    );

    ALTER TABLE operation_log ADD COLUMN IF NOT EXISTS redacted_at timestamptz;

    CREATE OR REPLACE FUNCTION operation_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND current_setting('hub.redacting', true) = 'on'
           AND NEW.redacted_at IS NOT NULL
           AND NEW.id = OLD.id AND NEW.at = OLD.at AND NEW.tenant_id = OLD.tenant_id
           AND NEW.actor = OLD.actor
           AND NEW.actor_tenant_id IS NOT DISTINCT FROM OLD.actor_tenant_id
           AND NEW.address IS NOT DISTINCT FROM OLD.address AND NEW.action = OLD.action THEN
            RETURN NEW;  -- an erasure's redaction (hub.people.service.erase), nothing else
        END IF;
        RAISE EXCEPTION 'operation_log is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$;
    """)


def downgrade() -> None:
    # `messages.phone` stays nullable: erased rows have no phone to put back.
    run_script("""
    CREATE OR REPLACE FUNCTION operation_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'operation_log is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$;
    ALTER TABLE operation_log DROP COLUMN IF EXISTS redacted_at;
    DROP TABLE erased_phones;
    ALTER TABLE sends DROP COLUMN IF EXISTS system;
    DROP INDEX IF EXISTS reply_waits_phone;
    DROP INDEX IF EXISTS resubscriptions_phone;
    DROP INDEX IF EXISTS opt_outs_phone;
    DROP INDEX IF EXISTS outbox_phone;
    DROP INDEX IF EXISTS inbound_phone;
    DROP INDEX IF EXISTS contacts_phone;
    DROP INDEX IF EXISTS messages_phone;
    """)
