"""Accounts for people: users with roles, one-time invites, sessions that belong to a user, and
one-time SMS codes for the second factor.

A dashboard session now belongs to a user or to an (operator's) API key, exactly one of them;
`second_factor_at` is set once the SMS code was entered in it: a session of an admin or an
approver without it opens no page but the code page. Codes, invites and passwords are stored
as hashes only.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-10
"""

from hub.db import run_script

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE TABLE users (
        id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id       bigint NOT NULL REFERENCES tenants (id),
        -- Signed in with; unique hub-wide whatever its case (users_login).
        login           text NOT NULL CHECK (login ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{2,63}$'),
        display_name    text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 50),
        -- The person's own mainland mobile, E.164: where the second factor's codes go.
        phone           text NOT NULL CHECK (phone ~ '^\\+861[0-9]{10}$'),
        roles           text[] NOT NULL CHECK (
                            cardinality(roles) > 0
                            AND roles <@ ARRAY['查看', '发送', '审核', '管理', '财务']),
        -- argon2id (argon2-cffi's encoded form); NULL until the invite is accepted.
        password_hash   text CHECK (password_hash LIKE '$argon2id$%'),
        disabled_at     timestamptz,
        -- Failed sign-ins since the last success, and the back-off they earned.
        failed_attempts integer NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
        locked_until    timestamptz,
        created_at      timestamptz NOT NULL DEFAULT hub_now(),
        created_by      text NOT NULL
    );
    CREATE UNIQUE INDEX users_login ON users (lower(login));
    CREATE INDEX users_tenant ON users (tenant_id, id);

    CREATE TABLE user_invites (
        id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        -- SHA-256 of the link's token; the token is shown once and never stored.
        token_sha256 bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
        created_at   timestamptz NOT NULL DEFAULT hub_now(),
        expires_at   timestamptz NOT NULL,
        used_at      timestamptz,
        created_by   text NOT NULL,
        CHECK (expires_at > created_at)
    );
    CREATE INDEX user_invites_user ON user_invites (user_id);

    ALTER TABLE dashboard_sessions
        ALTER COLUMN key_id DROP NOT NULL,
        ADD COLUMN user_id bigint REFERENCES users (id) ON DELETE CASCADE,
        -- When the SMS code was entered in this session (admins and approvers must have).
        ADD COLUMN second_factor_at timestamptz,
        -- What the "my sessions" page shows of it (the browser's own words, cut to 200).
        ADD COLUMN user_agent text NOT NULL DEFAULT '' CHECK (length(user_agent) <= 200),
        ADD CONSTRAINT dashboard_sessions_one_owner CHECK ((key_id IS NULL) <> (user_id IS NULL));
    CREATE INDEX dashboard_sessions_user ON dashboard_sessions (user_id, id);

    CREATE TABLE user_codes (
        id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        -- The session it unlocks (the code is good for nothing else).
        session_id   bigint REFERENCES dashboard_sessions (id) ON DELETE SET NULL,
        phone        text NOT NULL,
        -- SHA-256 of the session id and the code: six digits are no secret offline, so what
        -- guards a code is its few attempts and its five minutes.
        code_sha256  bytea NOT NULL CHECK (length(code_sha256) = 32),
        attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        send_id      bigint,
        created_at   timestamptz NOT NULL DEFAULT hub_now(),
        expires_at   timestamptz NOT NULL,
        used_at      timestamptz
    );
    -- The rate limits count recent codes per user and per phone.
    CREATE INDEX user_codes_user ON user_codes (user_id, created_at);
    CREATE INDEX user_codes_phone ON user_codes (phone, created_at);
    CREATE INDEX user_codes_session ON user_codes (session_id);
    """)


def downgrade() -> None:
    run_script("""
    DROP TABLE user_codes;
    DELETE FROM dashboard_sessions WHERE key_id IS NULL;
    ALTER TABLE dashboard_sessions
        DROP CONSTRAINT dashboard_sessions_one_owner,
        DROP COLUMN user_agent,
        DROP COLUMN second_factor_at,
        DROP COLUMN user_id,
        ALTER COLUMN key_id SET NOT NULL;
    DROP TABLE user_invites;
    DROP TABLE users;
    """)
