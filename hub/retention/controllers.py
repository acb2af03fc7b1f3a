"""A tenant's own retention period: GET/PUT /v1/tenants/{code}/retention."""

from __future__ import annotations

from litestar import Controller, get, put
from litestar.datastructures import State
from litestar.params import JSONBody

from hub.errors import error_responses
from hub.oplog import service as oplog
from hub.retention import service
from hub.retention.schemas import RetentionSetting, RetentionView
from tenants import service as tenants
from tenants.auth import require
from tenants.controllers import AuthedRequest, Code, Conn
from tenants.scopes import Scope


class RetentionController(Controller):
    path = "/v1/tenants/{code:str}/retention"
    tags = ["retention"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get(
        "/",
        guards=[require(Scope.TENANTS_READ)],
        responses=error_responses(404, 422),
        summary="How long a tenant's messages keep their phones and bodies, and why",
    )
    async def get_retention(
        self, request: AuthedRequest, conn: Conn, state: State, code: Code
    ) -> RetentionView:
        tenant = await tenants.get_visible(conn, request.user, code)
        return await service.period_of(conn, tenant, state.settings.retention)

    @put(
        "/",
        guards=[require(Scope.TENANTS_WRITE)],
        responses=error_responses(404, 413, 422),
        summary="Set a tenant's own, shorter period (the tenant itself or a tenant above it)",
    )
    async def set_retention(
        self,
        request: AuthedRequest,
        conn: Conn,
        state: State,
        code: Code,
        data: JSONBody[RetentionSetting],
    ) -> RetentionView:
        tenant = await tenants.get_visible(conn, request.user, code)
        config = state.settings.retention
        before = await service.period_of(conn, tenant, config)
        await service.set_period(conn, tenant, data, request.user.actor, config)
        after = await service.period_of(conn, tenant, config)
        await oplog.record(
            conn, request.user, "retention.set", tenant_id=tenant.id, before=before, after=after
        )
        return after
