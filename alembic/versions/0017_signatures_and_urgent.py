"""Signatures are proposed and approved by a tenant above; urgent sends need their own scope.

`tenants.signature` becomes the approved signature, NULL until one is. Every tenant's signature
at this migration stays as it is, approved: it was set by the operator (import, root) or by the
tenant under the old rules, and sends already go out under it; taking it away would stop every
tenant's sending at once. What is proposed from now on waits in `signatures` for review.

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
