"""Dashboard sessions kept server-side: signing out ends a session at once.

Until now the dashboard's cookie was a stateless HMAC over the key, good until it expired even
after sign-out. A session is now a row: the cookie carries a random token, the row only its
SHA-256. Signing out deletes the row; "sign out everywhere" deletes every row of the key. In
PostgreSQL, not Redis: Redis may be flushed at any moment, and that would sign everyone out.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""

from hub.db import run_script

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("""
    CREATE TABLE dashboard_sessions (
        id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        -- SHA-256 of the cookie's token; the token itself is never stored.
        token_sha256 bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
        -- The key signed in with: its revocation ends the session (checked on every request).
        key_id       bigint NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
        created_at   timestamptz NOT NULL DEFAULT hub_now(),
        -- The last request, to the minute: a session idle for HUB_DASHBOARD__IDLE_MINUTES ends.
        seen_at      timestamptz NOT NULL DEFAULT hub_now(),
        -- created_at + HUB_DASHBOARD__SESSION_HOURS.
        expires_at   timestamptz NOT NULL,
        CHECK (expires_at > created_at)
    );
    CREATE INDEX dashboard_sessions_key ON dashboard_sessions (key_id, id);
    CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);
    """)


def downgrade() -> None:
    run_script("DROP TABLE dashboard_sessions")
