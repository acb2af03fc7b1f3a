"""The request limiter (middleware) and the operator's route for a tenant's rate limits.

What a request costs, in units taken from its key's and its tenant's buckets:
- a read (GET) 1; any other write 2;
- a send (POST /v1/messages) 5, a roster import 20, a statement export 5: they cost the hub more;
- and 1 more per 64 KiB of declared body (a million-recipient send, ~14 MB, costs 5 + 213),
  never more than a full bucket, so any legal request can get through once the bucket is full.

The limiter counts every route that takes an API key: not gateway callbacks (a gateway's own
secret), health, metrics, the API docs or the dashboard (sessions of its own), which the app
leaves out of the key middleware and of this one alike.
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

from hub.errors import RateLimited, error_responses
from hub.limits import service
from hub.limits.schemas import RateLimitsSetting, RateLimitsView
from hub.limits.service import Decision, Limiter
from hub.oplog import service as oplog
from tenants import service as tenants
from tenants.auth import READS, require
from tenants.controllers import AuthedRequest, Code, Conn
from tenants.scopes import Scope as KeyScope
from tenants.service import Principal

# Routes that cost more than a plain read or write, by method and route template.
COSTS: dict[tuple[str, str], int] = {
    ("POST", "/v1/messages"): 5,
    ("POST", "/v1/contacts/import"): 20,
    ("GET", "/v1/billing/{period}/statement.csv"): 5,
    ("GET", "/v1/billing/{period}/statement.xlsx"): 5,
}
BODY_UNIT = 64 * 1024
# A tenant code in the path; anything else (NUL included) is a 422 before any query.


def cost_of(method: str, route: str, content_length: str | None) -> int:
    """Units a request costs (before the cap at a full bucket)."""
    base = COSTS.get((method, route), 1 if method in READS else 2)
    digits = content_length or ""
    body = int(digits) if digits.isascii() and digits.isdigit() else 0
    return base + body // BODY_UNIT


def _refusal(decision: Decision) -> RateLimited:
    who = "this API key" if decision.bucket == "key" else "this tenant's keys together"
    wait = int(decision.headers()["Retry-After"])
    return RateLimited(
        f"too many requests for {who}: {decision.limit.rate:g} units a second, bursts of "
        f"{decision.limit.burst:g}; retry in {wait} s",
        headers=decision.headers(),
        limit=decision.bucket,
        retry_after=wait,
    )


class RateLimitMiddleware(ASGIMiddleware):
    """Runs after the key middleware: charges the calling key and tenant, or answers 429."""

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
        length = Headers.from_scope(scope).get("content-length")
        method = str(scope.get("method", "GET"))
        cost = cost_of(method, str(scope.get("path_template", "")), length)
        decision = await limiter.check(state.db, state.redis, who, cost)
        if not decision.allowed:
            raise _refusal(decision)
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
