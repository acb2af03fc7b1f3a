"""Quota API shapes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

Policy = Literal["strict", "pooled"]
Segments = Annotated[int, msgspec.Meta(ge=0, le=10**12, description="SMS segments")]


class SetQuota(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # Set by an ancestor. Omitted: keep the current limit (a tenant may send only `policy`).
    limit: Segments | None = None
    # How this tenant's own children may be granted. `strict`: their limits must fit inside this
    # one (every grant is guaranteed). `pooled`: they may be oversubscribed; this limit still caps
    # their real use. Once an account is open, pooled may become strict but not the reverse.
    policy: Policy | None = None


class SetDefaults(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # What this tenant's account opens with each month; null for none (it opens at 0).
    monthly_limit: Segments | None
    policy: Policy = "strict"


class Defaults(msgspec.Struct, frozen=True):
    tenant: str
    monthly_limit: int | None
    policy: str


class SubtreeUsage(msgspec.Struct, frozen=True):
    # What the whole subtree (this tenant and every descendant) has used and holds reserved.
    used: int
    reserved: int


class ChildQuota(msgspec.Struct, frozen=True):
    # The child's account as its own `GET …/quota/{period}` reads it: not open yet, what it will
    # open with (its default limit and policy, nothing used).
    code: str
    name: str
    opened: bool
    policy: str
    limit: int
    used: int
    reserved: int
    allocated: int
    available: int
    # What the child's whole subtree has used and holds reserved (its account's `used` and
    # `reserved` are what was charged to that account).
    subtree: SubtreeUsage


class Alert(msgspec.Struct, frozen=True):
    # 80 or 100: the share of the limit in use (used + reserved) when it was first reached.
    threshold: int
    reached_at: datetime


class Quota(msgspec.Struct, frozen=True):
    tenant: str
    period: str
    # False: no account is open for the month yet; it opens on first use with the default.
    opened: bool
    policy: str
    limit: int
    # Charged to this account: own sends, plus descendants' when pooled.
    used: int
    reserved: int
    # Sum of the children's limits this month.
    allocated: int
    # What the tenant itself can still reserve now.
    available: int
    subtree: SubtreeUsage
    # Thresholds reached this month, once each.
    alerts: list[Alert]
    children: list[ChildQuota]


class Entry(msgspec.Struct, frozen=True):
    id: int
    kind: str
    amount: int
    limit_before: int
    limit_after: int
    used_before: int
    used_after: int
    reserved_before: int
    reserved_after: int
    allocated_before: int
    allocated_after: int
    reservation_id: int | None
    cause: str
    actor: str
    created_at: datetime


class EntryPage(msgspec.Struct, frozen=True):
    items: list[Entry]
    next_after: int | None


class Reservation(msgspec.Struct, frozen=True):
    id: int
    tenant_id: int
    period: date
    amount: int
    accounts: list[int]
    expires_at: datetime
