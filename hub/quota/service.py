"""The quota ledger: accounts per (tenant, month), reservations, limits, audit.

Who is charged for a reservation by tenant T: T's own account, and every *pooled* ancestor's.
A strict ancestor is not charged, because its children's limits are carved out of its own: it
keeps `allocated` (the sum of its children's limits) free, so its subtree can never use more than
its limit. A pooled ancestor lets its children be oversubscribed, so it must see their real use.
By induction every tenant's whole subtree stays within its limit, and when every level is strict
(the default) a reservation locks one row — the root is no longer every send's hottest lock.

A policy is fixed when an account opens, except that pooled may tighten to strict later (that
only ever over-counts). Loosening mid-month could miss what was reserved before the change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Any

import asyncpg
import msgspec

from hub.calendar import current_period, period_text
from hub.db import RETRY_ATTEMPTS, retrying
from hub.errors import ApiError, Conflict, Invalid
from hub.quota import repository as sql
from hub.quota.repository import (
    AccountRow,
    AuditAccountRow,
    AuditEntryRow,
    ChainLink,
    ReservationRow,
    ReserveResult,
)
from hub.quota.schemas import (
    Alert,
    ChildQuota,
    Defaults,
    Entry,
    EntryPage,
    Quota,
    Reservation,
    SubtreeUsage,
)
from hub.settings import QuotaSettings
from tenants.repository import TenantRow
from tenants.service import ancestry_paths


class QuotaExhausted(ApiError):
    status_code = 429
    code = "quota_exhausted"


# The shares of a limit whose reaching is noted once a month (quota_events; RECORD_THRESHOLDS).
ALERT_THRESHOLDS = (80, 100)


def _convert(record: asyncpg.Record | None, kind: type[Any]) -> Any:
    return None if record is None else msgspec.convert(dict(record.items()), kind)


class _Ledger:
    """Entries and balance writes collected during one operation, written in two statements."""

    def __init__(self, cause: str, actor: str) -> None:
        self.cause, self.actor = cause, actor
        self.rows: list[tuple[Any, ...]] = []

    def entry(
        self,
        kind: str,
        amount: int,
        before: AccountRow,
        after: AccountRow,
        reservation_id: int | None = None,
    ) -> None:
        self.rows.append(
            (
                before.id,
                kind,
                amount,
                before.limit_segments,
                after.limit_segments,
                before.used,
                after.used,
                before.reserved,
                after.reserved,
                before.allocated,
                after.allocated,
                reservation_id,
                self.cause,
                self.actor,
            )
        )

    async def write(self, conn: asyncpg.Connection) -> None:
        if self.rows:
            await conn.execute(sql.INSERT_ENTRIES, *map(list, zip(*self.rows, strict=True)))


async def _save(conn: asyncpg.Connection, account: AccountRow) -> None:
    await conn.execute(
        sql.UPDATE_ACCOUNT,
        account.id,
        account.limit_segments,
        account.used,
        account.reserved,
        account.allocated,
        account.policy,
    )


# --- opening accounts --------------------------------------------------------------------


async def _chain(conn: asyncpg.Connection, tenant: TenantRow, period: date) -> list[ChainLink]:
    records = await conn.fetch(sql.CHAIN, ancestry_paths(tenant.path), period)
    return [msgspec.convert(dict(r.items()), ChainLink) for r in records]


async def _open(
    conn: asyncpg.Connection,
    link: ChainLink,
    parent: ChainLink | None,
    period: date,
    actor: str,
) -> AccountRow:
    """Open `link`'s account with its default limit: under a strict parent, as much as fits."""
    defaults = await conn.fetchrow(sql.DEFAULTS, link.tenant_id)
    wanted = int(defaults["monthly_limit"] or 0) if defaults else 0
    policy = str(defaults["policy"]) if defaults else "strict"
    ledger = _Ledger(cause=f"open:{period_text(period)}", actor=actor)
    parent_account: AccountRow | None = None
    grant = wanted
    if parent is not None:
        parent_account = _convert(
            await conn.fetchrow(sql.LOCK_ACCOUNT, parent.tenant_id, period), AccountRow
        )
        assert parent_account is not None, "accounts open root first"
        if parent_account.policy == "strict":
            room = parent_account.limit_segments - parent_account.used
            room -= parent_account.reserved + parent_account.allocated
            grant = max(0, min(wanted, room))
    opened: AccountRow | None = _convert(
        await conn.fetchrow(sql.OPEN_ACCOUNT, link.tenant_id, period, link.depth, policy, grant),
        AccountRow,
    )
    if opened is None:  # a concurrent transaction opened it (and allocated for it) first
        existing: AccountRow = _convert(
            await conn.fetchrow(sql.ACCOUNT, link.tenant_id, period), AccountRow
        )
        return existing
    empty = msgspec.structs.replace(opened, limit_segments=0)
    ledger.entry("open", grant, empty, opened)
    if parent_account is not None and grant:
        after = msgspec.structs.replace(parent_account, allocated=parent_account.allocated + grant)
        await _save(conn, after)
        ledger.entry("allocate", grant, parent_account, after)
    await ledger.write(conn)
    return opened


async def _opened_chain(
    conn: asyncpg.Connection, tenant: TenantRow, period: date, actor: str
) -> tuple[list[ChainLink], bool]:
    """The chain root first with every level's account open (opening missing ones, root first),
    and whether the tenant's own account was opened just now."""
    links = await _chain(conn, tenant, period)
    own_was_open = links[-1].account_id is not None
    if own_was_open and all(link.account_id is not None for link in links):
        return links, False
    # The lock order (docs/ARCHITECTURE.md): accounts root first. Opening one locks its parent
    # to allocate from it, so the chain's open accounts are locked root first before anything
    # opens: two first sends of a month under one pooled city cannot each hold a lock the
    # other waits for (the city's, taken to open, and the province's, taken to reserve).
    await conn.execute(sql.LOCK_ACCOUNTS, [link.account_id for link in links if link.account_id])
    for i, link in enumerate(links):
        if link.account_id is None:
            account = await _open(conn, link, links[i - 1] if i else None, period, actor)
            links[i] = msgspec.structs.replace(link, account_id=account.id, policy=account.policy)
    return links, not own_was_open


# --- reservations ------------------------------------------------------------------------


async def reserve(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    amount: int,
    cause: str,
    actor: str,
    *,
    ttl_seconds: float,
    period: date | None = None,
    leases: QuotaSettings | None = None,
) -> Reservation:
    """Reserve `amount` segments for `tenant` or raise QuotaExhausted naming the level short.

    With `leases` (the quota settings) whose `lease_block` is more than `amount`, a tenant
    charged to pooled ancestors reserves from its lease of their quota (quota_draw): the
    chain is locked once per block, not once per send."""
    if amount <= 0:
        raise ValueError("a reservation is for at least one segment")
    month = period or current_period()

    async def take(links: list[ChainLink], tries: int) -> tuple[list[int | None], ReserveResult]:
        charged = [link.account_id for link in links[:-1] if link.policy == "pooled"]
        charged.append(links[-1].account_id)
        block: int | None = None
        lease_ttl: float | None = None
        if leases is not None and len(charged) > 1 and amount < leases.lease_block:
            block, lease_ttl = leases.lease_block, leases.lease_ttl_seconds
        args = (charged, amount, tenant.id, month, cause, actor, float(ttl_seconds))
        record = await conn.fetchrow(sql.TAKE, *args, block, lease_ttl, tries)
        return charged, _convert(record, ReserveResult)

    async def opening() -> tuple[list[ChainLink], list[int | None], ReserveResult]:
        opened, _ = await _opened_chain(conn, tenant, month, actor)
        return opened, *await take(opened, 1)  # retrying tries again

    links = await _chain(conn, tenant, month)
    if all(link.account_id is not None for link in links):
        # Nothing is locked before quota_take, which tries again itself after a deadlock.
        charged, result = await take(links, RETRY_ATTEMPTS)
    else:
        # Opening accounts locks the chain first: that and the reservation from a savepoint,
        # done again after a deadlock or serialization failure, a few times, and then answered
        # 503 `busy`: never a 500.
        links, charged, result = await retrying(conn, opening)
    period = month
    if result.reservation_id is None:
        code = next(link.code for link in links if link.tenant_id == result.short_tenant)
        raise QuotaExhausted(
            f"quota exhausted at {code} for {period_text(period)}",
            tenant=code,
            period=period_text(period),
            limit=result.short_limit,
            used=result.short_used,
            reserved=result.short_reserved,
            allocated=result.short_allocated,
            policy=result.short_policy,
            requested=amount,
        )
    assert result.expires_at is not None
    return Reservation(
        id=result.reservation_id,
        tenant_id=tenant.id,
        period=period,
        amount=amount,
        accounts=[a for a in charged if a is not None],
        expires_at=result.expires_at,
    )


async def _lock_accounts(
    conn: asyncpg.Connection, reservations: list[ReservationRow]
) -> dict[int, AccountRow]:
    """The accounts the reservations charged, locked in id order."""
    account_ids = sorted({a for r in reservations for a in r.accounts})
    records = await conn.fetch(sql.LOCK_ACCOUNTS, account_ids)
    return {row.id: row for row in (_convert(r, AccountRow) for r in records)}


async def _write_balances(conn: asyncpg.Connection, accounts: dict[int, AccountRow]) -> None:
    changed = list(accounts.values())
    await conn.execute(
        sql.UPDATE_BALANCES,
        [a.id for a in changed],
        [a.used for a in changed],
        [a.reserved for a in changed],
    )


async def _settle(
    conn: asyncpg.Connection,
    reservations: list[ReservationRow],
    outcome: str,
    actor: str,
    posted: dict[int, int] | None = None,
) -> list[int]:
    """Post, void or expire pending reservations (already locked); returns their ids."""
    if not reservations:
        return []
    accounts = await _lock_accounts(conn, reservations)
    ledger = _Ledger(cause="", actor=actor)
    statuses: list[str] = []
    amounts: list[int | None] = []
    for reservation in reservations:
        if outcome == "post" and reservation.left != reservation.amount:
            raise Invalid(f"reservation {reservation.id} is being settled in parts")
        used = (posted or {}).get(reservation.id, reservation.amount) if outcome == "post" else 0
        if not 0 <= used <= reservation.amount:
            raise Invalid(f"cannot post {used} of a reservation of {reservation.amount}")
        ledger.cause = reservation.cause
        for account_id in reservation.accounts:
            before = accounts[account_id]
            after = msgspec.structs.replace(
                before, used=before.used + used, reserved=before.reserved - reservation.left
            )
            accounts[account_id] = after
            amount = used if outcome == "post" else reservation.left
            ledger.entry(outcome, amount, before, after, reservation.id)
        statuses.append({"post": "posted", "void": "voided", "expire": "expired"}[outcome])
        amounts.append(used if outcome == "post" else None)
    await _write_balances(conn, accounts)
    await ledger.write(conn)
    ids = [r.id for r in reservations]
    await conn.execute(sql.SETTLE, ids, statuses, amounts)
    return ids


async def settle_parts(
    conn: asyncpg.Connection,
    parts: Mapping[int, tuple[int, int]],
    actor: str,
    *,
    extend: Mapping[int, float] | None = None,
) -> None:
    """Settle pieces of reservations: `{reservation id: (segments used, segments released)}`.

    A send has one reservation; its delivery batches each use what the gateways took and
    release what failed or expired. The reservation is settled (posted, or voided if nothing
    was used) when nothing is left. Pieces of a reservation no longer pending (it expired) are
    dropped: its segments were already released.

    Reservations in `extend` ({id: seconds}) still pending afterwards last at least that long
    from now: segments that went to a gateway billing on delivery wait in it while their
    receipts may come (expired sooner, a late receipt's use would be dropped while billing
    counts it). They are locked with the others, in the one order.
    """
    extend = extend or {}
    live = {r: p for r, p in parts.items() if p[0] > 0 or p[1] > 0}
    live |= {r: parts.get(r, (0, 0)) for r in extend}
    if live:
        ids = sorted(live)
        await conn.execute(
            sql.SETTLE_PARTS,
            ids,
            [live[r][0] for r in ids],
            [live[r][1] for r in ids],
            actor,
        )
    for reservation, seconds in extend.items():
        await conn.execute(sql.EXTEND_EXPIRY, [reservation], seconds)


async def _lock_pending(conn: asyncpg.Connection, ids: Iterable[int]) -> list[ReservationRow]:
    records = await conn.fetch(sql.LOCK_PENDING, list(ids))
    return [_convert(r, ReservationRow) for r in records]


async def post(conn: asyncpg.Connection, reservation_id: int, actual: int, actor: str) -> bool:
    """Use `actual` (≤ reserved) of a reservation and release the rest. False if already settled."""
    pending = await _lock_pending(conn, [reservation_id])
    return bool(await _settle(conn, pending, "post", actor, {reservation_id: actual}))


async def post_many(conn: asyncpg.Connection, actual: dict[int, int], actor: str) -> list[int]:
    """Post several reservations at once (a delivery batch); returns those that were pending."""
    pending = await _lock_pending(conn, actual)
    return await _settle(conn, pending, "post", actor, actual)


async def void(conn: asyncpg.Connection, reservation_id: int, actor: str) -> bool:
    """Release a whole reservation. False if it was already settled."""
    pending = await _lock_pending(conn, [reservation_id])
    return bool(await _settle(conn, pending, "void", actor))


async def set_expiry(
    conn: asyncpg.Connection, reservation_ids: list[int], seconds: float | None
) -> None:
    """Pending reservations among these expire `seconds` from now, or never (None): a send that
    waits on a suspension keeps its quota until it may go, then has a fresh timeout."""
    await conn.execute(sql.SET_EXPIRY, reservation_ids, seconds)


async def return_due_leases(conn: asyncpg.Connection, batch: int = 500) -> int:
    """Return up to `batch` leases past their time or month (what they hold undrawn goes back
    to the pooled ancestors); returns how many."""
    due = [r["id"] for r in await conn.fetch(sql.DUE_LEASES, batch)]
    if not due:
        return 0
    returned: int = await conn.fetchval(sql.RETURN_LEASES, due, "system:lease")
    return returned


async def expire_due(conn: asyncpg.Connection, batch: int = 500) -> int:
    """Expire up to `batch` reservations past their timeout; returns how many."""
    records = await conn.fetch(sql.LOCK_EXPIRED, batch)
    due = [_convert(r, ReservationRow) for r in records]
    return len(await _settle(conn, due, "expire", "system:expiry"))


# --- limits and defaults -----------------------------------------------------------------


def _available(account: AccountRow) -> int:
    return max(0, _room(account))


async def _return_leases_in_the_way(
    conn: asyncpg.Connection,
    links: list[ChainLink],
    period: date,
    actor: str,
    limit: int | None,
    policy: str | None,
) -> None:
    """Before a limit is lowered (or a policy tightened) below what the account holds, return
    the leases its descendants hold on it, if that makes the change fit: what they leased
    undrawn is the account's again, so only what it really holds (use, reservations and, when
    strict, what it granted) refuses the change. A change that would be refused all the same
    returns nothing. Nothing is locked before: the leases' accounts, the tenant's and its
    parent's (which set_limit locks next) are locked root first, as everywhere."""
    tenant_id = links[-1].tenant_id
    account: AccountRow = _convert(await conn.fetchrow(sql.ACCOUNT, tenant_id, period), AccountRow)
    new_policy = policy or account.policy
    if account.reserved == 0 or (account.policy == "strict" and new_policy == "pooled"):
        return  # nothing leased on it, or a loosening set_limit refuses anyway
    new_limit = account.limit_segments if limit is None else limit
    changed = msgspec.structs.replace(account, limit_segments=new_limit, policy=new_policy)
    if _room(changed) >= 0:
        return
    accounts = {r[0] for r in await conn.fetch(sql.LEASED_ON, account.id)}
    if not accounts:
        return
    accounts |= {link.account_id for link in links[-2:] if link.account_id is not None}
    locked = [
        _convert(r, AccountRow) for r in await conn.fetch(sql.LOCK_ACCOUNTS, sorted(accounts))
    ]
    own = next(a for a in locked if a.id == account.id)
    parent = next((a for a in locked if len(links) > 1 and a.id == links[-2].account_id), None)
    if parent is not None and not _grant_fits(parent, new_limit - own.limit_segments):
        return  # a raise its strict parent cannot grant: refused anyway
    undrawn = await conn.fetchval(sql.UNDRAWN_ON, account.id, sorted(accounts))
    after = msgspec.structs.replace(
        own, limit_segments=new_limit, policy=new_policy, reserved=own.reserved - undrawn
    )
    if undrawn and _room(after) >= 0:
        await conn.fetchval(sql.RETURN_LEASES_ON, account.id, sorted(accounts), actor)


def _room(account: AccountRow) -> int:
    """What an account may still reserve or grant; negative when it holds more than its limit."""
    held = account.used + account.reserved
    if account.policy == "strict":
        held += account.allocated
    return account.limit_segments - held


async def set_limit(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    period: date,
    actor: str,
    *,
    limit: int | None = None,
    policy: str | None = None,
) -> LimitChange:
    """Set a tenant's limit and/or policy for a month, opening the account if needed; the
    account as it was (once open) and as it is now."""
    links, just_opened = await _opened_chain(conn, tenant, period, actor)
    if not just_opened:
        await _return_leases_in_the_way(conn, links, period, actor, limit, policy)
    parent = links[-2] if len(links) > 1 else None
    parent_before: AccountRow | None = None
    if parent is not None:
        parent_before = _convert(
            await conn.fetchrow(sql.LOCK_ACCOUNT, parent.tenant_id, period), AccountRow
        )
    before: AccountRow = _convert(
        await conn.fetchrow(sql.LOCK_ACCOUNT, tenant.id, period), AccountRow
    )
    new_limit = before.limit_segments if limit is None else limit
    new_policy = policy or before.policy
    if not just_opened and before.policy == "strict" and new_policy == "pooled":
        raise Conflict(
            "an open account's policy can only tighten (pooled → strict); set `pooled` for a "
            "month that has not opened yet, or as the default policy",
            tenant=tenant.code,
            period=period_text(period),
        )
    held = before.used + before.reserved + (before.allocated if new_policy == "strict" else 0)
    if new_limit < held:
        raise Conflict(
            f"limit {new_limit} is below what {tenant.code} already holds ({held})",
            tenant=tenant.code,
            period=period_text(period),
            limit=new_limit,
            used=before.used,
            reserved=before.reserved,
            allocated=before.allocated if new_policy == "strict" else 0,
        )
    delta = new_limit - before.limit_segments
    if parent is not None and parent_before is not None:
        _check_grant(tenant, parent, parent_before, delta, period)
    ledger = _Ledger(cause=f"limit:{tenant.code}:{period_text(period)}", actor=actor)
    after = msgspec.structs.replace(before, limit_segments=new_limit, policy=new_policy)
    if after != before:
        await _save(conn, after)
        if delta:
            ledger.entry("limit", delta, before, after)
        if new_policy != before.policy:
            ledger.entry(
                "policy", 0, msgspec.structs.replace(before, limit_segments=new_limit), after
            )
    if parent_before is not None and delta:
        parent_after = msgspec.structs.replace(
            parent_before, allocated=parent_before.allocated + delta
        )
        await _save(conn, parent_after)
        ledger.entry("allocate", delta, parent_before, parent_after)
    await ledger.write(conn)
    await conn.execute(sql.RECORD_THRESHOLDS, [after.id])
    return LimitChange(before=before, after=after)


def _check_grant(
    tenant: TenantRow, parent: ChainLink, account: AccountRow, delta: int, period: date
) -> None:
    """Refuse raising `tenant` by `delta` when its strict parent has not that much to grant."""
    if not _grant_fits(account, delta):
        room = _available(account)
        raise Conflict(
            f"{parent.code} is strict and has {room} segments left to grant; "
            f"raising {tenant.code} by {delta} does not fit",
            tenant=parent.code,
            period=period_text(period),
            limit=account.limit_segments,
            allocated=account.allocated,
            used=account.used,
            reserved=account.reserved,
            requested=delta,
        )


def _grant_fits(parent: AccountRow, delta: int) -> bool:
    """Whether `parent` can grant a child `delta` more (a pooled parent grants anything)."""
    return parent.policy != "strict" or delta <= _available(parent)


class LimitChange(msgspec.Struct, frozen=True):
    before: AccountRow
    after: AccountRow


def limit_logged(tenant: TenantRow, change: LimitChange) -> dict[str, Any]:
    """What the operation log records of a limit or policy change (hub.oplog.record's keywords):
    `await oplog.record(conn, who, "quota.set", **quota.limit_logged(tenant, change))`."""
    return {
        "tenant_id": tenant.id,
        "object": f"quota:{tenant.code}:{period_text(change.after.period)}",
        "before": {"limit": change.before.limit_segments, "policy": change.before.policy},
        "after": {"limit": change.after.limit_segments, "policy": change.after.policy},
    }


def defaults_logged(tenant: TenantRow, before: Defaults, after: Defaults) -> dict[str, Any]:
    """The same for a tenant's monthly defaults (`quota.default`)."""
    return {
        "tenant_id": tenant.id,
        "object": f"quota:{tenant.code}:default",
        "before": {"monthly_limit": before.monthly_limit, "policy": before.policy},
        "after": {"monthly_limit": after.monthly_limit, "policy": after.policy},
    }


async def set_defaults(
    conn: asyncpg.Connection, tenant: TenantRow, monthly_limit: int | None, policy: str, actor: str
) -> Defaults:
    await conn.execute(sql.SET_DEFAULTS, tenant.id, monthly_limit, policy, actor)
    return Defaults(tenant=tenant.code, monthly_limit=monthly_limit, policy=policy)


async def get_defaults(conn: asyncpg.Connection, tenant: TenantRow) -> Defaults:
    row = await conn.fetchrow(sql.DEFAULTS, tenant.id)
    if row is None:
        return Defaults(tenant=tenant.code, monthly_limit=None, policy="strict")
    return Defaults(tenant=tenant.code, monthly_limit=row["monthly_limit"], policy=row["policy"])


# --- reads -------------------------------------------------------------------------------


def _child(account: sql.AccountView, subtree: SubtreeUsage) -> ChildQuota:
    """A child's row in its parent's view: its account read as its own view reads it."""
    return ChildQuota(
        code=account.code,
        name=account.name,
        opened=account.opened,
        policy=account.policy,
        limit=account.limit_segments,
        used=account.used,
        reserved=account.reserved,
        allocated=account.allocated,
        available=_available(account),
        subtree=subtree,
    )


async def subtree_use(
    conn: asyncpg.Connection, top: TenantRow, period: date
) -> dict[str, SubtreeUsage]:
    """What each branch below `top` has used and holds reserved in the month, by the child it
    hangs from ('' for `top`'s own reservations): sql.USED_OF and sql.RESERVED_OF, the
    definitions the audit checks, so every view agrees with it while sends are in flight."""
    rows = await conn.fetch(sql.SUBTREE_USE, top.path, period)
    return {
        r.child: SubtreeUsage(used=r.used, reserved=r.reserved)
        for r in (_convert(record, sql.BranchUse) for record in rows)
    }


async def get_quota(conn: asyncpg.Connection, tenant: TenantRow, period: date) -> Quota:
    """The account (or what it would open with), the subtree's real use, and each child, whose
    account is read the same way (sql.AccountView, `_available`): a child's row says what the
    child's own view says."""
    own: sql.AccountView = _convert(
        await conn.fetchrow(sql.OWN_ACCOUNT, tenant.id, period), sql.AccountView
    )
    alerts = [
        Alert(threshold=r["threshold"], reached_at=r["created_at"])
        for r in await conn.fetch(sql.THRESHOLDS_REACHED, own.id)
    ]
    branches = await subtree_use(conn, tenant, period)
    nothing = SubtreeUsage(used=0, reserved=0)
    children = [
        _child(child, branches.get(child.code, nothing))
        for child in (
            _convert(r, sql.AccountView) for r in await conn.fetch(sql.CHILDREN, tenant.id, period)
        )
    ]
    return Quota(
        tenant=tenant.code,
        period=period_text(period),
        opened=own.opened,
        policy=own.policy,
        limit=own.limit_segments,
        used=own.used,
        reserved=own.reserved,
        allocated=own.allocated,
        available=_available(own),
        subtree=SubtreeUsage(
            used=sum(b.used for b in branches.values()),
            reserved=sum(b.reserved for b in branches.values()),
        ),
        alerts=alerts,
        children=children,
    )


async def entries_page(
    conn: asyncpg.Connection, tenant: TenantRow, period: date, after: int, limit: int
) -> EntryPage:
    account = await conn.fetchrow(sql.ACCOUNT, tenant.id, period)
    if account is None:
        return EntryPage(items=[], next_after=None)
    records = await conn.fetch(sql.ENTRIES_PAGE, account["id"], after, limit + 1)
    rows = [_convert(r, Entry) for r in records[:limit]]
    more = len(records) > limit
    return EntryPage(items=rows, next_after=rows[-1].id if more and rows else None)


async def latest_entries(
    conn: asyncpg.Connection, tenant: TenantRow, period: date, limit: int
) -> list[Entry]:
    """The account's latest entries for the month, newest first (none if it is not open)."""
    return [
        _convert(r, Entry) for r in await conn.fetch(sql.LATEST_ENTRIES, tenant.id, period, limit)
    ]


# --- audit -------------------------------------------------------------------------------


# kind → the (limit, used, reserved, allocated) change an entry of that kind makes
_DELTAS: dict[str, Callable[[AuditEntryRow], tuple[int, int, int, int]]] = {
    "open": lambda e: (e.amount, 0, 0, 0),
    "limit": lambda e: (e.amount, 0, 0, 0),
    "allocate": lambda e: (0, 0, 0, e.amount),
    "policy": lambda e: (0, 0, 0, 0),
    "reserve": lambda e: (0, 0, e.amount, 0),
    "use": lambda e: (0, e.amount, -e.amount, 0),
    "post": lambda e: (0, e.amount, -(e.reservation_amount or 0), 0),
    "void": lambda e: (0, 0, -e.amount, 0),
    "expire": lambda e: (0, 0, -e.amount, 0),
    # A pooled ancestor's share of a tenant's lease (hub/quota/sql/lease.sql): held when taken,
    # and what was not drawn released when returned.
    "lease": lambda e: (0, 0, e.amount, 0),
    "return": lambda e: (0, 0, -e.amount, 0),
}


def _replay(account: AuditAccountRow, entries: list[AuditEntryRow]) -> list[str]:
    """Rebuild an account's balances from its entries; every step must chain and add up."""
    problems = []
    state = (0, 0, 0, 0)
    for e in entries:
        before = (e.limit_before, e.used_before, e.reserved_before, e.allocated_before)
        after = (e.limit_after, e.used_after, e.reserved_after, e.allocated_after)
        if before != state:
            problems.append(f"{account.code}: entry {e.id} starts at {before}, ledger at {state}")
        delta = _DELTAS[e.kind](e)
        if tuple(b + d for b, d in zip(before, delta, strict=True)) != after:
            problems.append(f"{account.code}: entry {e.id} ({e.kind} {e.amount}) does not add up")
        state = after
    stored = (account.limit_segments, account.used, account.reserved, account.allocated)
    if state != stored:
        problems.append(f"{account.code}: entries rebuild {state}, account holds {stored}")
    return problems


def _invariants(account: AuditAccountRow) -> list[str]:
    problems = []
    if account.used + account.reserved > account.limit_segments:
        problems.append(f"{account.code}: used + reserved exceeds the limit")
    held = account.used + account.reserved + account.allocated
    if account.policy == "strict" and held > account.limit_segments:
        problems.append(
            f"{account.code}: strict, but used + reserved + allocated exceeds the limit"
        )
    return problems


async def audit(conn: asyncpg.Connection, period: date) -> tuple[int, list[str]]:
    """Check a month's ledger; returns (accounts checked, problems found). It is read in one
    snapshot (a repeatable-read transaction of its own, unless the caller's): read table by
    table, a settlement committed between two reads showed as a mismatch."""
    if conn.is_in_transaction():
        return await _audit(conn, period)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _audit(conn, period)


async def _audit(conn: asyncpg.Connection, period: date) -> tuple[int, list[str]]:
    accounts = [
        msgspec.convert(dict(r.items()), AuditAccountRow)
        for r in await conn.fetch(sql.PERIOD_ACCOUNTS, period)
    ]
    entries: dict[int, list[AuditEntryRow]] = {}
    for r in await conn.fetch(sql.PERIOD_ENTRIES, period):
        entry = msgspec.convert(dict(r.items()), AuditEntryRow)
        entries.setdefault(entry.account_id, []).append(entry)
    problems: list[str] = []
    children_limits: dict[int, int] = {}
    for account in accounts:
        problems += _replay(account, entries.get(account.id, []))
        problems += _invariants(account)
        if account.parent_tenant_id is not None:
            children_limits[account.parent_tenant_id] = (
                children_limits.get(account.parent_tenant_id, 0) + account.limit_segments
            )
    for account in accounts:
        if account.allocated != children_limits.get(account.tenant_id, 0):
            problems.append(
                f"{account.code}: allocated {account.allocated} is not the sum of "
                f"its children's limits {children_limits.get(account.tenant_id, 0)}"
            )
    problems += await _held_as_reserved(conn, period, {a.id: a for a in accounts})
    for r in await conn.fetch(sql.SUBTREE_TOTALS, period):
        if r["total"] > r["limit_segments"]:
            problems.append(
                f"{r['code']}: its subtree holds {r['total']} over its limit {r['limit_segments']}"
            )
    return len(accounts), problems


async def _held_as_reserved(
    conn: asyncpg.Connection, period: date, by_id: dict[int, AuditAccountRow]
) -> list[str]:
    """Every account's balances against its reservations and the leases held on it, and every
    lease's `drawn` against the reservations drawn from it."""
    problems = []
    for r in await conn.fetch(sql.RESERVATION_TOTALS, period):
        account = by_id[r["account_id"]]
        if (account.used, account.reserved) != (r["used"], r["reserved"]):
            problems.append(
                f"{account.code}: holds used {account.used} reserved "
                f"{account.reserved}; its reservations say {r['used']}/{r['reserved']}"
            )
    for r in await conn.fetch(sql.LEASES_MISDRAWN, period):
        problems.append(f"lease {r['id']}: drawn {r['drawn']}, its reservations drew {r['draws']}")
    return problems


async def alerts_standing(conn: asyncpg.Connection, period: date) -> dict[int, int]:
    """Per alert threshold (80 and 100 % of the limit): how many tenants' accounts of the month
    reached it and still stand there (sql.ALERTS_STANDING)."""
    counts = dict.fromkeys(ALERT_THRESHOLDS, 0)
    counts.update({r["threshold"]: r["n"] for r in await conn.fetch(sql.ALERTS_STANDING, period)})
    return counts
