"""Follow-up: a send may ask for a reply; replies are linked to the send they answer; reminders
and resends are new sends that follow the first.

- `sends.reply_wanted`: the sender asked for a reply (回复1确认参会).
- `reply_waits`: one row per message of a send that asked for a reply (its phone and tenant),
  written with the send. Linking a reply is a lookup by (tenant, phone), newest send first,
  without an index on the whole `messages` table (which COPY would pay for on every send).
- `inbound.send_id`: the send a reply was linked to when it was stored (NULL: none).
- `sends.follows`, `sends.follow_kind`: a reminder ('remind') or a resend to the failed
  ('resend') names the first send of its family (never a follow-up itself).

Revision ID: 0030
Revises: 0025
Create Date: 2026-12-10
"""

from hub.db import run_script

revision = "0030"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    ALTER TABLE sends
        ADD COLUMN reply_wanted boolean NOT NULL DEFAULT false,
        ADD COLUMN follows      bigint REFERENCES sends (id),
        ADD COLUMN follow_kind  text CHECK (follow_kind IN ('remind', 'resend')),
        ADD CONSTRAINT sends_follow_named CHECK ((follows IS NULL) = (follow_kind IS NULL));
    -- hub.messages.repository.FAMILY: the follow-ups of a send.
    CREATE INDEX sends_follows ON sends (follows) WHERE follows IS NOT NULL;

    -- hub.delivery.repository.LINK_REPLIES: the newest asking send of (tenant, phone).
    CREATE TABLE reply_waits (
        tenant_id  bigint NOT NULL,
        phone      text NOT NULL,
        send_id    bigint NOT NULL,
        message_id bigint NOT NULL,
        PRIMARY KEY (tenant_id, phone, send_id)
    );

    ALTER TABLE inbound ADD COLUMN send_id bigint REFERENCES sends (id);
    -- Replies of a send, and "has this phone replied to it".
    CREATE INDEX inbound_send ON inbound (send_id, phone) WHERE send_id IS NOT NULL;
    """)


def downgrade() -> None:
    run_script("""
    DROP INDEX inbound_send;
    ALTER TABLE inbound DROP COLUMN send_id;
    DROP TABLE reply_waits;
    DROP INDEX sends_follows;
    ALTER TABLE sends
        DROP CONSTRAINT sends_follow_named,
        DROP COLUMN follow_kind,
        DROP COLUMN follows,
        DROP COLUMN reply_wanted;
    """)
