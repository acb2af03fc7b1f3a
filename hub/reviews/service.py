"""Review rules (审核): which sends wait for a reviewer, and the queue a reviewer decides.

A tenant's admin (tenants:write at the tenant or above it) sets the tenant's rule: `none`,
`free_text` (every send whose body is not an approved template) or `above` N recipients. A
rule marked `subtree` binds every tenant below as well: a province that wants its counties'
notices reviewed says so once, and a county's own rule cannot loosen it. A send is caught when
any rule binding it catches it (the strictest wins). What happens to a caught send, and the
decisions on it, belong to the send (hub.messages.review); this domain only answers "is it
caught, and why" and lists what waits.
"""

from __future__ import annotations

import asyncpg
import msgspec

from hub.errors import Forbidden, Invalid
from hub.reviews import repository as sql
from hub.reviews.schemas import ReviewItem, ReviewPage, Rule, RuleSetting, RuleView, Waiting
from tenants.repository import TenantRow
from tenants.service import Principal, ancestry_paths


def _rules(records: list[asyncpg.Record]) -> list[Rule]:
    return [msgspec.convert(dict(r.items()), Rule) for r in records]


async def binding(conn: asyncpg.Connection, tenant: TenantRow) -> list[Rule]:
    """The rules (other than `none`) that bind the tenant's sends, root first."""
    return _rules(await conn.fetch(sql.BINDING, tenant.path, ancestry_paths(tenant.path)))


def catches(rules: list[Rule], free_text: bool, recipients: int) -> str | None:
    """Why these rules catch a send (`free_text`, or `above:<N>` with the lowest N exceeded),
    or None: it goes without review."""
    if free_text and any(r.rule == "free_text" for r in rules):
        return "free_text"
    thresholds = [r.above for r in rules if r.rule == "above" and r.above is not None]
    if thresholds and recipients > min(thresholds):
        return f"above:{min(thresholds)}"
    return None


async def caught(
    conn: asyncpg.Connection, tenant: TenantRow, free_text: bool, recipients: int
) -> str | None:
    """`catches` for a send of `tenant`: nothing is read unless a rule binds it."""
    return catches(await binding(conn, tenant), free_text, recipients)


async def rule_view(conn: asyncpg.Connection, tenant: TenantRow) -> RuleView:
    own = await conn.fetchrow(sql.OWN, tenant.id)
    mine = Rule(tenant.code, "none", None, False) if own is None else _rules([own])[0]
    return RuleView(
        tenant=tenant.code,
        rule=mine.rule,
        above=mine.above,
        subtree=mine.subtree,
        binding=await binding(conn, tenant),
    )


async def set_rule(
    conn: asyncpg.Connection, who: Principal, tenant: TenantRow, setting: RuleSetting
) -> None:
    if (setting.rule == "above") != (setting.above is not None):
        raise Invalid(
            "`above` is the recipient threshold of the rule `above`, and given only with it",
            fields=[
                {"key": "above", "message": "only and always with rule=above", "source": "body"}
            ],
        )
    set_it = await conn.fetchval(
        sql.SET,
        tenant.id,
        setting.rule,
        setting.above,
        setting.subtree,
        who.actor,
        who.tenant_path,
        tenant.path,
    )
    if set_it is None:
        raise Forbidden(
            f"the review rule of {tenant.code} was set by a tenant above yours: only that "
            "tenant, or one above it, may change it"
        )


async def queue(
    conn: asyncpg.Connection,
    who: Principal,
    waiting: Waiting,
    tenant: TenantRow | None,
    after: int,
    limit: int,
) -> ReviewPage:
    """A page of the sends of the caller's subtree (or of `tenant`'s, within it) waiting for a
    reviewer; never the caller's own (it may not decide them)."""
    records = await conn.fetch(
        sql.QUEUE,
        who.tenant_path,
        who.actor,
        waiting,
        tenant.path if tenant else None,
        after,
        limit + 1,
    )
    items = [msgspec.convert(dict(r.items()), ReviewItem) for r in records[:limit]]
    more = len(records) > limit
    return ReviewPage(items=items, next_after=items[-1].id if more and items else None)
