"""The dashboard: sessions signed with the operator's secret, and each page's numbers.

Money and quota come from the billing and quota services (what `GET /v1/usage` and
`GET /v1/tenants/{code}/quota/{period}` answer); this module only adds them up per child and
asks its own repository for what no service has (the daily chart, per-child rollups, recent
lists). Functions take the connection first and never commit.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from typing import Any

import asyncpg
import msgspec

from hub.billing import service as billing
from hub.billing.schemas import TenantUsage
from hub.calendar import next_period, period_text
from hub.dashboard import repository as sql
from hub.dashboard.schemas import (
    Alert,
    BillingPage,
    Chart,
    ChartBar,
    ChildLimit,
    ChildRow,
    Crumb,
    Delivery,
    Money,
    Overview,
    QuotaBar,
    SortKey,
    TenantPage,
)
from hub.delivery import inbound
from hub.errors import ApiError, Forbidden, Invalid, NotFound
from hub.messages import service as messages
from hub.quota import service as quota
from tenants import service as tenants
from tenants.repository import TenantRow
from tenants.scopes import Scope
from tenants.service import Principal

log = logging.getLogger("hub.dashboard")

# --- sessions ----------------------------------------------------------------------------

_COOKIE_VALUE = re.compile(r"^([0-9a-f]{12})\.([0-9]{1,12})\.([0-9a-f]{64})$")


class SignInRequired(ApiError):
    """No valid session: the dashboard sends the browser to its sign-in page."""

    status_code = 401
    code = "sign_in_required"


def _mac(secret: bytes, prefix: str, issued: int, secret_sha256: bytes) -> str:
    # The key's stored hash is signed too: the cookie is good for that key only, and only while
    # it exists unrevoked (checked on every request).
    message = f"{prefix}.{issued}.{secret_sha256.hex()}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


async def sign_in(conn: asyncpg.Connection, secret: bytes, raw_key: str, now: int) -> str:
    """A session cookie's value for an API key with `dashboard:read`; Invalid otherwise."""
    principal = await tenants.authenticate(conn, raw_key.strip())
    if principal is None:
        raise Invalid("密钥无效或已吊销", fields=[{"key": "key", "message": "invalid"}])
    if Scope.DASHBOARD_READ not in principal.scopes:
        raise Invalid(
            f"此密钥没有 {Scope.DASHBOARD_READ} 权限", fields=[{"key": "key", "message": "scope"}]
        )
    found = await tenants.credential(conn, principal.key_prefix)
    assert found is not None  # it authenticated a moment ago, in this transaction
    prefix = principal.key_prefix
    return f"{prefix}.{now}.{_mac(secret, prefix, now, found.secret_sha256)}"


async def session(
    conn: asyncpg.Connection, secret: bytes, cookie: str | None, now: int, max_age: int
) -> Principal:
    """Who a session cookie signs in, or SignInRequired (garbled, forged, expired, revoked)."""
    match = _COOKIE_VALUE.match(cookie or "")
    if match is None:
        raise SignInRequired("请先登录")
    prefix, issued, mac = match[1], int(match[2]), match[3]
    if not now - max_age <= issued <= now + 60:
        raise SignInRequired("会话已过期，请重新登录")
    found = await tenants.credential(conn, prefix)
    if found is None or not hmac.compare_digest(
        mac, _mac(secret, prefix, issued, found.secret_sha256)
    ):
        raise SignInRequired("会话无效或密钥已吊销，请重新登录")
    if Scope.DASHBOARD_READ not in found.principal.scopes:
        raise SignInRequired(f"此密钥已没有 {Scope.DASHBOARD_READ} 权限")
    return found.principal


def require(who: Principal, scope: Scope, doing: str) -> None:
    """Beyond `dashboard:read`, what the API would ask of the key for the same thing."""
    if scope not in who.scopes:
        raise Forbidden(f"此密钥没有 {scope} 权限，不能{doing}")


# --- overview ----------------------------------------------------------------------------


async def crumbs(conn: asyncpg.Connection, who: Principal, tenant: TenantRow) -> list[Crumb]:
    """From the signed-in tenant down to `tenant` (names repeat; codes do not)."""
    codes = tenant.path.rstrip("/").split("/")
    own_depth = who.tenant_path.count("/") - 1
    trail = []
    for code in codes[own_depth:]:
        row = tenant if code == tenant.code else await tenants.get_visible(conn, who, code)
        trail.append(Crumb(code=row.code, name=row.name))
    return trail


def _money(items: Iterable[TenantUsage]) -> Money:
    total = Money()
    for u in items:
        total = Money(
            segments=total.segments + u.segments,
            cost_micros=total.cost_micros + u.cost_micros,
            list_price_micros=total.list_price_micros + u.list_price_micros,
            savings_micros=total.savings_micros + u.savings_micros,
            dedup_segments=total.dedup_segments + u.dedup_segments,
            dedup_savings_micros=total.dedup_savings_micros + u.dedup_savings_micros,
        )
    return total


def _rows(records: list[asyncpg.Record], kind: type[Any]) -> list[Any]:
    return [msgspec.convert(dict(r.items()), kind) for r in records]


async def _delivery(
    conn: asyncpg.Connection, path: str, month: date, end: date
) -> dict[str, Delivery]:
    """Segments with a final receipt, delivered or not, per child ("": the tenant itself)."""
    records = await conn.fetch(sql.CHILD_DELIVERY, path, month, end)
    return {
        r.child: Delivery(r.delivered, r.undelivered) for r in _rows(records, sql.ChildDelivery)
    }


CHART_HEIGHT = 120
BAR_STEP = 12


def chart(month: date, days: list[sql.DaySegments]) -> Chart:
    """One bar per day of the month, scaled to the busiest day (SVG coordinates)."""
    by_day = {d.day: d.segments for d in days}
    count = (next_period(month) - month).days
    top = max(by_day.values(), default=0)
    bars = []
    for i in range(count):
        day = month + timedelta(days=i)
        n = by_day.get(day, 0)
        height = 0 if top == 0 else max(1 if n else 0, (n * CHART_HEIGHT) // top)
        bars.append(
            ChartBar(day=day, segments=n, x=i * BAR_STEP, y=CHART_HEIGHT - height, height=height)
        )
    return Chart(
        width=count * BAR_STEP, height=CHART_HEIGHT, bar_width=BAR_STEP - 2, top=top, bars=bars
    )


_SORTS: dict[str, Callable[[ChildRow], Any]] = {
    "code": lambda r: r.code,
    "name": lambda r: r.name,
    "quota": lambda r: (r.quota.percent if r.quota else -1, r.code),
    "segments": lambda r: (r.money.segments, r.code),
    "cost": lambda r: (r.money.cost_micros, r.code),
    "rate": lambda r: (-1 if r.delivery.permille is None else r.delivery.permille, r.code),
}


async def overview(
    conn: asyncpg.Connection,
    who: Principal,
    code: str,
    month: date,
    *,
    sort: SortKey = "code",
    descending: bool = False,
    list_price: int,
) -> Overview:
    """A tenant's subtree for a month: totals, quota, the daily chart and each child's share."""
    tenant = await tenants.get_visible(conn, who, code)
    end = next_period(month)
    usage = await billing.estimate(
        conn, tenant.path, month, subtree=True, default_list_price=list_price
    )
    account = await quota.get_quota(conn, tenant, month)
    child_of = {
        r.code: r.child
        for r in _rows(await conn.fetch(sql.SUBTREE_CHILDREN, tenant.path), sql.SubtreeTenant)
    }
    per_child: dict[str, list[TenantUsage]] = {}
    for item in usage.items:
        per_child.setdefault(child_of.get(item.tenant, ""), []).append(item)
    quota_use = {
        r.child: r
        for r in _rows(await conn.fetch(sql.CHILD_QUOTA_USE, tenant.path, month), sql.ChildQuotaUse)
    }
    deliveries = await _delivery(conn, tenant.path, month, end)
    days = _rows(await conn.fetch(sql.DAILY_SEGMENTS, tenant.path, month, end), sql.DaySegments)

    children = []
    for child in account.children:
        use = quota_use.get(child.code)
        children.append(
            ChildRow(
                code=child.code,
                name=child.name,
                money=_money(per_child.get(child.code, [])),
                quota=QuotaBar(
                    limit=child.limit,
                    used=use.used if use else 0,
                    reserved=use.reserved if use else 0,
                ),
                delivery=deliveries.get(child.code, Delivery()),
            )
        )
    children.sort(key=_SORTS[sort], reverse=descending)
    own = ChildRow(
        code=tenant.code,
        name=tenant.name,
        money=_money(per_child.get("", [])),
        quota=None,
        delivery=deliveries.get("", Delivery()),
    )
    bar = QuotaBar(
        limit=account.limit, used=account.subtree.used, reserved=account.subtree.reserved
    )
    return Overview(
        code=tenant.code,
        name=tenant.name,
        level=tenant.level,
        period=period_text(month),
        crumbs=await crumbs(conn, who, tenant),
        money=_money(usage.items),
        delivery=Delivery(
            delivered=sum(d.delivered for d in deliveries.values()),
            undelivered=sum(d.undelivered for d in deliveries.values()),
        ),
        quota=bar,
        alerts=await _alerts(conn, tenant, month, children),
        chart=chart(month, days),
        own=own,
        children=children,
        sort=sort,
        descending=descending,
    )


MAX_ALERTS = 50


async def _alerts(
    conn: asyncpg.Connection, tenant: TenantRow, month: date, children: list[ChildRow]
) -> list[Alert]:
    """80 % / 100 % of a limit in use: every account of the subtree whose ledger noted it
    (fullest first), then each child whose whole subtree holds that share of its limit."""
    noted = _rows(
        await conn.fetch(sql.SUBTREE_ALERTS, tenant.path, month, MAX_ALERTS), sql.NotedAlert
    )
    found = [
        Alert(
            a.code,
            a.name,
            a.threshold,
            QuotaBar(a.limit_segments, a.held, 0).percent,
            a.reached_at,
        )
        for a in noted
    ]
    listed = {a.code for a in found}
    for row in sorted(children, key=lambda r: -(r.quota.percent if r.quota else 0)):
        if row.quota is not None and row.quota.alert and row.code not in listed:
            found.append(Alert(row.code, row.name, row.quota.alert, row.quota.percent, None))
    return found


# --- the tenant page ---------------------------------------------------------------------

RECENT = 20


async def tenant_page(
    conn: asyncpg.Connection, who: Principal, code: str, month: date
) -> TenantPage:
    tenant = await tenants.get_visible(conn, who, code)
    account = await quota.get_quota(conn, tenant, month)
    opted_out, opt_out_count = await inbound.opt_outs(conn, tenant.id, RECENT)
    return TenantPage(
        code=tenant.code,
        name=tenant.name,
        period=period_text(month),
        crumbs=await crumbs(conn, who, tenant),
        can_allocate=Scope.QUOTA_WRITE in who.scopes and who.suspended_by is None,
        limit=account.limit,
        allocated=account.allocated,
        policy=account.policy,
        children=[
            ChildLimit(c.code, c.name, c.limit, c.used, c.reserved) for c in account.children
        ],
        entries=await quota.latest_entries(conn, tenant, month, RECENT),
        sends=await messages.recent_sends(conn, tenant.id, RECENT),
        replies=await inbound.recent_replies(conn, tenant.id, RECENT),
        opt_outs=opted_out,
        opt_out_count=opt_out_count,
    )


MAX_LIMIT = 10**12
_DIGITS = re.compile(r"^[0-9]{1,13}$")


def parse_limit(text: str) -> int:
    """A limit typed into the form: whole segments, 0 to 10^12 (thousands separators allowed)."""
    cleaned = text.strip().replace(",", "").replace("，", "").replace(" ", "")
    if not _DIGITS.match(cleaned) or int(cleaned) > MAX_LIMIT:
        raise Invalid(
            f"限额必须是 0 到 {MAX_LIMIT:,} 之间的整数（条）",
            fields=[{"key": "limit", "message": "expected a whole number of segments"}],
        )
    return int(cleaned)


async def allocate(
    conn: asyncpg.Connection,
    who: Principal,
    parent_code: str,
    child_code: str,
    month: date,
    limit_text: str,
) -> None:
    """Set a child's limit for a month from the tenant page's form, as
    `PUT /v1/tenants/{child}/quota/{period}` would: the key needs `quota:write`, the child must
    be a child of the page's tenant (in the key's subtree, never the key's own tenant), and no
    suspension may cover the key's tenant (403 naming it, as the API answers)."""
    require(who, Scope.QUOTA_WRITE, "分配配额")
    tenants.refuse_if_suspended(who)
    limit = parse_limit(limit_text)
    parent = await tenants.get_visible(conn, who, parent_code)
    child = await tenants.get_visible(conn, who, child_code)
    if child.parent_code != parent.code or child.id == who.tenant_id:
        raise NotFound(f"{parent.code} 没有下级 {child_code}")
    # A savepoint: a refused change (over the parent's room, below what is held) must leave
    # nothing behind, not even the accounts it opened on the way.
    async with conn.transaction():
        await quota.set_limit(conn, child, month, f"dashboard:{who.key_prefix}", limit=limit)


# --- billing -----------------------------------------------------------------------------


async def billing_page(conn: asyncpg.Connection, who: Principal, month: date) -> BillingPage:
    require(who, Scope.BILLING_READ, "查看账单")
    try:
        statement = await billing.statement_head(conn, who, month)
    except NotFound:
        return BillingPage(
            period=period_text(month), statement=None, missing=f"{month:%Y年%m月} 尚未结账"
        )
    return BillingPage(period=period_text(month), statement=statement, missing=None)
