"""What the dashboard's pages show: one Struct per page, built by the service, rendered by a
template. Money stays integer micro-yuan until a template formats it."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

from hub.billing.schemas import StatementHead
from hub.delivery.schemas import OptOut, RecentReply
from hub.messages.schemas import SendSummary
from hub.quota.schemas import Entry
from tenants.scopes import Role

SortKey = Literal["code", "name", "quota", "segments", "cost", "rate"]
SORT_KEYS: tuple[SortKey, ...] = ("code", "name", "quota", "segments", "cost", "rate")


# Form fields are bounded: a field past its bound is a 422 page, before anything is hashed.
_Short = Annotated[str, msgspec.Meta(max_length=100)]
_Secret = Annotated[str, msgspec.Meta(max_length=200)]


class LoginForm(msgspec.Struct, frozen=True):
    # A person signs in with login and password; the operator may still use a key.
    login: _Short = ""
    password: _Secret = ""
    key: _Secret = ""


class CodeForm(msgspec.Struct, frozen=True):
    code: Annotated[str, msgspec.Meta(max_length=20)] = ""


class PasswordForm(msgspec.Struct, frozen=True):
    password: _Secret = ""
    confirm: _Secret = ""
    current: _Secret = ""  # a change of one's own password (not an invite's first)


class InviteForm(msgspec.Struct, frozen=True):
    tenant: _Short = ""
    login: _Short = ""
    display_name: _Short = ""
    phone: _Short = ""
    # One checkbox per role (role_read=on …): see ROLE_FIELDS.
    role_read: _Short = ""
    role_send: _Short = ""
    role_review: _Short = ""
    role_admin: _Short = ""
    role_finance: _Short = ""


class RolesForm(msgspec.Struct, frozen=True):
    role_read: _Short = ""
    role_send: _Short = ""
    role_review: _Short = ""
    role_admin: _Short = ""
    role_finance: _Short = ""


# The users page's checkbox for each role.
ROLE_FIELDS: dict[str, Role] = {
    "role_read": Role.READ,
    "role_send": Role.SEND,
    "role_review": Role.REVIEW,
    "role_admin": Role.ADMIN,
    "role_finance": Role.FINANCE,
}


def checked_roles(form: InviteForm | RolesForm) -> list[Role]:
    return [role for field, role in ROLE_FIELDS.items() if getattr(form, field)]


class QuotaForm(msgspec.Struct, frozen=True):
    # Text, not int: a bad value is answered on the page beside the field, not with a 422.
    child: str = ""
    period: str = ""
    limit: str = ""


class Crumb(msgspec.Struct, frozen=True):
    code: str
    name: str


class Counts(msgspec.Struct, frozen=True):
    """Segments sent (billable) and deduplicated: counts, shown to every dashboard key."""

    segments: int = 0
    dedup_segments: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.segments + other.segments, self.dedup_segments + other.dedup_segments)


class Money(msgspec.Struct, frozen=True):
    """What they cost: only for keys that may see money (`billing:read`)."""

    cost_micros: int = 0
    list_price_micros: int = 0
    savings_micros: int = 0
    dedup_savings_micros: int = 0

    def __add__(self, other: Money) -> Money:
        return Money(
            self.cost_micros + other.cost_micros,
            self.list_price_micros + other.list_price_micros,
            self.savings_micros + other.savings_micros,
            self.dedup_savings_micros + other.dedup_savings_micros,
        )


class Delivery(msgspec.Struct, frozen=True):
    delivered: int = 0
    undelivered: int = 0

    @property
    def permille(self) -> int | None:
        """delivered / (delivered + undelivered) in tenths of a percent; None before receipts."""
        final = self.delivered + self.undelivered
        return None if final == 0 else (self.delivered * 1000) // final


class QuotaBar(msgspec.Struct, frozen=True):
    limit: int
    used: int
    reserved: int

    @property
    def held(self) -> int:
        return self.used + self.reserved

    @property
    def percent(self) -> int:
        """Share of the limit in use (used + reserved), in whole percent; over 100 when exceeded."""
        if self.limit <= 0:
            return 100 if self.held else 0
        return (self.held * 100) // self.limit

    @property
    def alert(self) -> int:
        """80 or 100 once that share of the limit is in use, else 0."""
        return 100 if self.percent >= 100 and self.held else 80 if self.percent >= 80 else 0


class ChildRow(msgspec.Struct, frozen=True):
    code: str
    name: str
    counts: Counts
    money: Money | None  # None: the key may not see money (none was priced)
    # The child's limit against its whole subtree's use; None for the tenant's own row.
    quota: QuotaBar | None
    delivery: Delivery


class ChartBar(msgspec.Struct, frozen=True):
    day: date
    segments: int
    x: int
    y: int
    height: int


class Chart(msgspec.Struct, frozen=True):
    width: int
    height: int
    bar_width: int
    top: int  # the largest day's segments (the y axis' top)
    bars: list[ChartBar]


class Alert(msgspec.Struct, frozen=True):
    code: str
    name: str
    threshold: int  # 80 or 100
    percent: int
    reached_at: datetime | None  # when the ledger noted it (the tenant's own account)


class Overview(msgspec.Struct, frozen=True):
    code: str
    name: str
    level: str
    period: str
    crumbs: list[Crumb]
    counts: Counts
    money: Money | None  # None: the key may not see money (none was priced)
    delivery: Delivery
    # The tenant's limit against its whole subtree's use, as GET …/quota/{period} gives them.
    quota: QuotaBar
    alerts: list[Alert]
    chart: Chart
    own: ChildRow  # the tenant's own sends
    children: list[ChildRow]
    sort: SortKey
    descending: bool


class ChildLimit(msgspec.Struct, frozen=True):
    code: str
    name: str
    # The child's limit against its whole subtree's use: the overview's bar for it.
    quota: QuotaBar


class TenantPage(msgspec.Struct, frozen=True):
    code: str
    name: str
    period: str
    crumbs: list[Crumb]
    can_allocate: bool
    limit: int
    allocated: int
    policy: str
    children: list[ChildLimit]
    entries: list[Entry]
    # None where the key may not see them (messages:read): never fetched for it.
    sends: list[SendSummary] | None
    replies: list[RecentReply] | None
    opt_outs: list[OptOut] | None
    opt_out_count: int | None


class BillingPage(msgspec.Struct, frozen=True):
    period: str
    statement: StatementHead | None
    # Why there is no statement (the month is not closed yet).
    missing: str | None


# --- templates, signatures, reviews (hub/dashboard/reviews.py) ---------------------------
# Bounded loosely here; the API's own Structs (CreateTemplate, ProposeSignature, Review) are the
# rules, applied to what these carry, so a page and the API refuse the same input.
_Long = Annotated[str, msgspec.Meta(max_length=2_000)]


class TemplateForm(msgspec.Struct, frozen=True):
    name: _Short = ""
    body: _Long = ""


class SignatureForm(msgspec.Struct, frozen=True):
    tenant: _Short = ""
    signature: _Short = ""


class ReviewForm(msgspec.Struct, frozen=True):
    decision: _Short = ""
    note: _Long = ""


# --- administration (hub/dashboard/admin.py) --------------------------------------------


class UnitForm(msgspec.Struct, frozen=True):
    parent: _Short = ""
    code: _Short = ""
    name: _Short = ""
    signature: _Short = ""


class StatusForm(msgspec.Struct, frozen=True):
    status: _Short = ""


class KeyForm(msgspec.Struct, frozen=True):
    tenant: _Short = ""
    name: _Short = ""
    # One checkbox per scope, all named `scope` (a single one arrives as a string).
    scope: list[_Short] | _Short = msgspec.field(default_factory=list)


class WebhookForm(msgspec.Struct, frozen=True):
    tenant: _Short = ""
    url: Annotated[str, msgspec.Meta(max_length=2_000)] = ""
    secret: Annotated[str, msgspec.Meta(max_length=200)] = ""
