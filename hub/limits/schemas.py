"""API shapes for a tenant's request-rate limits."""

from __future__ import annotations

from datetime import datetime

import msgspec

from hub.settings import Burst, Rate


class RateLimitsSetting(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The operator's override for one tenant; a field left out (or null) keeps the default."""

    # Units a second each of the tenant's keys gains, and the most one holds.
    key_rate: Rate | None = None
    key_burst: Burst | None = None
    # The same for all of the tenant's keys together.
    tenant_rate: Rate | None = None
    tenant_burst: Burst | None = None


class RateLimitsView(msgspec.Struct, frozen=True):
    tenant: str
    # The limits in force: the tenant's own where set, else the hub's defaults.
    key_rate: float
    key_burst: float
    tenant_rate: float
    tenant_burst: float
    # What all the units of the tenant's division share (`division`: its code, the tenant's own
    # for a province, prefecture or county, whose own requests it does not count): the hub's
    # default, never below the division's own tenant limits.
    division: str
    division_rate: float
    division_burst: float
    # Which of the four above are the tenant's own.
    overridden: list[str]
    updated_by: str | None
    updated_at: datetime | None
