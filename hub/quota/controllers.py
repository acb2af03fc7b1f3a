"""Quota routes: read and set a tenant's monthly quota, its defaults, and its entry log.

A tenant reads its own quota and its subtree's; only an ancestor sets a tenant's limit or
defaults. A tenant may choose its own policy (how its children are granted).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from litestar import Controller, get, put
from litestar.params import JSONBody, PathParameter, QueryParameter

from hub.calendar import PERIOD_PATTERN, parse_period
from hub.errors import Forbidden, Invalid, error_responses
from hub.oplog import service as oplog
from hub.quota import service
from hub.quota.schemas import (
    Defaults,
    EntryPage,
    Quota,
    SetDefaults,
    SetQuota,
)
from tenants import service as tenants
from tenants.auth import require
from tenants.controllers import AuthedRequest, Code, Conn
from tenants.repository import TenantRow
from tenants.scopes import Scope
from tenants.service import Principal

Period = Annotated[str, PathParameter(pattern=PERIOD_PATTERN, description="YYYY-MM")]
After = Annotated[
    int, QueryParameter(ge=0, le=2**53, description="Cursor: `next_after` of the last page")
]
Limit = Annotated[int, QueryParameter(ge=1, le=1000, description="Page size")]


def _period(text: str) -> date:
    period = parse_period(text)
    if period is None:
        raise Invalid(
            "period must be a month, YYYY-MM",
            fields=[{"key": "period", "message": "expected YYYY-MM", "source": "path"}],
        )
    return period


def _actor(who: Principal) -> str:
    return who.actor


def _only_ancestors(who: Principal, tenant: TenantRow, what: str) -> None:
    if tenant.id == who.tenant_id:
        raise Forbidden(f"a tenant cannot set its own {what}; its parent does")


class QuotaController(Controller):
    path = "/v1/tenants/{code:str}/quota"
    tags = ["quota"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get(
        "/default",
        guards=[require(Scope.QUOTA_READ)],
        responses=error_responses(404),
        summary="What the tenant's account opens with each month",
    )
    async def get_defaults(self, request: AuthedRequest, conn: Conn, code: Code) -> Defaults:
        tenant = await tenants.get_visible(conn, request.user, code)
        return await service.get_defaults(conn, tenant)

    @put(
        "/default",
        guards=[require(Scope.QUOTA_WRITE)],
        responses=error_responses(404, 413, 422),
        summary="Set a descendant's monthly default limit and policy (opens next months lazily)",
    )
    async def set_defaults(
        self, request: AuthedRequest, conn: Conn, code: Code, data: JSONBody[SetDefaults]
    ) -> Defaults:
        tenant = await tenants.get_visible(conn, request.user, code)
        _only_ancestors(request.user, tenant, "default limit")
        before = await service.get_defaults(conn, tenant)
        after = await service.set_defaults(
            conn, tenant, data.monthly_limit, data.policy, _actor(request.user)
        )
        logged = service.defaults_logged(tenant, before, after)
        await oplog.record(conn, request.user, "quota.default", **logged)
        return after

    @get(
        "/{period:str}",
        guards=[require(Scope.QUOTA_READ)],
        responses=error_responses(404, 422),
        summary="A tenant's quota for a month, its subtree's real use, and each child's quota",
    )
    async def get_quota(
        self, request: AuthedRequest, conn: Conn, code: Code, period: Period
    ) -> Quota:
        month = _period(period)
        tenant = await tenants.get_visible(conn, request.user, code)
        return await service.get_quota(conn, tenant, month)

    @put(
        "/{period:str}",
        guards=[require(Scope.QUOTA_WRITE)],
        responses=error_responses(404, 409, 413, 422),
        summary="Set a descendant's limit (and policy) for a month; or a tenant's own policy",
    )
    async def set_quota(
        self,
        request: AuthedRequest,
        conn: Conn,
        code: Code,
        period: Period,
        data: JSONBody[SetQuota],
    ) -> Quota:
        month = _period(period)
        tenant = await tenants.get_visible(conn, request.user, code)
        if data.limit is not None:
            _only_ancestors(request.user, tenant, "limit")
        change = await service.set_limit(
            conn, tenant, month, _actor(request.user), limit=data.limit, policy=data.policy
        )
        await oplog.record(conn, request.user, "quota.set", **service.limit_logged(tenant, change))
        return await service.get_quota(conn, tenant, month)

    @get(
        "/{period:str}/entries",
        guards=[require(Scope.QUOTA_READ)],
        responses=error_responses(404, 422),
        summary="The account's entry log for a month, oldest first",
    )
    async def entries(
        self,
        request: AuthedRequest,
        conn: Conn,
        code: Code,
        period: Period,
        after: After = 0,
        limit: Limit = 100,
    ) -> EntryPage:
        month = _period(period)
        tenant = await tenants.get_visible(conn, request.user, code)
        return await service.entries_page(conn, tenant, month, after, limit)
