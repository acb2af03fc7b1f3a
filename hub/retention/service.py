"""Retention: one run computes one Policy (every cutoff, from the operator's settings and the
tenants' own shorter periods), then runs its steps in order. A step is
`async (db, policy, dry_run) -> list[Gone]`: it erases (or, dry, counts) what its tables hold
past their cutoffs, a batch per transaction, and answers what went. The messages table's step
is hub.messages.retention's; the others are the sweeps below (hub.retention.repository).

Also here: a tenant's own period (`period_of`, `set_period`), at most the operator's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import asyncpg
import msgspec

from hub.db import Database
from hub.errors import Invalid
from hub.messages import retention as messages
from hub.oplog import service as oplog
from hub.retention import repository as sql
from hub.retention.repository import PeriodRow, Sweep
from hub.retention.schemas import Gone, Policy, RetentionSetting, RetentionView
from hub.settings import RetentionSettings, Settings
from tenants import service as tenants
from tenants.repository import TenantRow

Step = Callable[[Database, Policy, bool], Awaitable[list[Gone]]]
RUN_ACTOR = "system:retention"


def _days(days: int) -> timedelta:
    return timedelta(days=days)


async def policy(conn: asyncpg.Connection, config: RetentionSettings, now: datetime) -> Policy:
    """Every cutoff of a run at `now`: the operator's periods, and each tenant's own shorter
    one for its messages (its own, or the shortest an ancestor set for its subtree)."""
    shorter = {
        r["tenant_id"]: now - _days(r["days"])
        for r in await conn.fetch(sql.PERIODS_IN_FORCE)
        if r["days"] < config.messages_days
    }
    return Policy(
        now=now,
        messages_before=now - _days(config.messages_days),
        tenants_before=shorter,
        inbound_before=now - _days(config.inbound_days),
        resubscriptions_before=now - _days(config.resubscriptions_days),
        webhook_deliveries_before=now - _days(config.webhook_deliveries_days),
        idempotency_keys_before=now - _days(config.idempotency_keys_days),
        unmatched_receipts_before=now - _days(config.unmatched_receipts_days),
        outbox_before=now - _days(config.outbox_days),
        rejects_before=now - _days(config.rejects_days),
        sessions_before=now - _days(config.sessions_days),
        user_codes_before=now - _days(config.user_codes_days),
        user_invites_before=now - _days(config.user_invites_days),
        campaign_deliveries_before=now - _days(config.campaign_deliveries_days),
        batch=config.batch,
    )


async def sweep(
    db: Database,
    what: Sweep,
    cutoff: datetime | None,
    shorter: dict[int, datetime],
    batch: int,
    dry_run: bool,
) -> list[Gone]:
    """Erase what `what` matches before `cutoff` (or a tenant's `shorter` one, where the sweep
    heeds them), `batch` rows per committed transaction, until a batch comes back short; dry:
    count it. No cutoff: nothing."""
    if cutoff is None:
        return []
    tenants, befores = list(shorter), list(shorter.values())
    if dry_run:
        async with db.acquire() as conn:
            rows = int(await conn.fetchval(what.count, cutoff, tenants, befores))
        return [Gone(what=what.shown, how=what.how, rows=rows)]
    total, last = 0, 0
    while True:
        args = [cutoff, tenants, befores, batch] + ([] if what.key is None else [last])
        async with db.acquire() as conn, conn.transaction():
            done = await conn.fetchrow(what.batch, *args)
        assert done is not None
        total += done["n"]
        last = done["last"]
        if done["n"] < batch:
            return [Gone(what=what.shown, how=what.how, rows=total)]


def _step(what: Sweep, cutoff: Callable[[Policy], datetime | None]) -> Step:
    async def step(db: Database, policy: Policy, dry_run: bool) -> list[Gone]:
        return await sweep(db, what, cutoff(policy), policy.tenants_before, policy.batch, dry_run)

    step.__name__ = f"sweep_{what.shown}"
    return step


# In order: webhook pushes before the replies they carry; sessions before the codes bound to
# them. The messages step goes first.
STEPS: list[Step] = [
    messages.erase_old,  # phones and bodies of messages, their months' partitions
    _step(sql.WEBHOOK_DELIVERIES, lambda p: p.webhook_deliveries_before),
    _step(sql.INBOUND, lambda p: p.inbound_before),
    _step(sql.REJECTS, lambda p: p.rejects_before),
    _step(sql.MESSAGE_REFERENCES, lambda p: p.messages_before),
    _step(sql.OUTBOX, lambda p: p.outbox_before),
    _step(sql.OUTBOX_PENDING, lambda p: p.outbox_before),
    _step(sql.IDEMPOTENCY_KEYS, lambda p: p.idempotency_keys_before),
    _step(sql.UNMATCHED_RECEIPTS, lambda p: p.unmatched_receipts_before),
    _step(sql.RESUBSCRIPTIONS, lambda p: p.resubscriptions_before),
    _step(sql.SESSIONS, lambda p: p.sessions_before),
    _step(sql.USER_CODES, lambda p: p.user_codes_before),
    _step(sql.USER_INVITES, lambda p: p.user_invites_before),
    _step(sql.CAMPAIGN_DELIVERIES, lambda p: p.campaign_deliveries_before),
]


async def run(
    db: Database, settings: Settings, now: datetime, dry_run: bool, *, actor: str = RUN_ACTOR
) -> list[Gone]:
    """One retention run at `now`: what went (dry: what would go)."""
    async with db.acquire() as conn:
        chosen = await policy(conn, settings.retention, now)
    return await carry_out(db, chosen, dry_run, actor=actor)


async def carry_out(
    db: Database,
    chosen: Policy,
    dry_run: bool,
    *,
    actor: str = RUN_ACTOR,
    steps: list[Step] | None = None,
) -> list[Gone]:
    """Run the steps under `chosen`. A real run leaves one operation-log entry at the root
    tenant: the cutoffs and the counts, nothing else."""
    gone: list[Gone] = []
    for step in STEPS if steps is None else steps:
        gone.extend(await step(db, chosen, dry_run))
    if not dry_run:
        async with db.acquire() as conn, conn.transaction():
            root = await tenants.ensure_root(conn)
            await oplog.record(
                conn,
                actor,
                "retention.run",
                tenant_id=root.id,
                detail={"policy": _cutoffs(chosen), "gone": gone},
            )
    return gone


def _cutoffs(chosen: Policy) -> dict[str, object]:
    """The policy as the log keeps it: each cutoff, and how many tenants chose shorter."""
    fields = msgspec.structs.asdict(chosen)
    fields["tenants_before"] = len(chosen.tenants_before)
    return fields


# --- a tenant's own period ----------------------------------------------------------------


async def period_of(
    conn: asyncpg.Connection, tenant: TenantRow, config: RetentionSettings
) -> RetentionView:
    """The period in force for `tenant`'s messages, and where it comes from."""
    rows = [
        msgspec.convert(dict(r.items()), PeriodRow)
        for r in await conn.fetch(sql.PERIODS_OVER, tenant.id, tenant.path)
    ]
    own = next((r for r in rows if r.own), None)
    days, source = config.messages_days, "hub"
    if rows:
        shortest = min(rows, key=lambda r: (r.days, not r.own))
        if shortest.days < days:
            days, source = shortest.days, "own" if shortest.own else "ancestor"
    return RetentionView(
        tenant=tenant.code,
        messages_days=days,
        source=source,  # type: ignore[arg-type]  # one of the Literal's words
        own_days=own.days if own else None,
        subtree=own.subtree if own else False,
        max_days=config.messages_days,
    )


async def set_period(
    conn: asyncpg.Connection,
    tenant: TenantRow,
    data: RetentionSetting,
    actor: str,
    config: RetentionSettings,
) -> None:
    """Set (or, null, drop) `tenant`'s own period: never longer than the operator's."""
    if data.messages_days is None:
        await conn.execute(sql.DROP_PERIOD, tenant.id)
        return
    if data.messages_days > config.messages_days:
        raise Invalid(
            f"messages_days may be at most {config.messages_days} (the hub's own period)",
            max_days=config.messages_days,
            fields=[
                {
                    "key": "messages_days",
                    "source": "body",
                    "message": f"at most {config.messages_days}",
                }
            ],
        )
    await conn.execute(sql.SET_PERIOD, tenant.id, data.messages_days, data.subtree, actor)
