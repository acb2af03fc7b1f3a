"""The dashboard: server-side sessions, and each page's numbers for what the key may see.

A session is a row (migration 0018): the cookie holds a random token, the row its SHA-256, the
key it was started with and when it ends. Every request finds the row and checks the key again.

Money and quota come from the billing and quota services (what `GET /v1/usage` and
`GET /v1/tenants/{code}/quota/{period}` answer); this module only adds them up per child and
asks its own repository for what no service has (the daily chart, per-child rollups). What a
page shows beyond counts and quota follows `tenants.scopes.READ_SCOPE`, as the API does: data
the key may not see is not fetched at all (its field is None), so no template can show it.
Functions take the connection first and never commit.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from typing import Any, Literal

import asyncpg
import msgspec

from hub.billing import service as billing
from hub.calendar import next_period, period_text
from hub.dashboard import repository as sql
from hub.dashboard.schemas import (
    Alert,
    BillingPage,
    Chart,
    ChartBar,
    ChildLimit,
    ChildRow,
    Counts,
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
from hub.oplog import service as oplog
from hub.quota import service as quota
from hub.quota.schemas import ChildQuota, Quota
from hub.settings import DashboardSettings
from hub.users import service as users
from hub.users.repository import UserRow
from hub.users.schemas import SessionInfo
from tenants import scopes
from tenants import service as tenants
from tenants.repository import TenantRow
from tenants.scopes import (
    SIGNATURES_REVIEWED_BEFORE,
    TEMPLATES_REVIEWED_BEFORE,
    Data,
    Needs,
    Scope,
    grants,
    named,
)
from tenants.service import Principal

log = logging.getLogger("hub.dashboard")

# --- sessions ----------------------------------------------------------------------------

# secrets.token_urlsafe(32): 256 random bits.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}\Z")
# A key's (or a person's) sessions beyond its newest this many end when it starts another.
MAX_SESSIONS_PER_KEY = 20


class SignInRequired(ApiError):
    """No live session: the dashboard sends the browser to its sign-in page."""

    status_code = 401
    code = "sign_in_required"


class SecondFactorRequired(SignInRequired):
    """A session of an admin or approver without its SMS code: only the code page opens."""

    code = "second_factor_required"


class Signed(msgspec.Struct, frozen=True):
    """Who a live session signs in, and whether it still owes its SMS code."""

    who: Principal
    owes_code: bool


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _idle(rules: DashboardSettings) -> timedelta:
    return timedelta(minutes=rules.idle_minutes)


def key_may_sign_in(who: Principal, rules: DashboardSettings) -> bool:
    """Keys are for systems; the console takes one only from the operator (`key_sign_in`)."""
    if rules.key_sign_in == "off":
        return False
    return rules.key_sign_in == "any" or who.tenant_code == tenants.ROOT_CODE


async def _start(
    conn: asyncpg.Connection,
    rules: DashboardSettings,
    user_agent: str,
    *,
    key_id: int | None = None,
    user_id: int | None = None,
) -> tuple[str, int]:
    token = secrets.token_urlsafe(32)
    await conn.execute(sql.END_STALE_SESSIONS, _idle(rules))
    session_id: int = await conn.fetchval(
        sql.START_SESSION,
        _digest(token),
        key_id,
        user_id,
        timedelta(hours=rules.session_hours),
        user_agent[:200],
    )
    await conn.execute(sql.TRIM_SESSIONS, key_id, MAX_SESSIONS_PER_KEY, user_id)
    return token, session_id


async def sign_in(
    conn: asyncpg.Connection, raw_key: str, rules: DashboardSettings, user_agent: str = ""
) -> str:
    """A new session for an API key with `dashboard:read` that may sign in to the console (the
    operator's, see key_may_sign_in): its token, for the cookie (only its hash is stored).
    Invalid for any other key."""
    principal = await tenants.authenticate(conn, raw_key.strip())
    if principal is None:
        raise Invalid("密钥无效或已吊销", fields=[{"key": "key", "message": "invalid"}])
    if not key_may_sign_in(principal, rules):
        raise Invalid(
            "控制台只接受运营方（000000）的密钥：请用登录名和密码登录",
            fields=[{"key": "key", "message": "not the operator's"}],
        )
    if not grants(principal.scopes, Scope.DASHBOARD_READ):
        raise Invalid(
            f"此密钥没有 {Scope.DASHBOARD_READ} 权限", fields=[{"key": "key", "message": "scope"}]
        )
    token, _ = await _start(conn, rules, user_agent, key_id=principal.key_id)
    return token


async def sign_in_user(
    conn: asyncpg.Connection, user: UserRow, rules: DashboardSettings, user_agent: str = ""
) -> tuple[str, int]:
    """A new session for a person whose password was right: its token and id. An admin's or
    approver's session opens nothing but the code page until the SMS code is entered."""
    return await _start(conn, rules, user_agent, user_id=user.id)


async def session(conn: asyncpg.Connection, token: str | None, rules: DashboardSettings) -> Signed:
    """Who a session cookie signs in, or SignInRequired: unknown or garbled token, signed out,
    past its end, idle too long; its key revoked, without `dashboard:read` any more or no longer
    allowed in the console; its user disabled or gone."""
    if token is None or not _TOKEN.match(token):
        raise SignInRequired("请先登录")
    record = await conn.fetchrow(sql.LIVE_SESSION, _digest(token), _idle(rules))
    if record is None:
        raise SignInRequired("会话已结束或已过期，请重新登录")
    live = msgspec.convert(dict(record.items()), sql.LiveSession)
    if live.user_id is not None:
        signed = await _user_session(conn, live)
    else:
        signed = await _key_session(conn, live, rules)
    if live.stale:
        await conn.execute(sql.TOUCH_SESSION, live.id)
    return signed


async def _user_session(conn: asyncpg.Connection, live: sql.LiveSession) -> Signed:
    assert live.user_id is not None
    user = await users.get(conn, live.user_id)
    if user is None or user.disabled or user.password_hash is None:
        raise SignInRequired("账户已停用，请联系本单位管理员")
    owes = users.needs_second_factor(user) and live.second_factor_at is None
    return Signed(users.principal(user, live.id), owes)


async def _key_session(
    conn: asyncpg.Connection, live: sql.LiveSession, rules: DashboardSettings
) -> Signed:
    assert live.key_prefix is not None
    found = await tenants.credential(conn, live.key_prefix)
    if found is None:
        raise SignInRequired("密钥已吊销，请重新登录")
    if not key_may_sign_in(found.principal, rules):
        raise SignInRequired("控制台只接受运营方的密钥，请用登录名和密码登录")
    if not grants(found.principal.scopes, Scope.DASHBOARD_READ):
        raise SignInRequired(f"此密钥已没有 {Scope.DASHBOARD_READ} 权限")
    return Signed(msgspec.structs.replace(found.principal, session_id=live.id), owes_code=False)


async def pass_second_factor(conn: asyncpg.Connection, session_id: int) -> None:
    await conn.execute(sql.PASS_SECOND_FACTOR, session_id)


async def sign_out(
    conn: asyncpg.Connection, token: str | None, address: str | None = None
) -> oplog.Actor | None:
    """End the session this token belongs to (nothing if none); who it was, seen from
    `address`."""
    if token is None or not _TOKEN.match(token):
        return None
    gone = await conn.fetchrow(sql.END_SESSION, _digest(token))
    if gone is None:
        return None
    return oplog.Actor(gone["name"], gone["tenant_id"], address)


async def sign_out_everywhere(conn: asyncpg.Connection, who: Principal) -> None:
    """End every session of the signed-in person (or key), in every browser."""
    await conn.execute(sql.END_OWN_SESSIONS, who.key_id, who.user_id)


async def own_sessions(
    conn: asyncpg.Connection, who: Principal, rules: DashboardSettings
) -> list[SessionInfo]:
    """The signed-in person's (or key's) live sessions, this one marked."""
    records = await conn.fetch(sql.OWN_SESSIONS, who.key_id, who.user_id, _idle(rules))
    return [
        SessionInfo(
            id=row.id,
            created_at=row.created_at,
            seen_at=row.seen_at,
            expires_at=row.expires_at,
            user_agent=row.user_agent,
            verified=row.second_factor_at is not None,
            current=row.id == who.session_id,
        )
        for row in _rows(records, sql.SessionRow)
    ]


async def end_session(conn: asyncpg.Connection, who: Principal, session_id: int) -> None:
    """End one of the signed-in person's (or key's) own sessions; another's is 404."""
    if await conn.fetchval(sql.END_OWN_SESSION, session_id, who.key_id, who.user_id) is None:
        raise NotFound("会话不存在或已结束")


# --- what the key may see ----------------------------------------------------------------


def may(who: Principal, need: Needs) -> bool:
    """Beyond counts and quota, what the API would let this key see or do (READ_SCOPE)."""
    return grants(who.scopes, need)


def reviewing(who: Principal, kind: Literal["template", "signature"]) -> Needs:
    """What deciding a template or a signature needs of `who`, as the API's review guard asks
    (tenants.auth.require_review): reviews:write, or for an operator key its older scope."""
    before = TEMPLATES_REVIEWED_BEFORE if kind == "template" else SIGNATURES_REVIEWED_BEFORE
    return scopes.reviewing(before, key=who.key_id is not None)


def may_review(who: Principal) -> bool:
    """Whether `who` may decide templates or signatures (the review queue's page and link)."""
    return may(who, reviewing(who, "template")) or may(who, reviewing(who, "signature"))


def holder(who: Principal) -> str:
    """Who lacks a scope, in a refusal's words: a key, or a person's roles."""
    return "此密钥" if who.key_id is not None else "您的角色"


def require(who: Principal, need: Needs, doing: str) -> None:
    if not may(who, need):
        raise Forbidden(f"{holder(who)}没有 {named(need)} 权限，不能{doing}")


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


# A tenant's month: its counts, and its money if the key may see money (else None).
_Usage = tuple[Counts, Money | None]


async def _usage(
    conn: asyncpg.Connection, who: Principal, path: str, month: date, list_price: int
) -> dict[str, _Usage]:
    """Each tenant of the subtree at `path` with usage this month. Without money for the key,
    only billing's counts are read: the estimate (the pricing) is never asked for."""
    if not may(who, Data.MONEY):
        counts: dict[str, Counts] = {}
        for row in await billing.usage(conn, path, month, subtree=True):
            counts[row.tenant] = counts.get(row.tenant, Counts()) + Counts(row.billable, row.dedup)
        return {tenant: (c, None) for tenant, c in counts.items()}
    estimate = await billing.estimate(
        conn, path, month, subtree=True, default_list_price=list_price
    )
    return {
        u.tenant: (
            Counts(u.segments, u.dedup_segments),
            Money(u.cost_micros, u.list_price_micros, u.savings_micros, u.dedup_savings_micros),
        )
        for u in estimate.items
    }


def _total(parts: Iterable[_Usage], priced: bool) -> _Usage:
    listed = list(parts)
    counts = sum((c for c, _ in listed), Counts())
    money = sum((m for _, m in listed if m is not None), Money()) if priced else None
    return counts, money


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
    "segments": lambda r: (r.counts.segments, r.code),
    "cost": lambda r: (r.money.cost_micros if r.money else 0, r.code),
    "rate": lambda r: (-1 if r.delivery.permille is None else r.delivery.permille, r.code),
}


def _bar(quota: Quota | ChildQuota) -> QuotaBar:
    """A tenant's limit against its whole subtree's use (`subtree`, quota's one definition of
    used and reserved): the overview's bars and the tenant page's children show this."""
    return QuotaBar(quota.limit, quota.subtree.used, quota.subtree.reserved)


async def _rows_by_child(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    month: date,
    account: Quota,
    usage: dict[str, _Usage],
    deliveries: dict[str, Delivery],
    priced: bool,
) -> tuple[ChildRow, list[ChildRow]]:
    """The tenant's own row, and one per child with its whole subtree's share."""
    child_of = {
        r.code: r.child
        for r in _rows(await conn.fetch(sql.SUBTREE_CHILDREN, tenant.path), sql.SubtreeTenant)
    }
    per_child: dict[str, list[_Usage]] = {}
    for code, part in usage.items():
        per_child.setdefault(child_of.get(code, ""), []).append(part)
    children = []
    for child in account.children:
        counts, money = _total(per_child.get(child.code, []), priced)
        children.append(
            ChildRow(
                code=child.code,
                name=child.name,
                counts=counts,
                money=money,
                quota=_bar(child),
                delivery=deliveries.get(child.code, Delivery()),
            )
        )
    counts, money = _total(per_child.get("", []), priced)
    own = ChildRow(tenant.code, tenant.name, counts, money, None, deliveries.get("", Delivery()))
    return own, children


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
    """A tenant's subtree for a month: totals, quota, the daily chart and each child's share;
    money only for a key that may see it (nor may the others sort by it)."""
    tenant = await tenants.get_visible(conn, who, code)
    end = next_period(month)
    priced = may(who, Data.MONEY)
    if sort == "cost" and not priced:
        sort = "code"
    usage = await _usage(conn, who, tenant.path, month, list_price)
    account = await quota.get_quota(conn, tenant, month)
    deliveries = await _delivery(conn, tenant.path, month, end)
    own, children = await _rows_by_child(conn, tenant, month, account, usage, deliveries, priced)
    children.sort(key=_SORTS[sort], reverse=descending)
    days = _rows(await conn.fetch(sql.DAILY_SEGMENTS, tenant.path, month, end), sql.DaySegments)
    counts, money = _total(usage.values(), priced)
    return Overview(
        code=tenant.code,
        name=tenant.name,
        level=tenant.level,
        period=period_text(month),
        crumbs=await crumbs(conn, who, tenant),
        counts=counts,
        money=money,
        delivery=Delivery(
            delivered=sum(d.delivered for d in deliveries.values()),
            undelivered=sum(d.undelivered for d in deliveries.values()),
        ),
        quota=_bar(account),
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
    """The tenant's quota and its children's limits; its sends, replies and opt-outs only for a
    key that may see them (they are not read otherwise)."""
    tenant = await tenants.get_visible(conn, who, code)
    account = await quota.get_quota(conn, tenant, month)
    sends = replies = opted_out = count = None
    if may(who, Data.MESSAGES):
        sends = await messages.recent_sends(conn, tenant.id, RECENT)
    if may(who, Data.REPLIES):
        replies = await inbound.recent_replies(conn, tenant.id, RECENT)
        opted_out, count = await inbound.opt_outs(conn, tenant.id, RECENT)
    return TenantPage(
        code=tenant.code,
        name=tenant.name,
        period=period_text(month),
        crumbs=await crumbs(conn, who, tenant),
        can_allocate=may(who, Scope.QUOTA_WRITE) and who.suspended_by is None,
        limit=account.limit,
        allocated=account.allocated,
        policy=account.policy,
        children=[ChildLimit(c.code, c.name, _bar(c)) for c in account.children],
        entries=await quota.latest_entries(conn, tenant, month, RECENT),
        sends=sends,
        replies=replies,
        opt_outs=opted_out,
        opt_out_count=count,
    )


MAX_LIMIT = 10**12
_DIGITS = re.compile(r"^[0-9]{1,13}\Z")


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
        change = await quota.set_limit(conn, child, month, who.actor, limit=limit)
        await oplog.record(conn, who, "quota.set", **quota.limit_logged(child, change))


# --- billing -----------------------------------------------------------------------------


async def billing_page(conn: asyncpg.Connection, who: Principal, month: date) -> BillingPage:
    require(who, Data.MONEY, "查看账单")
    try:
        statement = await billing.statement_head(conn, who, month)
    except NotFound:
        return BillingPage(
            period=period_text(month), statement=None, missing=f"{month:%Y年%m月} 尚未结账"
        )
    return BillingPage(period=period_text(month), statement=statement, missing=None)
