"""Tenants (the administrative tree) and their API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from hub.db import run_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE TYPE tenant_level AS ENUM ('hub', 'province', 'prefecture', 'county', 'unit');

    -- Fixed-width 6-digit extensions: no extension is a prefix of another, so a reply to
    -- <service number><extension><anything> routes unambiguously.
    CREATE SEQUENCE tenant_sms_extension_seq MINVALUE 100000 MAXVALUE 999999 START 100000;

    CREATE TABLE tenants (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        code          text NOT NULL UNIQUE CHECK (code ~ '^[0-9]{6,12}$'),
        name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
        level         tenant_level NOT NULL,
        parent_id     bigint REFERENCES tenants (id),
        -- Materialized path of codes, root first, each followed by '/': '000000/510000/510100/'.
        -- Byte order (C collation) makes a subtree one range scan: path >= p AND path < p || '~'.
        path          text COLLATE "C" NOT NULL UNIQUE,
        depth         smallint NOT NULL CHECK (depth >= 0),
        status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
        signature     text NOT NULL CHECK (length(signature) BETWEEN 2 AND 30),
        sms_extension text NOT NULL UNIQUE
                      DEFAULT nextval('tenant_sms_extension_seq')::text,
        created_at    timestamptz NOT NULL DEFAULT now(),
        CHECK ((parent_id IS NULL) = (level = 'hub')),
        CHECK ((parent_id IS NULL) = (depth = 0))
    );
    -- Exactly one root: the hub operator.
    CREATE UNIQUE INDEX tenants_single_root ON tenants ((true)) WHERE parent_id IS NULL;
    CREATE INDEX tenants_parent ON tenants (parent_id, code);

    CREATE TABLE api_keys (
        id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        prefix         text NOT NULL UNIQUE CHECK (prefix ~ '^[0-9a-f]{12}$'),
        -- SHA-256 of the secret part only; the secret itself is never stored.
        secret_sha256  bytea NOT NULL CHECK (length(secret_sha256) = 32),
        tenant_id      bigint NOT NULL REFERENCES tenants (id),
        name           text NOT NULL DEFAULT '' CHECK (length(name) <= 100),
        scopes         text[] NOT NULL,
        created_by_key bigint REFERENCES api_keys (id),
        created_at     timestamptz NOT NULL DEFAULT now(),
        last_used_at   timestamptz,
        revoked_at     timestamptz
    );
    CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);
    """)


def downgrade() -> None:
    run_script("""
    DROP TABLE api_keys;
    DROP TABLE tenants;
    DROP SEQUENCE tenant_sms_extension_seq;
    DROP TYPE tenant_level;
    """)
