"""The operation log (操作日志): every change and every send, by whom, when, from where.

Append-only in the database itself: a trigger refuses UPDATE and DELETE of any row and TRUNCATE
of the table, whoever asks (the app's own user included); only `hub.oplog.service.record`
writes it. `at` is the hub's clock (hub_now()), `tenant_id` the tenant whose data changed,
`actor` who did it (`user:<login>`, `key:<prefix>`, `cli:<user>`, `system:<what>`), `address`
the client's address as the server saw it (a trusted proxy's forwarded address only when
HUB_HTTP__TRUSTED_PROXIES names that proxy). Settings carry `before`/`after`; anything else
about the change goes in `detail`.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-14
"""

from hub.db import run_script

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE TABLE operation_log (
        id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at              timestamptz NOT NULL DEFAULT hub_now(),
        tenant_id       bigint NOT NULL REFERENCES tenants (id),
        actor           text NOT NULL CHECK (actor ~ '^(user|key|cli|system):.{1,80}$'),
        -- The acting key's or person's tenant; NULL for the CLI and the hub's own jobs.
        actor_tenant_id bigint REFERENCES tenants (id),
        address         text CHECK (length(address) BETWEEN 1 AND 100),
        -- C collation: a prefix filter (`quota.`) is an index range, as tenants.path is.
        action          text COLLATE "C" NOT NULL
                            CHECK (action ~ '^[a-z_]{1,30}(\\.[a-z_]{1,30}){1,2}$'),
        object          text CHECK (length(object) BETWEEN 1 AND 200),
        before          jsonb,
        after           jsonb,
        detail          jsonb
    );
    CREATE INDEX operation_log_tenant_at ON operation_log (tenant_id, at, id);
    CREATE INDEX operation_log_tenant_actor_at ON operation_log (tenant_id, actor, at, id);
    CREATE INDEX operation_log_tenant_action_at ON operation_log (tenant_id, action, at, id);

    CREATE FUNCTION operation_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'operation_log is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$;
    CREATE TRIGGER operation_log_no_update_or_delete
        BEFORE UPDATE OR DELETE ON operation_log
        FOR EACH ROW EXECUTE FUNCTION operation_log_append_only();
    CREATE TRIGGER operation_log_no_truncate
        BEFORE TRUNCATE ON operation_log
        FOR EACH STATEMENT EXECUTE FUNCTION operation_log_append_only();
    """)


def downgrade() -> None:
    run_script("""
    DROP TABLE operation_log;
    DROP FUNCTION operation_log_append_only();
    """)
