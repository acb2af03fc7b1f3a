"""Signatures are proposed and approved by a tenant above; urgent sends need their own scope.

`tenants.signature` becomes the approved signature, NULL until one is. At this migration only
what the operator set stays approved: the root's, and an imported division's own organization
department (as tenants.divisions.org_department names it: 锦江区 → 锦江区委组织部). Any other
signature — a unit's, or one a tenant chose for itself under the old rules, which could be
【国务院】 — becomes a pending proposal, answerable to whoever could have set it (the tenant or
its parent), so a tenant above that parent (or the operator) must approve it before the tenant
sends again. What is proposed from now on waits in `signatures` for review.

The new scope `messages:urgent` goes to the operator's keys that can send (so the operator can
grant it down, a key granting only what it holds); no other key has it until it is granted.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from hub.db import run_script

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    ALTER TABLE tenants ALTER COLUMN signature DROP NOT NULL;
    COMMENT ON COLUMN tenants.signature IS
        'The approved signature, without brackets; sends use it. NULL until one is approved.';

    CREATE TYPE signature_status AS ENUM ('pending', 'approved', 'rejected', 'withdrawn');

    CREATE TABLE signatures (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id   bigint NOT NULL REFERENCES tenants (id),
        text        text NOT NULL
                    CHECK (length(text) BETWEEN 2 AND 30 AND text !~ '[【】[:cntrl:]]'),
        status      signature_status NOT NULL DEFAULT 'pending',
        -- The tenant whose key proposed it, and the highest tenant that could have (the
        -- key's creators included): only a tenant strictly above `answerable_id` approves.
        proposed_by   bigint NOT NULL REFERENCES tenants (id),
        answerable_id bigint NOT NULL REFERENCES tenants (id),
        actor       text NOT NULL,
        reviewed_by bigint REFERENCES tenants (id),
        reviewed_at timestamptz,
        review_note text,
        created_at  timestamptz NOT NULL DEFAULT hub_now(),
        CHECK ((status IN ('approved', 'rejected')) = (reviewed_at IS NOT NULL))
    );
    -- At most one proposal waits per tenant.
    CREATE UNIQUE INDEX signatures_one_pending ON signatures (tenant_id) WHERE status = 'pending';
    CREATE INDEX signatures_tenant ON signatures (tenant_id, id);

    -- Signatures the operator did not set wait for review (the rule of org_department).
    CREATE TEMP TABLE unreviewed ON COMMIT DROP AS
    SELECT t.id, t.signature, t.parent_id FROM tenants t
    WHERE t.parent_id IS NOT NULL AND (
        t.level = 'unit' OR t.signature IS DISTINCT FROM CASE
            WHEN t.name LIKE '%自治区' THEN t.name || '党委组织部'
            WHEN t.name LIKE '%地区' THEN left(t.name, -2) || '地委组织部'
            ELSE t.name || '委组织部' END);
    INSERT INTO signatures (tenant_id, text, proposed_by, answerable_id, actor)
    SELECT id, signature, id, parent_id, 'migration:0017' FROM unreviewed
    WHERE length(signature) BETWEEN 2 AND 30 AND signature !~ '[【】[:cntrl:]]';
    UPDATE tenants SET signature = NULL WHERE id IN (SELECT id FROM unreviewed);

    UPDATE api_keys k SET scopes = k.scopes || '{messages:urgent}'::text[]
    FROM tenants t
    WHERE t.id = k.tenant_id AND t.parent_id IS NULL
      AND 'messages:write' = ANY (k.scopes) AND NOT 'messages:urgent' = ANY (k.scopes);
    """)


def downgrade() -> None:
    run_script("""
    UPDATE api_keys SET scopes = array_remove(scopes, 'messages:urgent')
    WHERE 'messages:urgent' = ANY (scopes);

    -- The old schema has a signature for every tenant: those still without an approved one
    -- get their latest proposal (every such tenant has one: its creation proposed it).
    UPDATE tenants t SET signature = (
        SELECT s.text FROM signatures s WHERE s.tenant_id = t.id ORDER BY s.id DESC LIMIT 1
    )
    WHERE t.signature IS NULL;
    DROP TABLE signatures;
    DROP TYPE signature_status;
    COMMENT ON COLUMN tenants.signature IS NULL;
    ALTER TABLE tenants ALTER COLUMN signature SET NOT NULL;
    """)
