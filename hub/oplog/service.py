"""The operation log: `record` is the one way anything is written to it, in the transaction of
the change it describes (the caller's connection), so a change and its entry commit or roll
back together. Nothing updates or deletes an entry: the table refuses it (migration 0031).

Who: a Principal (`user:<login>` or `key:<prefix>`, its tenant, and the address the request came
from), or a name for what has no principal: `cli:<user>` for the hub command, `system:<what>`
for the hub's own work. Settings are logged with `before` and `after` (never a secret: a
webhook's URL, not its signing secret); anything else about a change goes in `detail`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from hub import wire
from hub.calendar import days_window
from hub.db import fetch_planned
from hub.oplog import repository as sql
from hub.oplog.repository import OperationRow
from hub.oplog.schemas import Filters, Operation, OperationPage
from tenants import service as tenants
from tenants.service import Principal

# Only what a change leaves behind: no filter reaches further than these.


class Actor(msgspec.Struct, frozen=True):
    """Who acted, where no Principal stands for them (signing in and out, the CLI, jobs)."""

    name: str  # `user:<login>`, `key:<prefix>`, `cli:<user>`, `system:<what>`
    tenant_id: int | None = None
    address: str | None = None


async def record(
    conn: asyncpg.Connection,
    by: Principal | Actor | str,
    action: str,
    *,
    tenant_id: int,
    object: str | None = None,  # the log's own word for what was acted on
    before: Any = None,
    after: Any = None,
    detail: Any = None,
) -> None:
    """Append one entry: `by` did `action` (`quota.set`) to `object` (`quota:510104:2027-03`)
    of the tenant `tenant_id`. Values are written as the API writes JSON (hub.wire)."""
    actor_tenant: int | None
    if isinstance(by, Principal):
        actor, actor_tenant, address = by.actor, by.tenant_id, by.address
    elif isinstance(by, Actor):
        actor, actor_tenant, address = by.name, by.tenant_id, by.address
    else:
        actor, actor_tenant, address = by, None, None
    await conn.execute(
        sql.RECORD,
        tenant_id,
        actor,
        actor_tenant,
        address,
        action,
        object,
        _json(before),
        _json(after),
        _json(detail),
    )


class Log:
    """`record` as tenancy's routes are given it (the app's `oplog` dependency), so `tenants`
    never imports `hub` (tenants.oplog.OperationLog)."""

    async def record(
        self,
        conn: asyncpg.Connection,
        by: Principal,
        action: str,
        *,
        tenant_id: int,
        object: str | None = None,
        before: Any = None,
        after: Any = None,
        detail: Any = None,
    ) -> None:
        await record(
            conn,
            by,
            action,
            tenant_id=tenant_id,
            object=object,
            before=before,
            after=after,
            detail=detail,
        )


def _json(value: Any) -> str | None:
    return None if value is None else wire.encode(value).decode()


def window(filters: Filters) -> tuple[datetime, datetime]:
    """The instants the filter's Beijing days cover: [since 00:00, the day after until 00:00)."""
    return days_window(filters.since, filters.until)


async def page(
    conn: asyncpg.Connection, who: Principal, code: str, filters: Filters
) -> OperationPage:
    """A page of the log of `code`, a tenant of the caller's subtree (else 404), newest first."""
    tenant = await tenants.get_visible(conn, who, code)
    start, end = window(filters)
    records = await fetch_planned(
        conn,
        sql.PAGE,
        tenant.id,
        start,
        end,
        filters.actor,
        filters.action,
        filters.after,
        filters.limit + 1,
    )
    items = [_operation(r) for r in records[: filters.limit]]
    more = len(records) > filters.limit
    return OperationPage(items=items, next_after=items[-1].id if more else None)


async def every(
    conn: asyncpg.Connection, tenant_id: int, filters: Filters, batch: int = 1_000
) -> AsyncIterator[list[Operation]]:
    """Every entry the filters select (their `limit` aside), `batch` at a time, newest first,
    for an export. The caller resolved the tenant (get_visible) first."""
    start, end = window(filters)
    after = filters.after
    while True:
        records = await fetch_planned(
            conn, sql.PAGE, tenant_id, start, end, filters.actor, filters.action, after, batch
        )
        if not records:
            return
        items = [_operation(r) for r in records]
        yield items
        if len(records) < batch:
            return
        after = items[-1].id


def _operation(record: asyncpg.Record) -> Operation:
    row = msgspec.convert(dict(record.items()), OperationRow)
    return Operation(
        id=row.id,
        at=row.at,
        tenant=row.tenant,
        actor=row.actor,
        actor_tenant=row.actor_tenant,
        address=row.address,
        action=row.action,
        object=row.object,
        before=_decoded(row.before),
        after=_decoded(row.after),
        detail=_decoded(row.detail),
    )


def _decoded(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)
