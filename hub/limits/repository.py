"""SQL for the operator's per-tenant rate-limit overrides."""

from __future__ import annotations

from datetime import datetime

import msgspec


class OverrideRow(msgspec.Struct, frozen=True):
    tenant_id: int
    key_rate: float | None
    key_burst: float | None
    tenant_rate: float | None
    tenant_burst: float | None
    updated_by: str
    updated_at: datetime


_COLUMNS = "tenant_id, key_rate, key_burst, tenant_rate, tenant_burst, updated_by, updated_at"

# Every override with its tenant's code: what each API process keeps in memory.
ALL_OVERRIDES = f"""
SELECT {", ".join(f"r.{c}" for c in _COLUMNS.split(", "))}, t.code
FROM rate_limits r JOIN tenants t ON t.id = r.tenant_id
"""

# The override of the tenant with this code (a unit's division's).
OVERRIDE_OF_CODE = ALL_OVERRIDES + "WHERE t.code = $1"

# One tenant's override.
OVERRIDE = f"SELECT {_COLUMNS} FROM rate_limits WHERE tenant_id = $1"

# Set a tenant's override (all four columns; null keeps the default).
SET_OVERRIDE = f"""
INSERT INTO rate_limits (tenant_id, key_rate, key_burst, tenant_rate, tenant_burst, updated_by)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (tenant_id) DO UPDATE
SET key_rate = excluded.key_rate, key_burst = excluded.key_burst,
    tenant_rate = excluded.tenant_rate, tenant_burst = excluded.tenant_burst,
    updated_by = excluded.updated_by, updated_at = hub_now()
RETURNING {_COLUMNS}
"""

# Drop a tenant's override: the defaults hold again.
CLEAR_OVERRIDE = "DELETE FROM rate_limits WHERE tenant_id = $1"
