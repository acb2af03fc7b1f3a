"""The request limiter (middleware) and the operator's route for a tenant's rate limits.

What a request costs, in units taken from its key's and its tenant's buckets:
- a read (GET) 1; any other write 2;
- a send (POST /v1/messages) 5, a roster import 20, a statement export 5: they cost the hub more;
- and 1 more per 64 KiB of declared body (a million-recipient send, ~14 MB, costs 5 + 213),
  never more than a full bucket, so any legal request can get through once the bucket is full.

The limiter counts every route that takes an API key: not gateway callbacks (a gateway's own
secret), health, metrics or the API docs, which the app leaves out of the key middleware and of
this one alike. The console's writes (POST) by a signed-in person are charged the same way to
that person's bucket (the key's shape) and the tenant's, by the console's own sign-in check
(`charge`): its roster uploads cost as the API's imports do (50 parallel 20 MB previews by one
person once took a process from 1.1 to 3.6 GB and another county's request to 27 s).
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
    ("POST", "/dashboard/contacts/import"): 20,
    ("POST", "/dashboard/contacts/import/confirm"): 20,
    ("POST", "/dashboard/compose/roster"): 20,
    ("POST", "/dashboard/compose/send"): 5,
}
BODY_UNIT = 64 * 1024
# A tenant code in the path; anything else (NUL included) is a 422 before any query.


def cost_of(method: str, route: str, content_length: str | None) -> int:
    """Units a request costs (before the cap at a full bucket)."""
    base = COSTS.get((method, route), 1 if method in READS else 2)
    digits = content_length or ""
    body = int(digits) if digits.isascii() and digits.isdigit() else 0
    return base + body // BODY_UNIT


async def charge(scope: Scope, who: Principal) -> Decision:
    """Take what the request costs from its caller's and its tenant's buckets; RateLimited
    (nothing taken) when either is short."""
    state: State = scope["litestar_app"].state
    limiter: Limiter = state.limiter
    length = Headers.from_scope(scope).get("content-length")
    method = str(scope.get("method", "GET"))
    cost = cost_of(method, str(scope.get("path_template", "")), length)
    decision = await limiter.check(state.db, state.redis, who, cost)
    if not decision.allowed:
        raise _refusal(decision, who)
    return decision


def _refusal(decision: Decision, who: Principal) -> RateLimited:
    wait = int(decision.headers()["Retry-After"])
    rate, burst = decision.limit.rate, decision.limit.burst
    if who.login is not None:  # a person in the console reads it
        whose = "您的账号" if decision.bucket == "key" else "本单位"
        detail = (
            f"操作过于频繁：{whose}每秒可用 {rate:g} 个单位，最多累积 {burst:g} 个；"
            f"请 {wait} 秒后再试"
        )
    else:
        whose = "this API key" if decision.bucket == "key" else "this tenant's keys together"
        detail = (
            f"too many requests for {whose}: {rate:g} units a second, bursts of {burst:g}; "
            f"retry in {wait} s"
        )
    return RateLimited(detail, headers=decision.headers(), limit=decision.bucket, retry_after=wait)


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
        decision = await charge(scope, who)
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
