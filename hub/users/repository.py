"""SQL for people's accounts (migration 0025), each query beside the row Struct it returns."""

from __future__ import annotations

from datetime import datetime

import msgspec


class UserRow(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    tenant_id: int
    tenant_code: str
    tenant_path: str
    login: str
    display_name: str
    phone: str
    roles: list[str]
    password_hash: str | None
    disabled: bool
    failed_attempts: int
    locked_until: datetime | None
    created_at: datetime
    created_by: str
    # The highest suspended tenant at or above the user's (tenants/sql/suspended_by.sql).
    suspended_by: str | None


_USER_COLUMNS = """
    u.id, u.tenant_id, t.code AS tenant_code, t.path AS tenant_path, u.login, u.display_name,
    u.phone, u.roles, u.password_hash, u.disabled_at IS NOT NULL AS disabled, u.failed_attempts,
    u.locked_until, u.created_at, u.created_by, tenant_suspended_by(t.path) AS suspended_by
"""

# A user by login, whatever its case; locked for the sign-in that counts its failures.
USER_BY_LOGIN_FOR_UPDATE = f"""
SELECT {_USER_COLUMNS}
FROM users u JOIN tenants t ON t.id = u.tenant_id
WHERE lower(u.login) = lower($1)
FOR UPDATE OF u
"""

USER_BY_ID = f"""
SELECT {_USER_COLUMNS}
FROM users u JOIN tenants t ON t.id = u.tenant_id
WHERE u.id = $1
"""

# A user by login, only if their tenant lies in the subtree whose path is $2.
USER_IN_SUBTREE = f"""
SELECT {_USER_COLUMNS}
FROM users u JOIN tenants t ON t.id = u.tenant_id
WHERE lower(u.login) = lower($1) AND t.path >= $2 AND t.path < $2 || '~'
FOR UPDATE OF u
"""

# A tenant's users ($1), in login order.
USERS_OF_TENANT = f"""
SELECT {_USER_COLUMNS}
FROM users u JOIN tenants t ON t.id = u.tenant_id
WHERE u.tenant_id = $1
ORDER BY lower(u.login)
LIMIT 1000
"""

LOGIN_TAKEN = "SELECT EXISTS (SELECT 1 FROM users WHERE lower(login) = lower($1))"

# A new user; nothing when the login is taken meanwhile.
INSERT_USER = """
INSERT INTO users (tenant_id, login, display_name, phone, roles, password_hash, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT DO NOTHING
RETURNING id
"""

# A sign-in's outcome: the failures so far and the lock they earned (0 and NULL: a success).
RECORD_ATTEMPT = "UPDATE users SET failed_attempts = $2, locked_until = $3 WHERE id = $1"

# Every console session of user $1 ends but the one $2 (NULL: all of them), when their
# password changes or is reset.
END_SESSIONS_OF = "DELETE FROM dashboard_sessions WHERE user_id = $1 AND id IS DISTINCT FROM $2"

SET_PASSWORD = """
UPDATE users SET password_hash = $2, failed_attempts = 0, locked_until = NULL WHERE id = $1
"""

# Roles ($2, NULL keeps them) and disabled ($3, NULL keeps it) of user $1.
UPDATE_USER = """
UPDATE users SET roles = coalesce($2, roles),
       disabled_at = CASE WHEN $3::boolean IS NULL THEN disabled_at
                          WHEN $3 THEN coalesce(disabled_at, hub_now())
                          ELSE NULL END
WHERE id = $1
"""

# --- invites --------------------------------------------------------------------------------


class InviteRow(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    user_id: int
    expires_at: datetime
    used_at: datetime | None


INSERT_INVITE = """
INSERT INTO user_invites (user_id, token_sha256, expires_at, created_by)
VALUES ($1, $2, $3, $4)
RETURNING expires_at
"""

# The invite whose token hashes to $1, locked: it is used once.
INVITE_BY_TOKEN = """
SELECT id, user_id, expires_at, used_at FROM user_invites WHERE token_sha256 = $1 FOR UPDATE
"""

USE_INVITE = "UPDATE user_invites SET used_at = hub_now() WHERE id = $1"

# Every unused invite of user $1 ends (a new one, or the user disabled).
END_INVITES = """
UPDATE user_invites SET used_at = hub_now() WHERE user_id = $1 AND used_at IS NULL
"""

# --- second-factor codes ------------------------------------------------------------------------

# One sender per phone at a time while codes are counted and written: two people sharing a phone
# (or one person in two browsers) cannot both pass the per-phone limit at once.
LOCK_PHONE = "SELECT pg_advisory_xact_lock(hashtextextended('user_codes:' || $1, 0))"


class CodeCounts(msgspec.Struct, frozen=True, kw_only=True):
    last_for_user: datetime | None
    user_hour: int
    phone_hour: int
    phone_day: int
    oldest_user_hour: datetime | None
    oldest_phone_hour: datetime | None
    oldest_phone_day: datetime | None


# Codes sent lately to user $1 and to phone $2, as of $3.
CODE_COUNTS = """
WITH recent AS (
    SELECT user_id = $1 AS mine, phone = $2 AS same_phone, created_at,
           created_at > $3::timestamptz - interval '1 hour' AS this_hour
    FROM user_codes
    WHERE (user_id = $1 OR phone = $2) AND created_at > $3::timestamptz - interval '1 day'
)
SELECT (SELECT max(created_at) FROM user_codes WHERE user_id = $1) AS last_for_user,
       count(*) FILTER (WHERE mine AND this_hour) AS user_hour,
       count(*) FILTER (WHERE same_phone AND this_hour) AS phone_hour,
       count(*) FILTER (WHERE same_phone) AS phone_day,
       min(created_at) FILTER (WHERE mine AND this_hour) AS oldest_user_hour,
       min(created_at) FILTER (WHERE same_phone AND this_hour) AS oldest_phone_hour,
       min(created_at) FILTER (WHERE same_phone) AS oldest_phone_day
FROM recent
"""

# A new code for user $1's session $2: earlier unused codes of that session end.
END_SESSION_CODES = """
UPDATE user_codes SET used_at = $2 WHERE session_id = $1 AND used_at IS NULL
"""

INSERT_CODE = """
INSERT INTO user_codes (user_id, session_id, phone, code_sha256, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id
"""

SET_CODE_SEND = "UPDATE user_codes SET send_id = $2 WHERE id = $1"


class CodeRow(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    code_sha256: bytes
    attempts: int
    expires_at: datetime


# Session $1's live code, locked: each attempt is counted once.
LIVE_CODE = """
SELECT id, code_sha256, attempts, expires_at FROM user_codes
WHERE session_id = $1 AND used_at IS NULL
ORDER BY id DESC LIMIT 1
FOR UPDATE
"""

COUNT_ATTEMPT = "UPDATE user_codes SET attempts = attempts + 1 WHERE id = $1"

USE_CODE = "UPDATE user_codes SET used_at = $2 WHERE id = $1"
