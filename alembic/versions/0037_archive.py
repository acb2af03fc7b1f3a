"""The archive (档案记实, issue 15 point 2): a closed month's files, stored once.

`archive_files`: the bytes of a tenant's monthly archive (the printable page, the XLSX) as
first rendered after its month's billing period closed, with their SHA-256; every later fetch
answers these bytes, so a closed month's archive never changes (hub/archive/service.py). One
row per tenant, month, kind and subtree flag (a department's archive of its own notices, or of
its whole subtree's).

`sends.approved_by`, `sends.approved_at`: who approved a send under review and when (point 1
adds and writes them; the archive reads them). `IF NOT EXISTS`: whichever of the two
migrations lands first adds them.

Revision ID: 0037
Revises: 0035
Create Date: 2026-12-03
"""

from hub.db import run_script

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    ALTER TABLE sends ADD COLUMN IF NOT EXISTS approved_by text,
                      ADD COLUMN IF NOT EXISTS approved_at timestamptz;

    CREATE TABLE archive_files (
        tenant_id  bigint NOT NULL REFERENCES tenants (id),
        month      date NOT NULL CHECK (extract(day FROM month) = 1),
        kind       text NOT NULL CHECK (kind IN ('html', 'xlsx')),
        subtree    boolean NOT NULL,
        bytes      bytea NOT NULL,
        sha256     text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
        created_at timestamptz NOT NULL DEFAULT hub_now(),
        PRIMARY KEY (tenant_id, month, kind, subtree)
    );
    -- Stored once, never changed: the archive of a closed month is a record.
    CREATE FUNCTION archive_files_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'archive_files rows are never changed or removed';
    END $$;
    CREATE TRIGGER archive_files_frozen BEFORE UPDATE OR DELETE ON archive_files
        FOR EACH ROW EXECUTE FUNCTION archive_files_frozen();
    """)


def downgrade() -> None:
    # sends.approved_by/approved_at stay: point 1's migration owns them too.
    run_script("""
    DROP TABLE archive_files;
    DROP FUNCTION archive_files_frozen();
    """)
