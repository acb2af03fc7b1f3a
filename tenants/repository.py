"""SQL for tenants and API keys, each query beside the row Struct it returns.

A subtree is a range on `path` (C collation): `path >= $p AND path < $p || '~'` ('~' sorts after
every digit and '/'), which stays an index range scan under asyncpg's prepared statements.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class TenantRow(msgspec.Struct, frozen=True):
    id: int
    code: str
    name: str
    level: str
    parent_code: str | None
    path: str
    depth: int
    status: str
    # The approved signature (sends use it); None until one is approved.
    signature: str | None
    sms_extension: str
    created_at: datetime


_TENANT_COLUMNS = """
    t.id, t.code, t.name, t.level::text AS level, p.code AS parent_code, t.path, t.depth,
    t.status, t.signature, t.sms_extension, t.created_at
"""

# One tenant by code, only if it lies in the subtree whose path is $2.
TENANT_IN_SUBTREE = f"""
SELECT {_TENANT_COLUMNS}
FROM tenants t LEFT JOIN tenants p ON p.id = t.parent_id
WHERE t.code = $1 AND t.path >= $2 AND t.path < $2 || '~'
"""

# One tenant by code, anywhere (operator CLI only).
TENANT_BY_CODE = f"""
SELECT {_TENANT_COLUMNS}
FROM tenants t LEFT JOIN tenants p ON p.id = t.parent_id
WHERE t.code = $1
"""

# One tenant by id (jobs that carry ids).
TENANT_BY_ID = f"""
SELECT {_TENANT_COLUMNS}
FROM tenants t LEFT JOIN tenants p ON p.id = t.parent_id
WHERE t.id = $1
"""

# A page of a tenant's direct children, in code order after the cursor $2.
CHILDREN_PAGE = f"""
SELECT {_TENANT_COLUMNS}
FROM tenants t JOIN tenants p ON p.id = t.parent_id
WHERE t.parent_id = $1 AND t.code > $2
ORDER BY t.code
LIMIT $3
"""

# A subtree down to depth $2 (absolute), parents before children.
SUBTREE = f"""
SELECT {_TENANT_COLUMNS}
FROM tenants t LEFT JOIN tenants p ON p.id = t.parent_id
WHERE t.path >= $1 AND t.path < $1 || '~' AND t.depth <= $2
ORDER BY t.path
"""

# Lock the tenant at path $1 (a division): its units are created one at a time, under this lock.
LOCK_TENANT_AT = "SELECT 1 FROM tenants WHERE path = $1 FOR NO KEY UPDATE"

# How many units lie below the tenant whose path is $1 (a subtree is one range of paths).
UNITS_BELOW = """
SELECT count(*) FROM tenants WHERE path > $1 AND path < $1 || '~' AND level = 'unit'
"""

# Whether any tenant holds the code $1.
CODE_TAKEN = "SELECT EXISTS (SELECT 1 FROM tenants WHERE code = $1)"

# A new child under $3 (the parent's id), with no approved signature yet; nothing when the code
# is taken.
INSERT_CHILD = f"""
WITH inserted AS (
    INSERT INTO tenants (code, name, level, parent_id, path, depth)
    SELECT $1, $2, 'unit', p.id, p.path || $1 || '/', p.depth + 1
    FROM tenants p WHERE p.id = $3
    ON CONFLICT (code) DO NOTHING
    RETURNING *
)
SELECT {_TENANT_COLUMNS}
FROM inserted t JOIN tenants p ON p.id = t.parent_id
"""

# Change a tenant's name or status (NULL keeps the current value).
UPDATE_TENANT = f"""
WITH updated AS (
    UPDATE tenants SET name = coalesce($2, name), status = coalesce($3, status)
    WHERE id = $1
    RETURNING *
)
SELECT {_TENANT_COLUMNS}
FROM updated t LEFT JOIN tenants p ON p.id = t.parent_id
"""

# The hub operator's root tenant; nothing when it exists (and then no SMS extension drawn).
INSERT_ROOT = """
INSERT INTO tenants (code, name, level, parent_id, path, depth, signature)
SELECT $1, $2, 'hub', NULL, $1 || '/', 0, $3
WHERE NOT EXISTS (SELECT 1 FROM tenants WHERE parent_id IS NULL)
ON CONFLICT DO NOTHING
"""

# Divisions of one depth under their (already present) parents; returns the new codes. Only
# the missing ones reach the INSERT: a row that ON CONFLICT skips would still have drawn its
# SMS extension from the sequence, and sequences never give a number back.
INSERT_DIVISIONS = """
INSERT INTO tenants (code, name, level, parent_id, path, depth, signature)
SELECT d.code, d.name, d.level, p.id, p.path || d.code || '/', p.depth + 1, d.signature
FROM UNNEST($1::text[], $2::text[], $3::tenant_level[], $4::text[], $5::text[])
     AS d(code, name, level, parent_code, signature)
JOIN tenants p ON p.code = d.parent_code
WHERE NOT EXISTS (SELECT 1 FROM tenants x WHERE x.code = d.code)
ON CONFLICT (code) DO NOTHING
RETURNING code
"""


class MisplacedRow(msgspec.Struct, frozen=True):
    code: str
    name: str
    level: str
    parent_code: str
    found_name: str
    found_level: str
    found_parent: str | None


# Divisions (code, name, level, parent code) whose code a tenant already holds under another
# parent or at another level: an import must not adopt it.
MISPLACED_DIVISIONS = """
SELECT d.code, d.name, d.level, d.parent_code, t.name AS found_name,
       t.level::text AS found_level, p.code AS found_parent
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS d(code, name, level, parent_code)
JOIN tenants t ON t.code = d.code
LEFT JOIN tenants p ON p.id = t.parent_id
WHERE p.code IS DISTINCT FROM d.parent_code OR t.level::text <> d.level
ORDER BY d.code
"""


class ApiKeyRow(msgspec.Struct, frozen=True):
    id: int
    prefix: str
    tenant_code: str
    name: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


_KEY_COLUMNS = """
    k.id, k.prefix, t.code AS tenant_code, k.name, k.scopes, k.created_at, k.last_used_at,
    k.revoked_at
"""

# Store a new key (its secret's hash only).
INSERT_KEY = f"""
WITH inserted AS (
    INSERT INTO api_keys (prefix, secret_sha256, tenant_id, name, scopes, created_by_key)
    VALUES ($1, $2, $3, $4, $5, $6)
    RETURNING *
)
SELECT {_KEY_COLUMNS} FROM inserted k JOIN tenants t ON t.id = k.tenant_id
"""

# A tenant's keys, newest first.
KEYS_OF_TENANT = f"""
SELECT {_KEY_COLUMNS} FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
WHERE k.tenant_id = $1
ORDER BY k.created_at DESC, k.id DESC
"""

# Revoke a key of a tenant inside the subtree $2; returns its prefix when it is there at all.
REVOKE_KEY_IN_SUBTREE = """
UPDATE api_keys k SET revoked_at = coalesce(k.revoked_at, hub_now())
FROM tenants t
WHERE k.prefix = $1 AND t.id = k.tenant_id AND t.path >= $2 AND t.path < $2 || '~'
RETURNING k.tenant_id
"""


class CredentialRow(msgspec.Struct, frozen=True):
    key_id: int
    secret_sha256: bytes
    scopes: list[str]
    revoked: bool
    stale_last_used: bool
    tenant_id: int
    tenant_code: str
    tenant_path: str
    suspended_by: str | None


# What authentication needs to know about a key prefix, and which tenant's suspension (its
# own or one above it, tenants/sql/suspended_by.sql) makes the key read-only.
CREDENTIAL_BY_PREFIX = """
SELECT k.id AS key_id, k.secret_sha256, k.scopes, k.revoked_at IS NOT NULL AS revoked,
       k.last_used_at IS NULL
           OR k.last_used_at < hub_now() - interval '1 minute' AS stale_last_used,
       t.id AS tenant_id, t.code AS tenant_code, t.path AS tenant_path,
       tenant_suspended_by(t.path) AS suspended_by
FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
WHERE k.prefix = $1
"""

# Record use, at most once a minute per key so a busy key does not write on every request.
TOUCH_KEY = "UPDATE api_keys SET last_used_at = hub_now() WHERE id = $1"


# A tenant's approved signature (hub/signatures sets it when a proposal is approved).
SET_SIGNATURE = "UPDATE tenants SET signature = $2 WHERE id = $1"

# The tenants whose keys led to key $1: its own, the one whose key created it, and so on up.
# Each creator saw the secret of the key it created, so any of them could act with it. The
# highest of them, the operator aside, comes first (the operator when it is the key's own).
KEY_LINEAGE_TOP = f"""
WITH RECURSIVE lineage (tenant_id, created_by_key) AS (
    SELECT tenant_id, created_by_key FROM api_keys WHERE id = $1
    UNION ALL
    SELECT k.tenant_id, k.created_by_key FROM api_keys k JOIN lineage l ON k.id = l.created_by_key
)
SELECT {_TENANT_COLUMNS}
FROM lineage l JOIN tenants t ON t.id = l.tenant_id LEFT JOIN tenants p ON p.id = t.parent_id
ORDER BY t.parent_id IS NULL, t.depth
LIMIT 1
"""
