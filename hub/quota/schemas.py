"""Quota API shapes and the month a quota belongs to."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import msgspec

BUSINESS_TZ = ZoneInfo("Asia/Shanghai")
# A month of this century: the hub's ledgers have no business before 2000 or after 2099.
PERIOD_PATTERN = r"^20[0-9]{2}-(0[1-9]|1[0-2])$"
_PERIOD = re.compile(PERIOD_PATTERN)

Policy = Literal["strict", "pooled"]
Segments = Annotated[int, msgspec.Meta(ge=0, le=10**12, description="SMS segments")]


def parse_period(text: str) -> date | None:
    """'2026-11' → date(2026, 11, 1); None when it is not a month."""
    if not _PERIOD.match(text):
        return None
    return date(int(text[:4]), int(text[5:7]), 1)


def period_text(period: date) -> str:
    return period.strftime("%Y-%m")


def next_period(period: date) -> date:
    """The month after: date(2026, 12, 1) → date(2027, 1, 1)."""
    return date(period.year + period.month // 12, period.month % 12 + 1, 1)


def previous_period(period: date) -> date:
    """The month before: date(2027, 1, 1) → date(2026, 12, 1)."""
    return date(period.year - (period.month == 1), (period.month - 2) % 12 + 1, 1)


def business_day(instant: datetime | None = None) -> date:
    """The day an instant (now by default) falls on in Asia/Shanghai."""
    return (instant or datetime.now(BUSINESS_TZ)).astimezone(BUSINESS_TZ).date()


def period_of(instant: datetime) -> date:
    """The month an instant falls in, in Asia/Shanghai (the business day)."""
    local = instant.astimezone(BUSINESS_TZ)
    return date(local.year, local.month, 1)


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


class ChildQuota(msgspec.Struct, frozen=True):
    code: str
    name: str
    opened: bool
    policy: str | None
    limit: int
    used: int
    reserved: int
    available: int


class SubtreeUsage(msgspec.Struct, frozen=True):
    # What the whole subtree (this tenant and every descendant) has used and holds reserved.
    used: int
    reserved: int


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
