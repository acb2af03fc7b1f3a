"""Changes to what authenticates a key are announced on the `hub_credentials` channel (issue 17,
point 5).

Each API process keeps the keys it has checked for a few seconds (tenants.auth.KeyCache,
HUB_HTTP__KEY_CACHE_SECONDS) and LISTENs here to drop them the moment they change: a key's
prefix when the key is revoked, deleted or its scopes, secret or tenant change (not when only
`last_used_at` moves); `*` (everything) when a tenant's status, code or path changes or a tenant
goes, since a suspension covers the whole subtree below it. NOTIFY is sent at commit.

Revision ID: 0044
Revises: 0043
Create Date: 2026-12-04
"""

from hub.db import run_script

revision = "0044"
down_revision = "0043"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE FUNCTION hub_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('hub_credentials', OLD.prefix);
        IF TG_OP = 'UPDATE' AND NEW.prefix <> OLD.prefix THEN
            PERFORM pg_notify('hub_credentials', NEW.prefix);
        END IF;
        RETURN NULL;
    END $$;

    CREATE TRIGGER api_keys_changed AFTER UPDATE ON api_keys FOR EACH ROW
        WHEN ((OLD.prefix, OLD.secret_sha256, OLD.tenant_id, OLD.scopes, OLD.revoked_at)
              IS DISTINCT FROM
              (NEW.prefix, NEW.secret_sha256, NEW.tenant_id, NEW.scopes, NEW.revoked_at))
        EXECUTE FUNCTION hub_key_changed();
    CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys FOR EACH ROW
        EXECUTE FUNCTION hub_key_changed();

    CREATE FUNCTION hub_tenants_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('hub_credentials', '*');
        RETURN NULL;
    END $$;

    CREATE TRIGGER tenants_credentials_changed
        AFTER UPDATE OF status, code, path, parent_id OR DELETE ON tenants
        FOR EACH STATEMENT EXECUTE FUNCTION hub_tenants_changed();
    """)


def downgrade() -> None:
    run_script("""
    DROP TRIGGER tenants_credentials_changed ON tenants;
    DROP FUNCTION hub_tenants_changed();
    DROP TRIGGER api_keys_deleted ON api_keys;
    DROP TRIGGER api_keys_changed ON api_keys;
    DROP FUNCTION hub_key_changed();
    """)
