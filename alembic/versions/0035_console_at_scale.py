"""The console at a county's scale (issue 14: every page ≤ 300 ms with 100,000 contacts and a
year of 2,000 sends; ops/bench/console_pages.py, docs/BENCHMARKS.md).

`contact_tags`: how many of each tenant's contacts carry each tag, kept by statement triggers
on `contacts` (hub/contacts/sql/tag_counts.sql). The compose page shows every tag with the
phones it reaches in the tenant's own roster and in its subtree: counted from the rows, that
was two passes over a 100,000-contact roster with a sort per tag (1.4 s); now the own counts
are read, and the subtree's are their sum less the phones several of its rosters share
(hub.contacts.repository.SUBTREE_TAG_COUNTS). Filled from the rosters here, under a lock that
holds roster writes back meanwhile.

`messages_send` carries each message's status: the sends list counts its 50 sends' messages
by status and asks "has a failed (or deduplicated) message", and both become index-only scans
(115 ms for the 290,000 messages of a page of large sends, instead of 165 ms through the heap;
the probes of "having failed" touch no heap page). No update gets dearer: `status` is already
in `messages_relying`'s predicate, so every change of it already writes every index.

`inbound_send_order`: a send's replies in the order they came, the send page's list of them
(hub.messages.repository.REPLIES_OF).

On a hub with many millions of messages this rebuilds the index under a write lock on
`messages`: run it in a quiet hour, or build `messages_send_status` first by hand with
CREATE INDEX CONCURRENTLY (this migration then only swaps the names).

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-16
"""

from hub.db import run_script, sql_file

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    -- No CHECK (contacts >= 0): the triggers' upsert proposes a negative count for a decrement
    -- and PostgreSQL checks the proposed row before it finds the conflict.
    CREATE TABLE contact_tags (
        tenant_id bigint NOT NULL REFERENCES tenants (id),
        tag       text NOT NULL,
        contacts  bigint NOT NULL,
        PRIMARY KEY (tenant_id, tag)
    );
    """)
    run_script(sql_file("hub/contacts/sql/tag_counts.sql"))
    run_script("""
    LOCK TABLE contacts IN SHARE MODE;
    CREATE TRIGGER contacts_tags_insert AFTER INSERT ON contacts
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION contact_tags_follow();
    CREATE TRIGGER contacts_tags_update AFTER UPDATE ON contacts
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION contact_tags_follow();
    CREATE TRIGGER contacts_tags_delete AFTER DELETE ON contacts
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION contact_tags_follow();
    INSERT INTO contact_tags (tenant_id, tag, contacts)
    SELECT c.tenant_id, x.tag, count(*)
    FROM contacts c CROSS JOIN LATERAL (SELECT DISTINCT unnest(c.tags)) AS x(tag)
    GROUP BY 1, 2;

    CREATE INDEX inbound_send_order ON inbound (send_id, id) WHERE send_id IS NOT NULL;

    CREATE INDEX IF NOT EXISTS messages_send_status ON messages (send_id, id) INCLUDE (status);
    DROP INDEX messages_send;
    ALTER INDEX messages_send_status RENAME TO messages_send;
    """)


def downgrade() -> None:
    run_script("""
    DROP TRIGGER contacts_tags_insert ON contacts;
    DROP TRIGGER contacts_tags_update ON contacts;
    DROP TRIGGER contacts_tags_delete ON contacts;
    DROP FUNCTION contact_tags_follow();
    DROP TABLE contact_tags;
    DROP INDEX inbound_send_order;

    CREATE INDEX messages_send_plain ON messages (send_id, id);
    DROP INDEX messages_send;
    ALTER INDEX messages_send_plain RENAME TO messages_send;
    """)
