"""The request limiter (middleware) and the operator's route for a tenant's rate limits.

The limiter charges every route that takes an API key what hub.limits.service.cost_of says: not
gateway callbacks (a gateway's own secret), health, metrics, the API docs or the dashboard,
which the app leaves out of the key middleware and of this one alike (the dashboard's sign-in
check charges its heavy writes itself).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from litestar import Controller, delete, get, put
from litestar.datastructures import Headers, State
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.params import JSONBody
from litestar.status_codes import HTTP_204_NO_CONTENT
from litestar.types import ASGIApp, Receive, Scope, Send

from hub.errors import error_responses
from hub.limits import service
from hub.limits.schemas import RateLimitsSetting, RateLimitsView
from hub.limits.service import Limiter
from hub.oplog import service as oplog
from tenants import service as tenants
from tenants.auth import require
from tenants.controllers import AuthedRequest, Code, Conn
from tenants.scopes import Scope as KeyScope
from tenants.service import Principal


class RateLimitMiddleware(ASGIMiddleware):
    """Runs after the key middleware: charges the calling key, tenant and division, or answers
    429."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, exclude: Sequence[str]) -> None:
        # By the request's path, as the key middleware's `exclude` is.
        skip = re.compile("|".join(exclude))
        self.should_bypass_for_scope = lambda scope: bool(skip.search(scope["path"]))

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        who = scope.get("user")
        if not isinstance(who, Principal):  # OPTIONS (no key needed) and excluded routes
            await next_app(scope, receive, send)
            return
        state: State = scope["litestar_app"].state
        limiter: Limiter = state.limiter
        method, route = str(scope.get("method", "GET")), str(scope.get("path_template", ""))
        biggest = scope["route_handler"].resolve_request_max_body_size()  # type: ignore[union-attr]
        length = service.body_length(Headers.from_scope(scope), biggest)
        decision = await limiter.charge(state.db, state.redis, who, method, route, length)
        extra = [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]

        async def send_with_headers(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)  # type: ignore[arg-type]

        await next_app(scope, receive, send_with_headers)  # type: ignore[arg-type]


class RateLimitController(Controller):
    path = "/v1/tenants/{code:str}/rate-limits"
    tags = ["limits"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get(
        "/",
        guards=[require(KeyScope.TENANTS_READ)],
        responses=error_responses(404, 422),
        summary="The request-rate limits in force for a tenant and its keys",
    )
    async def get_limits(
        self, request: AuthedRequest, conn: Conn, state: State, code: Code
    ) -> RateLimitsView:
        tenant = await tenants.get_visible(conn, request.user, code)
        return await service.limits_of(conn, tenant, state.settings.limits)

    @put(
        "/",
        guards=[require(KeyScope.TENANTS_WRITE)],
        responses=error_responses(404, 413, 422),
        summary="Override a tenant's request-rate limits (the hub operator only)",
    )
    async def set_limits(
        self,
        request: AuthedRequest,
        conn: Conn,
        state: State,
        code: Code,
        data: JSONBody[RateLimitsSetting],
    ) -> RateLimitsView:
        service.require_operator(request.user)
        tenant = await tenants.get_visible(conn, request.user, code)
        actor = request.user.actor
        before = await service.limits_of(conn, tenant, state.settings.limits)
        view = await service.set_limits(conn, tenant, data, actor, state.settings.limits)
        await oplog.record(
            conn, request.user, "limits.set", tenant_id=tenant.id, before=before, after=view
        )
        state.limiter.forget_overrides()
        return view

    @delete(
        "/",
        guards=[require(KeyScope.TENANTS_WRITE)],
        responses=error_responses(404, 422),
        status_code=HTTP_204_NO_CONTENT,
        summary="Drop a tenant's override: the hub's defaults hold again (the operator only)",
    )
    async def clear_limits(
        self, request: AuthedRequest, conn: Conn, state: State, code: Code
    ) -> None:
        service.require_operator(request.user)
        tenant = await tenants.get_visible(conn, request.user, code)
        before = await service.limits_of(conn, tenant, state.settings.limits)
        await service.clear_limits(conn, tenant)
        after = await service.limits_of(conn, tenant, state.settings.limits)
        await oplog.record(
            conn, request.user, "limits.clear", tenant_id=tenant.id, before=before, after=after
        )
        state.limiter.forget_overrides()
